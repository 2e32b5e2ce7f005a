"""ANTs rigid registration in process, through antspyx (no ANTs binaries needed).

The strategy of the paper (section 2.5.2): rigid registration, identity
initialisation, Mattes mutual information, linear interpolation, result
resampled onto the exact grid of the fixed (T1w) image. The schedule is
:data:`RIGID_SCHEDULE`, not antspyx's default one (shrink 6x4x2x1, up to
2100x1200x1200x10 iterations, 20 % of all voxels sampled): that one took
about 4 minutes single-threaded for a 1 mm FLAIR, most of it spent on the
background and on iterations at 1 and 2 mm that no longer moved the
transform. Sampling only inside the T1w brain mask, capping the iterations
at 4 and 2 mm and taking three steps at 1 mm gives a better alignment in
seconds (on the two MS patients of the benchmarks the brain MI is higher than
the old schedule's: 0.6138 against 0.6096 and 0.6540 against 0.6528; the
planted misalignments of the tests recovered to well under 1 mm).

Coordinate conventions: ITK transforms act on physical points in LPS and map
*fixed* points to *moving* points. :func:`read_itk_affine_ras` turns a written
transform into a 4x4 RAS+ matrix with the same direction (T1w point -> moving
point), the convention used everywhere else in the package.

The number of threads follows ITK's ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``
environment variable, read once per process; a participant run sets it to 1
(:data:`thalamus_bidsapp.tools.threads.ITK_THREADS`), because multithreaded ITK
gives different transforms on identical runs even with the sampling seed fixed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from thalamus_bidsapp.bidsio.atomic import atomic_path
from thalamus_bidsapp.image.orthonormal import is_orthonormal, orthonormal_grid, resample_affine

LOGGER = logging.getLogger(__name__)

#: Fixed seed for the random metric sampling, so reruns agree.
DEFAULT_RANDOM_SEED = 20250101


@dataclass(frozen=True)
class RigidSchedule:
    """Multi-resolution schedule of :func:`ants_rigid` (levels coarse to fine).

    Attributes
    ----------
    shrink_factors
        Downsampling of the fixed image per level (voxels).
    smoothing_sigmas
        Gaussian smoothing per level (voxels of the full-resolution image).
    iterations
        Largest number of gradient steps per level; a level also stops when
        the metric settles (ANTs' convergence test, 1e-6 over 10 iterations).
    sampling_rate
        Fraction of the fixed image's voxels (inside the mask, when one is
        given) at which the metric is evaluated, on a jittered regular grid.
    bins
        Histogram bins of the Mattes mutual information.
    """

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2, 1, 0)
    iterations: tuple[int, ...] = (100, 20, 3)
    sampling_rate: float = 0.25
    bins: int = 32

    def __post_init__(self) -> None:
        if not len(self.shrink_factors) == len(self.smoothing_sigmas) == len(self.iterations):
            raise ValueError("a rigid schedule needs as many smoothing sigmas and iteration counts as shrink factors")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"sampling rate must be in (0, 1], got {self.sampling_rate}")


#: FLAIR and R1 map onto the T1w: 4 mm, 2 mm, then three steps at 1 mm. At 2 mm a rigid fit is already
#: sub-millimetre; the few full-resolution steps take the last fraction of a voxel that the brain MI sees
#: (without them it ended 0.4 % below the old schedule's on one patient), at a fraction of a full 1 mm level.
RIGID_SCHEDULE = RigidSchedule()


def rigid_registration_kwargs(schedule: RigidSchedule = RIGID_SCHEDULE, *, fixed_mask=None) -> dict:
    """The arguments of ``ants.registration`` (through :func:`seeded_registration`) for a rigid registration.

    ``fixed_mask`` (an ANTs image, nonzero = inside) limits the metric to the
    fixed image's brain at every level, so the samples fall on anatomy rather
    than on background that both images share.
    """
    kwargs = {
        "type_of_transform": "Rigid",
        "initial_transform": "Identity",
        "aff_metric": "mattes",
        "aff_sampling": schedule.bins,
        "aff_random_sampling_rate": schedule.sampling_rate,
        "aff_shrink_factors": tuple(schedule.shrink_factors),
        "aff_smoothing_sigmas": tuple(schedule.smoothing_sigmas),
        "aff_iterations": tuple(schedule.iterations),
    }
    if fixed_mask is not None:
        kwargs.update(mask=fixed_mask, mask_all_stages=True)
    return kwargs

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class AntsRegistrationError(RuntimeError):
    """antsRegistration failed or produced no transform."""


def itk_readable(path: Path, workdir: Path, *, order: int = 1) -> Path:
    """``path``, or a copy on an orthonormal grid of the same field of view when its affine is sheared.

    ITK refuses non-orthonormal direction cosines; transforms act on world
    coordinates, so a registration or resampling done on the copy holds for
    the original. ``order``: 1 (linear) for images, 0 for masks and labels.
    """
    img = nib.load(str(path))
    if is_orthonormal(img.affine):
        return Path(path)
    shape, affine = orthonormal_grid(img.shape, img.affine)
    fd, name = tempfile.mkstemp(prefix="orthonormal_", suffix=".nii.gz", dir=workdir)
    os.close(fd)
    nib.save(resample_affine(img, shape, affine, order=order), name)
    LOGGER.info("%s has a sheared grid: ANTs works on it resampled onto an orthonormal grid of the same "
                "field of view (%s voxels)", Path(path).name, "x".join(map(str, shape)))
    return Path(name)


def _onto(data: np.ndarray, grid: Path, target: nib.spatialimages.SpatialImage, order: int) -> np.ndarray:
    """``data`` (on the NIfTI grid of ``grid``) resampled onto ``target``'s grid; unchanged if they are one grid."""
    source = nib.load(str(grid))
    if source.shape[:3] == target.shape[:3] and np.allclose(source.affine, target.affine):
        return data
    return resample_affine(nib.Nifti1Image(data, source.affine), target.shape, target.affine, order=order).get_fdata(
        dtype=np.float32)


