"""The thalamus prior: probability maps per side, and what is derived from them (pure).

An atlas's probabilistic maps come as one 4D image (one volume per
structure, in percent or in [0, 1]); :func:`prior_sides` takes the left and
right thalamus out as 3D float32 maps in [0, 1]. After a warp (linear
interpolation stays within the range up to rounding) :func:`clip_probability`
puts a map back in [0, 1]; :func:`prior_mask` turns the two maps into a
binary thalamus mask at a probability threshold.
"""

from __future__ import annotations

from collections.abc import Mapping

import nibabel as nib
import numpy as np

from thalamus_bidsapp.image.nifti import float32_like

#: Probability at or above which a voxel of the prior counts as thalamus.
DEFAULT_PRIOR_THRESHOLD = 0.5


def _data(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    return np.asarray(img.dataobj, dtype=np.float32)


def prior_sides(probseg: nib.spatialimages.SpatialImage, volumes: Mapping[str, int]) -> dict[str, nib.Nifti1Image]:
    """The 3D probability map of each side (``{"L": ..., "R": ...}``) from a 4D atlas, float32 in [0, 1].

    Parameters
    ----------
    probseg
        4D probabilistic atlas, one structure per volume, in percent (0..100)
        or as fractions (0..1): percent is recognised by a maximum above 1.
    volumes
        Side -> index of its volume (0-based).

    Raises
    ------
    ValueError
        When the atlas is not 4D or lacks a volume, or a side's map is empty.
    """
    if probseg.ndim != 4:
        raise ValueError(f"the prior atlas must be 4D (one volume per structure), not shape {probseg.shape}")
    header = probseg.header.copy()
    header.set_data_shape(probseg.shape[:3])
    reference = nib.Nifti1Image(np.zeros(probseg.shape[:3], np.float32), probseg.affine, header)
    sides = {}
    for side, index in volumes.items():
        if not 0 <= index < probseg.shape[3]:
            raise ValueError(f"the prior atlas has {probseg.shape[3]} volumes; side {side} needs volume {index}")
        data = np.asarray(probseg.dataobj[..., index], dtype=np.float32)
        if data.max() > 1.0:
            data = data / 100.0
        if not np.any(data > 0):
            raise ValueError(f"the prior atlas's volume {index} (side {side}) is empty")
        sides[side] = float32_like(np.clip(data, 0.0, 1.0), reference)
    return sides


def clip_probability(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """The map with values outside [0, 1] (interpolation overshoot, NaN) set to the nearest bound, float32."""
    data = np.nan_to_num(_data(img), nan=0.0, posinf=1.0, neginf=0.0)
    return float32_like(np.clip(data, 0.0, 1.0), img)


def prior_thalamus(left: np.ndarray, right: np.ndarray, threshold: float = DEFAULT_PRIOR_THRESHOLD) -> np.ndarray:
    """Boolean thalamus of the prior: voxels where either side's probability (arrays of one shape) is >= ``threshold``."""
    return (np.asanyarray(left) >= threshold) | (np.asanyarray(right) >= threshold)


def prior_mask(
    left: nib.spatialimages.SpatialImage,
    right: nib.spatialimages.SpatialImage,
    threshold: float = DEFAULT_PRIOR_THRESHOLD,
) -> nib.Nifti1Image:
    """A binary (uint8 0/1) thalamus mask: voxels where either side's probability is >= ``threshold``.

    Parameters
    ----------
    left, right
        The prior's probability maps on one grid (e.g. the published
        ``hemi-L``/``hemi-R`` ``desc-prior_probseg`` maps on the T1w grid).
    threshold
        Probability in (0, 1].

    Raises
    ------
    ValueError
        When the threshold is outside (0, 1] or the grids differ.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"prior threshold must be in (0, 1], not {threshold}")
    if left.shape[:3] != right.shape[:3] or not np.allclose(left.affine, right.affine, atol=1e-4):
        raise ValueError("the left and right prior maps are not on the same grid")
    mask = prior_thalamus(_data(left), _data(right), threshold)
    out = nib.Nifti1Image(mask.astype(np.uint8), left.affine, left.header.copy())
    out.set_data_dtype(np.uint8)
    out.header["scl_slope"], out.header["scl_inter"] = np.nan, np.nan
    return out


def binarise(img: nib.spatialimages.SpatialImage, threshold: float = 0.5) -> nib.Nifti1Image:
    """A mask resampled with linear interpolation, back to uint8 0/1 at ``threshold``.

    The spatial units are millimetres (the affine's), whatever the resampling
    reference said: a TemplateFlow image may leave them unknown.
    """
    out = nib.Nifti1Image((_data(img) >= threshold).astype(np.uint8), img.affine, img.header.copy())
    out.set_data_dtype(np.uint8)
    out.header["scl_slope"], out.header["scl_inter"] = np.nan, np.nan
    out.header.set_xyzt_units("mm", out.header.get_xyzt_units()[1])
    return out
