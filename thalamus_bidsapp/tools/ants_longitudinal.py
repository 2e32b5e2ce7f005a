"""Within-subject template and session-to-template deformations, with antspyx (in process).

The template is unbiased in the sense of FreeSurfer's ``mri_robust_template``
(Reuter et al. 2012): every session is rigidly registered to a reference,
the rigid transforms are averaged, and every session -- the reference too --
is resampled once, by the same interpolator, into the halfway space that
the average defines; the second pass registers each session to that first
template and repeats. No session is left un-interpolated, so none is
sharper than the others.

Each session's deformation to the template is a SyN registration (cross
correlation, ANTs' ``SyNOnly`` after the rigid step) restricted to a box
around the template's thalamus. Matrices are RAS+ 4x4, mapping *template*
points to *session* points (the direction ITK and ANTs resample with).

Threads follow ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (read once per
process); metric sampling is seeded, so reruns agree.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from thalamus_bidsapp.tools.ants import (
    DEFAULT_RANDOM_SEED,
    AntsRegistrationError,
    ants_version,
    read_itk_affine_ras,
    seeded_registration,
)

LOGGER = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Rigid registration of two sessions of one subject (same contrast): Mattes MI on copies at RIGID_SPACING_MM.
RIGID_SETTINGS = {"aff_metric": "mattes", "aff_iterations": (100, 50), "aff_shrink_factors": (2, 1),
                  "aff_smoothing_sigmas": (1, 0)}
#: Voxel size (mm) of the copies the rigid registrations run on: the SyN takes up what is left, locally.
RIGID_SPACING_MM = 2.0
#: Voxels (at RIGID_SPACING_MM) kept around a session's brain on those copies: more than a rescan moves it.
CONTENT_MARGIN_VOXELS = 4
#: SyN of a session to the template around the thalamus: CC radius 2 at the 4x and 2x levels only, a small
#: gradient step and a smoothing of the total field. A full-resolution level follows each session's noise and
#: interpolation (an offset of one session against the others); without it, volume moves across the boundary
#: between the left and right labels unless the step is small and the total field smoothed. Chosen on simulated
#: rescans of bert and ds002748 sub-01: figures in the README (Longitudinal mode).
SYN_SETTINGS = {"syn_metric": "CC", "syn_sampling": 2, "grad_step": 0.1, "flow_sigma": 3, "total_sigma": 1.5}
#: SyN iterations per level, coarsest first, at SYN_LEVELS_MM; finer levels of the grid get none.
SYN_ITERATIONS = (40, 20)
SYN_LEVELS_MM = (4.0, 2.0)
#: Margin (mm) of the SyN box around the template's thalamus.
BOX_MARGIN_MM = 18.0


@dataclass
class SubjectTemplate:
    """A within-subject template and how every session reaches it."""

    image: nib.Nifti1Image  # the mean of the sessions in template space (float32)
    to_session: list[np.ndarray]  # per session: RAS 4x4, template point -> session point
    resampled: list[nib.Nifti1Image]  # per session: the session resampled once onto the template grid
    reference: int  # index of the session whose grid the template takes
    settings: dict = field(default_factory=dict)


def to_ants(image: nib.Nifti1Image):
    """A nibabel image as an antspyx float image (same world geometry)."""
    import ants

    data = np.asarray(image.dataobj, dtype=np.float32)
    affine = image.affine
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = (_LPS[:3, :3] @ affine[:3, :3]) / zooms
    origin = (_LPS @ affine[:, 3])[:3]
    return ants.from_numpy(data, origin=tuple(float(v) for v in origin), spacing=tuple(float(v) for v in zooms),
                           direction=direction)


def ants_affine(img) -> np.ndarray:
    """Voxel-to-world 4x4 (LPS) of an antspyx image."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(img.direction) @ np.diag(img.spacing)
    matrix[:3, 3] = img.origin
    return matrix