@dataclass(frozen=True)
class AntsRigidResult:
    """Outputs of :func:`ants_rigid`.

    Attributes
    ----------
    registered_image
        Moving image resampled onto the fixed grid (linear interpolation), float32.
    transform
        ITK text transform file (``#Insight Transform File V1.0``), fixed -> moving points.
    transform_format
        Always ``"itk"``.
    fixed_to_moving_ras
        The same transform as a 4x4 matrix on RAS+ mm coordinates, shape (4, 4).
    """

    registered_image: Path
    transform: Path
    transform_format: str
    fixed_to_moving_ras: np.ndarray


def ants_version() -> str | None:
    """Version string of the installed antspyx, or None."""
    try:
        from importlib.metadata import version

        return version("antspyx")
    except Exception:  # noqa: BLE001 - metadata lookups fail in many ways; the version is informative only
        return None


def seeded_registration(fixed, moving, *, what: str, random_seed: int | None, **kwargs) -> dict:
    """``ants.registration`` with antspyx's seed (a module global) set only around the call.

    ``what`` names the registration in the error: :class:`AntsRegistrationError`
    ``"ANTs <what> failed: ..."`` when antsRegistration fails.
    """
    import ants

    previous_seed = ants.config._random_seed
    ants.config._random_seed = random_seed
    try:
        return ants.registration(fixed=fixed, moving=moving, **kwargs)
    except RuntimeError as exc:
        raise AntsRegistrationError(f"ANTs {what} failed: {exc}") from exc
    finally:
        ants.config._random_seed = previous_seed


