"""R1 intensity scaling before segmentation (Ibrahim et al. 2026, section 2.5.2).

Inside the T1w brain mask the registered R1 map is clipped at its 99th
percentile and rescaled linearly to 0..1000; voxels outside the mask are 0.
The map is monotonic (rank-preserving below the clip point) and involves no
histogram matching.
"""

from __future__ import annotations

import logging
import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.nifti import float32_like
from thalamus_bidsapp.image.resample import same_grid

LOGGER = logging.getLogger(__name__)

#: Clip point, percentile of the in-mask R1 values.
CLIP_PERCENTILE = 99.0
#: Top of the output range (arbitrary units).
SCALED_MAX = 1000.0


def scale_r1(
    r1: np.ndarray,
    mask: np.ndarray,
    *,
    percentile: float = CLIP_PERCENTILE,
    out_max: float = SCALED_MAX,
) -> np.ndarray:
    """Clip R1 at a percentile inside the mask and rescale linearly to ``0..out_max``.

    With ``lo`` the minimum and ``hi`` the ``percentile``-th percentile
    (``numpy.percentile``, linear interpolation) of the finite R1 values inside
    the mask, every in-mask voxel becomes
    ``out_max * (min(max(r1, lo), hi) - lo) / (hi - lo)``, so the in-mask range
    is exactly ``[0, out_max]``: the minimum maps to 0 and every value at or
    above the percentile maps to ``out_max``. Voxels outside the mask, and
    non-finite voxels, are 0.

    Parameters
    ----------
    r1
        R1 map on the T1w grid (any unit, e.g. s^-1), shape (X, Y, Z).
    mask
        T1w brain mask, same shape; nonzero = inside.
    percentile
        Clip percentile, 0 < percentile <= 100 (default 99).
    out_max
        Value given to the clip point (default 1000).

    Returns
    -------
    numpy.ndarray, shape (X, Y, Z), float32
        Scaled map, in ``[0, out_max]``.

    Raises
    ------
    ValueError
        If the shapes differ, the percentile is out of range, the mask holds
        no finite R1 voxel, or R1 is constant inside the mask.
    """
    r1 = np.asarray(r1)
    mask = np.asarray(mask)
    if r1.shape != mask.shape:
        raise ValueError(f"R1 shape {r1.shape} differs from mask shape {mask.shape}")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    values = r1.astype(np.float64)
    inside = (mask != 0) & np.isfinite(values)
    if not inside.any():
        raise ValueError("the brain mask holds no finite R1 voxel")
    lo = float(values[inside].min())
    hi = float(np.percentile(values[inside], percentile))
    if not hi > lo:
        raise ValueError(f"R1 is constant inside the mask up to the {percentile}th percentile ({lo})")
    LOGGER.debug("R1 scaling: min %.6g -> 0, p%g %.6g -> %g", lo, percentile, hi, out_max)
    out = np.zeros(r1.shape, dtype=np.float32)
    out[inside] = ((np.clip(values[inside], lo, hi) - lo) / (hi - lo) * out_max).astype(np.float32)
    return out


def scale_r1_image(
    r1_img: nib.spatialimages.SpatialImage,
    mask_img: nib.spatialimages.SpatialImage,
    *,
    percentile: float = CLIP_PERCENTILE,
    out_max: float = SCALED_MAX,
    names: tuple[str, str] = ("R1 map", "brain mask"),
) -> nib.Nifti1Image:
    """:func:`scale_r1` on images: the scaled R1 map (float32, the R1 grid).

    Parameters
    ----------
    r1_img
        Registered R1 map on the T1w grid.
    mask_img
        T1w brain mask; must share the R1 grid (shape and affine to 1e-3 mm).
    percentile, out_max
        As in :func:`scale_r1`.
    names
        How the error messages name the two images (e.g. their files).

    Raises
    ------
    ThalamusError
        (exit code 65) if the grids differ or the R1 map cannot be scaled.
    """
    if not same_grid(r1_img, mask_img):
        raise ThalamusError(
            f"{names[0]} is not on the grid of the {names[1]}: shape {r1_img.shape} vs {mask_img.shape}",
            exit_code=EXIT_DATAERR,
        )
    data = np.asarray(r1_img.dataobj, dtype=np.float32).reshape(r1_img.shape[:3])
    mask = np.asarray(mask_img.dataobj).reshape(mask_img.shape[:3])
    try:
        scaled = scale_r1(data, mask, percentile=percentile, out_max=out_max)
    except ValueError as exc:
        raise ThalamusError(f"cannot scale {names[0]}: {exc}", exit_code=EXIT_DATAERR) from exc
    return float32_like(scaled, r1_img)