def to_nibabel(img, like: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
    """An antspyx image as a float32 NIfTI (RAS affine); ``like``'s affine verbatim when the grid is its grid."""
    affine = _LPS @ ants_affine(img)
    if like is not None and like.shape[:3] == tuple(img.shape) and np.allclose(like.affine, affine, atol=1e-4):
        affine = like.affine
    out = nib.Nifti1Image(img.numpy().astype(np.float32), affine)
    out.header["scl_slope"], out.header["scl_inter"] = np.nan, np.nan
    return out


def rigid_matrix(fixed, moving, *, random_seed: int | None = DEFAULT_RANDOM_SEED) -> np.ndarray:
    """Rigid registration (antspyx images); RAS 4x4 mapping fixed points to moving points."""
    workdir = Path(tempfile.mkdtemp(prefix="ants_long_rigid_"))
    try:
        result = seeded_registration(fixed, moving, what="rigid registration between sessions",
                                     random_seed=random_seed, type_of_transform="Rigid",
                                     initial_transform="Identity", outprefix=str(workdir / "reg_"),
                                     **RIGID_SETTINGS)
        written = result["fwdtransforms"]
        if not written:
            raise AntsRegistrationError("ANTs rigid registration between sessions wrote no transform")
        return read_itk_affine_ras(written[0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ras_to_itk(matrix: np.ndarray):
    import ants

    lps = _LPS @ np.asarray(matrix, float) @ _LPS
    return ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=lps[:3, :3],
                                      translation=lps[:3, 3], center=(0.0, 0.0, 0.0))


def resample(moving, reference, matrix: np.ndarray, interpolation: str = "bspline"):
    """``moving`` on ``reference``'s grid through the RAS matrix (reference point -> moving point)."""
    import ants

    return ants.apply_ants_transform_to_image(_ras_to_itk(matrix), moving, reference, interpolation=interpolation)


def mean_rigid(matrices: list[np.ndarray]) -> np.ndarray:
    """The average of rigid transforms: the mean rotation (projected back onto rotations) and translation."""
    stack = np.asarray(matrices, float)
    u, _, vt = np.linalg.svd(stack[:, :3, :3].mean(axis=0))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    mean = np.eye(4)
    mean[:3, :3] = rotation
    mean[:3, 3] = stack[:, :3, 3].mean(axis=0)
    return mean


def _normalised(img):
    """Intensities divided by the mean of the brain (non-zero voxels), so sessions average fairly."""
    data = img.numpy()
    inside = data[data > 0]
    return img / float(inside.mean()) * 100.0 if inside.size else img


def build_template(sessions: list[nib.Nifti1Image], *, iterations: int = 2,
                   random_seed: int | None = DEFAULT_RANDOM_SEED) -> SubjectTemplate:
    """Unbiased rigid template of a subject's (brain-extracted) sessions.

    The grid is that of the session with the smallest voxels (the first on
    ties), in the average position of the sessions. Pass 1 registers every
    session to that session; each further pass registers every session to
    the previous template (intermediate templates are made at the rigid
    spacing, linearly: they are only registration targets). After each pass
    the average transform is divided out, so the template sits halfway
    between the sessions; only the last pass resamples the sessions at full
    resolution (cubic B-spline), once each.
    """
    if len(sessions) < 2:
        raise ValueError("a within-subject template needs two sessions or more")
    import ants

    images = [_normalised(to_ants(s)) for s in sessions]
    coarse = [_content_box(ants.resample_image(img, (RIGID_SPACING_MM,) * 3, use_voxels=False, interp_type=0))
              for img in images]
    reference = int(np.argmin([np.prod(s.header.get_zooms()[:3]) for s in sessions]))
    grid = images[reference]
    to_session = [np.eye(4) for _ in images]
    template = grid
    for iteration in range(iterations):
        final = iteration == iterations - 1
        fixed = coarse[reference] if iteration == 0 else template
        to_fixed = [np.eye(4) if (iteration == 0 and i == reference) else
                    rigid_matrix(fixed, img, random_seed=random_seed)
                    for i, img in enumerate(coarse)]
        centre = np.linalg.inv(mean_rigid(to_fixed))
        to_session = [m @ centre for m in to_fixed]
        if final:
            # The one resampling of each session that is measured: full resolution, cubic B-spline.
            resampled = [resample(img, grid, m) for img, m in zip(images, to_session)]
        else:
            # An intermediate template is only a registration target at the rigid spacing.
            resampled = [resample(img, coarse[reference], m, "linear") for img, m in zip(coarse, to_session)]
        template = _mean_image(resampled)
        LOGGER.info("within-subject template, pass %d of %d: %d sessions", iteration + 1, iterations, len(images))
    like = sessions[reference]
    settings = {"Software": "antspyx", "Version": ants_version(), "Passes": iterations,
                "Rigid": {**{k: list(v) if isinstance(v, tuple) else v for k, v in RIGID_SETTINGS.items()},
                          "SpacingMM": RIGID_SPACING_MM, "CroppedToBrainMarginVoxels": CONTENT_MARGIN_VOXELS},
                "Interpolation": "B-spline (order 3), once per session", "GridOfSession": reference,
                "RandomSeed": random_seed}
    return SubjectTemplate(to_nibabel(template, like), to_session,
                           [to_nibabel(r, like) for r in resampled], reference, settings)


def _content_box(img, margin: int = CONTENT_MARGIN_VOXELS):
    """``img`` cropped to its non-zero voxels plus ``margin`` (same world space): the brain, not the empty field.

    The sessions are brain-extracted, so most of a head-sized field is zero; the
    rigid registrations would sample it all (five times the voxels on a 256 mm field).
    """
    import ants

    data = img.numpy()
    inside = np.argwhere(data > 0)
    if inside.size == 0:
        return img
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, data.shape)
    return ants.crop_indices(img, [int(v) for v in low], [int(v) for v in high])


def _mean_image(images):
    """The voxelwise mean, clipped at 0 (B-spline overshoot at the brain's edge is not signal)."""
    total = images[0].clone()
    for img in images[1:]:
        total = total + img
    mean = total / float(len(images))
    return mean.new_image_like(np.maximum(mean.numpy(), 0.0))


def box_around(mask: np.ndarray, zooms, margin_mm: float = BOX_MARGIN_MM) -> tuple[slice, slice, slice]:
    """Voxel box holding every non-zero voxel of ``mask`` plus ``margin_mm``, clipped to the grid."""
    where = np.argwhere(mask > 0)
    if where.size == 0:
        raise ValueError("empty template mask: no box around the thalamus")
    margin = np.ceil(margin_mm / np.asarray(zooms[:3], float)).astype(int)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


@dataclass(frozen=True)
class SessionDeformation:
    """The SyN of one session to the template inside the box: its displacement field and where it is written."""

    displacement: np.ndarray  # (X, Y, Z, 3), LPS mm, on the box grid
    affine_lps: np.ndarray  # voxel -> LPS world of the box grid
    warp_file: Path | None


def leave_one_out(boxes: list[nib.Nifti1Image], index: int) -> nib.Nifti1Image:
    """The registration target of session ``index``: the mean of the other sessions' boxes (same grid).

    The template holds each session's own noise and interpolation at weight
    1/N; registered to it, a session is pulled towards the identity by that
    shared part (with two sessions, half of the template is the session
    itself), which shrinks the measured change. The mean of the others
    shares nothing with the session. Its shape is the mean of the others'
    shapes, so the map from the template to the session is (N - 1) / N of
    the map from this target (:func:`template_displacement`).
    """
    if len(boxes) < 2:
        raise ValueError("a leave-one-out target needs two sessions or more")
    others = [np.asarray(b.dataobj, dtype=np.float32) for i, b in enumerate(boxes) if i != index]
    return nib.Nifti1Image(np.mean(others, axis=0, dtype=np.float64).astype(np.float32), boxes[index].affine)


def template_displacement(displacement: np.ndarray, n_sessions: int) -> np.ndarray:
    """The template -> session displacement from the leave-one-out target -> session one: times (N - 1) / N.

    With shapes averaging linearly (small within-subject changes), the
    template is 1/N of the way from the others' mean to the session.
    """
    if n_sessions < 2:
        raise ValueError("a leave-one-out displacement needs two sessions or more")
    return np.asarray(displacement, dtype=np.float64) * ((n_sessions - 1) / n_sessions)


def syn_iterations(zooms) -> tuple[int, ...]:
    """antspyx ``reg_iterations`` for a grid of ``zooms`` (mm): SYN_ITERATIONS at about SYN_LEVELS_MM, none finer.

    antspyx halves the resolution once per level (shrink factors ..., 4, 2, 1), so the levels finer than the
    last of SYN_LEVELS_MM get 0 iterations: (40, 20, 0) on a 1 mm grid, (40, 20) on a 2 mm grid.
    """
    voxel = float(np.prod(np.asarray(zooms, float)[:3]) ** (1.0 / 3.0))
    finer = max(int(round(np.log2(SYN_LEVELS_MM[-1] / voxel))), 0)
    return SYN_ITERATIONS + (0,) * finer


def syn_to_template(template_box: nib.Nifti1Image, session_box: nib.Nifti1Image, *,
                    warp_out: Path | None = None,
                    random_seed: int | None = DEFAULT_RANDOM_SEED) -> SessionDeformation:
    """SyN (no affine stage) of a session box onto its target's box; target point -> session point.

    Both images are on the template grid already (the session resampled once
    by :func:`build_template`), so the deformation is the anatomical change
    plus registration noise, and its Jacobian determinant carries the volume.
    The target is the template or, as the longitudinal mode uses it, the
    mean of the other sessions (:func:`leave_one_out`).
    """
    import ants

    fixed, moving = to_ants(template_box), to_ants(session_box)
    workdir = Path(tempfile.mkdtemp(prefix="ants_long_syn_"))
    try:
        result = seeded_registration(fixed, moving, what="SyN of a session to its template",
                                     random_seed=random_seed, type_of_transform="SyNOnly",
                                     initial_transform="Identity", outprefix=str(workdir / "syn_"),
                                     reg_iterations=syn_iterations(template_box.header.get_zooms()),
                                     **SYN_SETTINGS)
        warps = [t for t in result["fwdtransforms"] if t.endswith((".nii.gz", ".nii"))]
        if not warps:
            raise AntsRegistrationError("ANTs SyN of a session to its template wrote no warp field")
        warp = ants.image_read(warps[0])
        if warp_out is not None:
            Path(warp_out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(warps[0], warp_out)
        return SessionDeformation(warp.numpy().astype(np.float64), ants_affine(warp), warp_out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def syn_settings() -> dict:
    """The SyN settings, for sidecars."""
    return {"Software": "antspyx", "Version": ants_version(), "TypeOfTransform": "SyNOnly",
            "Target": "leave-one-out: the mean of the other sessions (resampled once, like the session); the "
                      "displacement scaled by (N - 1) / N to the template",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in SYN_SETTINGS.items()},
            "IterationsPerLevel": list(SYN_ITERATIONS), "LevelsMM": list(SYN_LEVELS_MM),
            "BoxMarginMM": BOX_MARGIN_MM}