def ants_rigid(
    moving: Path,
    fixed: Path,
    out_image: Path,
    out_transform: Path,
    *,
    fixed_mask: Path | None = None,
    schedule: RigidSchedule = RIGID_SCHEDULE,
    random_seed: int | None = DEFAULT_RANDOM_SEED,
) -> AntsRigidResult:
    """Rigidly register ``moving`` to ``fixed`` with antsRegistration (antspyx, in process).

    Identity initialisation (no centre-of-mass alignment: a FLAIR or R1 map
    of the same session starts close, and a centre of mass moves with the
    field of view), Mattes MI, gradient step 0.25, the multi-resolution
    ``schedule`` (:data:`RIGID_SCHEDULE`: 32 bins, 25 % of the voxels inside
    ``fixed_mask`` sampled, shrink 4x2, smoothing 2x1 voxels, at most
    100x20 iterations). The result is resampled onto the full fixed grid
    with linear interpolation.

    Parameters
    ----------
    moving, fixed
        NIfTI images (3D). ``fixed`` is the T1w reference.
    fixed_mask
        Brain mask on the grid of ``fixed`` (nonzero = brain): the metric is
        sampled inside it, and the fixed image is cropped to its box (plus a
        margin) for the registration. None samples the whole fixed image.
    schedule
        The multi-resolution schedule.
    out_image
        Where to write the registered image (NIfTI, float32, fixed grid and
        exactly the fixed image's affine).
    out_transform
        Where to write the transform; ITK text format, so use a ``.txt`` name
        (a ``.mat`` name gives ITK's binary MATLAB format).
    random_seed
        Seed of the metric sampling; None lets ANTs choose (not reproducible).

    Returns
    -------
    AntsRigidResult

    Raises
    ------
    AntsRegistrationError
        If antsRegistration fails.
    """
    import ants

    moving, fixed = Path(moving), Path(fixed)
    LOGGER.info("ANTs rigid: %s -> %s", moving.name, fixed.name)

    workdir = Path(tempfile.mkdtemp(prefix="ants_rigid_"))
    try:
        fixed_itk = itk_readable(fixed, workdir)
        fixed_img = ants.image_read(str(fixed_itk), pixeltype="float")
        moving_img = ants.image_read(str(itk_readable(moving, workdir)), pixeltype="float")
        target, mask_img = fixed_img, None
        if fixed_mask is not None:
            mask_img = ants.image_read(str(itk_readable(fixed_mask, workdir, order=0)), pixeltype="float")
            target, mask_img = _crop_to_mask(fixed_img, mask_img)
        result = seeded_registration(target, moving_img, what=f"rigid registration of {moving} to {fixed}",
                                     random_seed=random_seed, outprefix=str(workdir / "reg_"),
                                     **rigid_registration_kwargs(schedule, fixed_mask=mask_img))
        transforms = result["fwdtransforms"]
        if not transforms:
            raise AntsRegistrationError(f"ANTs rigid registration of {moving} to {fixed} wrote no transform")
        tx = ants.read_transform(transforms[0])
        with atomic_path(out_transform) as tmp:
            ants.write_transform(tx, str(tmp))

        # The warped array is in the fixed image's voxel order; reuse the fixed
        # NIfTI affine verbatim so the grid is bit-identical to the T1w's.
        fixed_nii = nib.load(str(fixed))
        warped = result["warpedmovout"] if target is fixed_img else ants.apply_transforms(
            fixed=fixed_img, moving=moving_img, transformlist=transforms, interpolator="linear")
        warped = _onto(warped.numpy().astype(np.float32), fixed_itk, fixed_nii, 1)
        header = fixed_nii.header.copy()
        header.set_data_dtype(np.float32)
        header["scl_slope"], header["scl_inter"] = np.nan, np.nan
        out = nib.Nifti1Image(warped, fixed_nii.affine, header)
        with atomic_path(out_image) as tmp:
            nib.save(out, str(tmp))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    matrix = read_itk_affine_ras(out_transform)
    LOGGER.debug("ANTs rigid matrix (RAS, fixed->moving):\n%s", matrix)
    return AntsRigidResult(Path(out_image), Path(out_transform), "itk", matrix)


def _crop_to_mask(image, mask, margin_mm: float = 10.0):
    """``image`` and ``mask`` cropped to the mask's box widened by ``margin_mm``; both unchanged if it is empty.

    The pyramid of the fixed image (smoothing and shrinking at every level) is
    built over the whole image; around a brain the box is about half of a
    1 mm head volume. The margin keeps the smoothing near the brain's edge
    as it is on the whole image.
    """
    import ants

    inside = np.argwhere(mask.numpy() > 0)
    if inside.size == 0:
        return image, mask
    margin = np.ceil(margin_mm / np.asarray(image.spacing)).astype(int)
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, np.asarray(image.shape))
    return (ants.crop_indices(image, low.tolist(), high.tolist()),
            ants.crop_indices(mask, low.tolist(), high.tolist()))


