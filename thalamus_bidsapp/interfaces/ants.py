"""ANTs rigid registration in process, through antspyx (no ANTs binaries needed).

The strategy of the paper (section 2.5.2): rigid registration, identity
initialisation, ANTs' default multi-resolution schedule, linear interpolation,
result resampled onto the exact grid of the fixed (T1w) image.

Coordinate conventions: ITK transforms act on physical points in LPS and map
*fixed* points to *moving* points. :func:`read_itk_affine_ras` turns a written
transform into a 4x4 RAS+ matrix with the same direction (T1w point -> moving
point), the convention used everywhere else in the package.

The number of threads follows ITK's ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``
environment variable, read once per process.
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

LOGGER = logging.getLogger(__name__)

#: Fixed seed for the random metric sampling (20 % of voxels), so reruns agree.
DEFAULT_RANDOM_SEED = 20250101

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class AntsRegistrationError(RuntimeError):
    """antsRegistration failed or produced no transform."""


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


def ants_rigid(
    moving: Path,
    fixed: Path,
    out_image: Path,
    out_transform: Path,
    *,
    random_seed: int | None = DEFAULT_RANDOM_SEED,
) -> AntsRigidResult:
    """Rigidly register ``moving`` to ``fixed`` with antsRegistration (antspyx, in process).

    Identity initialisation (no centre-of-mass alignment), antspyx's default
    ``Rigid`` schedule: Mattes MI (32 bins, 20 % regular-random sampling),
    shrink factors 6x4x2x1, smoothing sigmas 3x2x1x0 voxels, iterations
    2100x1200x1200x10, gradient step 0.25. The result is resampled onto the
    fixed grid with linear interpolation.

    Parameters
    ----------
    moving, fixed
        NIfTI images (3D). ``fixed`` is the T1w reference.
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
    fixed_img = ants.image_read(str(fixed), pixeltype="float")
    moving_img = ants.image_read(str(moving), pixeltype="float")
    LOGGER.info("ANTs rigid: %s -> %s", moving.name, fixed.name)

    workdir = Path(tempfile.mkdtemp(prefix="ants_rigid_"))
    # antspyx reads its seed from a module global; set it only around this call.
    previous_seed = ants.config._random_seed
    try:
        ants.config._random_seed = random_seed
        try:
            result = ants.registration(
                fixed=fixed_img,
                moving=moving_img,
                type_of_transform="Rigid",
                initial_transform="Identity",
                outprefix=str(workdir / "reg_"),
            )
        except RuntimeError as exc:
            raise AntsRegistrationError(f"ANTs rigid registration of {moving} to {fixed} failed: {exc}") from exc
        finally:
            ants.config._random_seed = previous_seed
        transforms = result["fwdtransforms"]
        if not transforms:
            raise AntsRegistrationError(f"ANTs rigid registration of {moving} to {fixed} wrote no transform")
        tx = ants.read_transform(transforms[0])
        with atomic_path(out_transform) as tmp:
            ants.write_transform(tx, str(tmp))

        # The warped array is in the fixed image's voxel order; reuse the fixed
        # NIfTI affine verbatim so the grid is bit-identical to the T1w's.
        fixed_nii = nib.load(str(fixed))
        warped = result["warpedmovout"].numpy().astype(np.float32)
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