def read_itk_affine_ras(path: Path | str) -> np.ndarray:
    """Read an ITK affine/rigid transform file as a RAS+ 4x4 matrix.

    Parameters
    ----------
    path
        ITK transform (text ``.txt``/``.tfm`` or binary ``.mat``) with 12
        parameters (3x3 matrix, translation) and 3 fixed parameters (centre).

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        Matrix mapping fixed-image world points (RAS+, mm) to moving-image
        world points, i.e. ``y = M @ [x, 1]``.
    """
    import ants

    tx = ants.read_transform(os.fspath(path))
    params = np.asarray(tx.parameters, dtype=float)
    center = np.asarray(tx.fixed_parameters, dtype=float)
    if params.size != 12 or center.size != 3:
        raise ValueError(f"{path}: not a 3D affine ITK transform ({params.size} parameters)")
    mat = params[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = mat
    lps[:3, 3] = params[9:] + center - mat @ center
    return _LPS_TO_RAS @ lps @ _LPS_TO_RAS


#: Registration to a template: antspyx's ``SyN`` (affine, then SyN), on the template's 2 mm grid.
#: "standard" keeps antspyx's schedules; "fast" (tests, previews) trims the iterations, same stages.
TEMPLATE_SCHEDULES = {
    "standard": {"aff_iterations": (2100, 1200, 1200, 10), "reg_iterations": (40, 20, 0)},
    "fast": {"aff_iterations": (200, 100, 0, 0), "reg_iterations": (20, 0, 0)},
}


@dataclass(frozen=True)
class AntsTemplateResult:
    """Outputs of :func:`ants_to_template`: ITK composite transforms (HDF5).

    ``forward`` maps the T1w into the template (use it to resample T1w images
    onto the template grid); ``inverse`` maps the template into the T1w.
    """

    forward: Path
    inverse: Path
    settings: dict


def ants_to_template(
    moving_brain: Path,
    template_brain: Path,
    out_forward: Path,
    out_inverse: Path,
    *,
    schedule: str = "standard",
    random_seed: int | None = DEFAULT_RANDOM_SEED,
) -> AntsTemplateResult:
    """Register a skull-stripped T1w to a template brain: affine + SyN (antspyx ``SyN``).

    The moving image is first resampled to the template's voxel size (2 mm),
    which halves the time without changing the result at that resolution;
    the initial transform aligns the centres of mass.

    Raises
    ------
    AntsRegistrationError
        If antsRegistration fails.
    """
    import ants

    if schedule not in TEMPLATE_SCHEDULES:
        raise ValueError(f"unknown template registration schedule {schedule!r}")
    LOGGER.info("ANTs affine + SyN (%s): %s -> %s", schedule, Path(moving_brain).name, Path(template_brain).name)
    workdir = Path(tempfile.mkdtemp(prefix="ants_template_"))
    try:
        fixed = ants.image_read(str(template_brain), pixeltype="float")
        moving = ants.image_read(str(itk_readable(moving_brain, workdir)), pixeltype="float")
        moving = ants.resample_image(moving, fixed.spacing, use_voxels=False, interp_type=0)
        result = seeded_registration(fixed, moving, what=f"registration of {moving_brain} to {template_brain}",
                                     random_seed=random_seed, type_of_transform="SyN",
                                     outprefix=str(workdir / "reg_"), write_composite_transform=True,
                                     **TEMPLATE_SCHEDULES[schedule])
        for written, out in ((result["fwdtransforms"], out_forward), (result["invtransforms"], out_inverse)):
            if not written or not Path(written).is_file():
                raise AntsRegistrationError(f"ANTs registration of {moving_brain} wrote no composite transform")
            with atomic_path(out) as tmp:
                shutil.copyfile(written, tmp)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {"Software": "antspyx", "Version": ants_version(), "TypeOfTransform": "SyN (affine + SyN)",
                "Schedule": schedule, **{k: list(v) for k, v in TEMPLATE_SCHEDULES[schedule].items()},
                "Metric": "mattes (affine), mattes (SyN)", "RandomSeed": random_seed}
    return AntsTemplateResult(Path(out_forward), Path(out_inverse), settings)


def ants_resample(
    moving: Path,
    reference: Path,
    transform: Path,
    *,
    interpolation: str = "linear",
    opposite_transform: Path | None = None,
) -> nib.Nifti1Image:
    """``moving`` resampled onto ``reference``'s grid through an ITK (composite) transform, in memory.

    The result is float32 with exactly the reference NIfTI's affine. With
    ``opposite_transform`` (the transform of the other direction, e.g. the
    forward one when ``transform`` is the inverse), only the box of the
    reference that the moving image's non-zero voxels map into (plus 4 voxels)
    is computed and the rest is 0: the same values, much faster for a small
    structure (the thalamus prior on a 1 mm T1w: 0.5 s instead of 5 s).
    """
    order = 1 if interpolation == "linear" else 0
    workdir = Path(tempfile.mkdtemp(prefix="ants_resample_"))
    try:
        reference_itk = itk_readable(reference, workdir, order=order)
        data = _resample_on(itk_readable(moving, workdir, order=order), reference_itk, transform, interpolation,
                            opposite_transform)
        reference_nii = nib.load(str(reference))
        data = _onto(data, reference_itk, reference_nii, order)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header = reference_nii.header.copy()
    header.set_data_dtype(np.float32)
    header["scl_slope"], header["scl_inter"] = np.nan, np.nan
    return nib.Nifti1Image(data.astype(np.float32), reference_nii.affine, header)


def _resample_on(moving: Path, reference: Path, transform: Path, interpolation: str,
                 opposite_transform: Path | None) -> np.ndarray:
    """The array of :func:`ants_resample` on ``reference``'s grid (both files readable by ITK)."""
    import ants

    fixed_img = ants.image_read(str(reference), pixeltype="float")
    moving_img = ants.image_read(str(moving), pixeltype="float")
    box = _support_box(moving_img, fixed_img, opposite_transform) if opposite_transform else None
    if box is None:
        data = ants.apply_transforms(fixed=fixed_img, moving=moving_img, transformlist=[str(transform)],
                                     interpolator=interpolation).numpy()
    else:
        low, high = box
        cropped = ants.crop_indices(fixed_img, low.tolist(), high.tolist())
        data = np.zeros(fixed_img.shape, np.float32)
        data[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = ants.apply_transforms(
            fixed=cropped, moving=moving_img, transformlist=[str(transform)], interpolator=interpolation).numpy()
    return np.asarray(data, dtype=np.float32)


def ants_apply_transform(
    moving: Path,
    reference: Path,
    transform: Path,
    out_file: Path,
    *,
    interpolation: str = "linear",
    opposite_transform: Path | None = None,
) -> Path:
    """:func:`ants_resample`, written to ``out_file`` (atomically); returns ``out_file``."""
    out = ants_resample(moving, reference, transform, interpolation=interpolation,
                        opposite_transform=opposite_transform)
    with atomic_path(out_file) as tmp:
        nib.save(out, str(tmp))
    return Path(out_file)


def _support_box(moving_img, fixed_img, opposite_transform: Path, margin: int = 4):
    """Voxel box (low, high) of ``fixed_img`` holding the mapped non-zero voxels of ``moving_img``; None if empty.

    ANTs maps *points* with a transform in the direction opposite to the one
    it resamples images with, so the points of the moving image go through
    ``opposite_transform``. Physical coordinates are ITK's (LPS).
    """
    import ants
    import pandas as pd

    support = np.argwhere(moving_img.numpy() > 0)
    if support.size == 0:
        return None
    direction = np.asarray(moving_img.direction)
    points = np.asarray(moving_img.origin) + (support * np.asarray(moving_img.spacing)) @ direction.T
    mapped = ants.apply_transforms_to_points(3, pd.DataFrame(points, columns=["x", "y", "z"]),
                                             [str(opposite_transform)]).to_numpy()
    fixed_direction = np.asarray(fixed_img.direction)
    index = (mapped - np.asarray(fixed_img.origin)) @ np.linalg.inv(fixed_direction.T) / np.asarray(fixed_img.spacing)
    shape = np.asarray(fixed_img.shape)
    low = np.clip(np.floor(index.min(axis=0)).astype(int) - margin, 0, shape)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int) + margin + 1, 0, shape)
    if np.any(high - low < 2):
        return None
    return low, high
