"""Lesion load: how much lesion a session has, and how much lies in and around a thalamus mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from thalamus_bidsapp.image.geometry import voxel_volume_mm3
from thalamus_bidsapp.image.masks import MM3_PER_ML

#: Distance (mm) from a thalamus mask within which lesion voxels count as near it.
NEAR_MM = 3.0


def lesion_volume_ml(lesion: np.ndarray, affine: np.ndarray) -> float:
    """Total lesion volume in mL: voxels of the boolean ``lesion`` (X, Y, Z) x |det| of ``affine``'s 3x3 part."""
    return float(np.count_nonzero(lesion)) * voxel_volume_mm3(affine) / MM3_PER_ML


def fraction_outside(lesion: np.ndarray, brain: np.ndarray) -> float | None:
    """Fraction of the lesion voxels outside the brain mask (same grid, shape (X, Y, Z)); None without lesions.

    Lesions lie in the brain: a large fraction outside it means a mask on the
    wrong grid or from another image.
    """
    lesion = np.asarray(lesion, dtype=bool)
    if lesion.shape != np.shape(brain):
        raise ValueError(f"lesion mask {lesion.shape} and brain mask {np.shape(brain)} are not on the same grid")
    total = int(np.count_nonzero(lesion))
    if total == 0:
        return None
    return int(np.count_nonzero(lesion & ~np.asarray(brain, dtype=bool))) / total


def lesion_in_and_near(lesion: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                       *, near_mm: float = NEAR_MM) -> tuple[float, float]:
    """Lesion volume (mL) inside ``mask``, and outside it within ``near_mm`` mm of it.

    ``lesion`` and ``mask``: boolean, shape (X, Y, Z), on the grid of
    ``affine`` (4, 4). The two volumes do not overlap: a lesion voxel counts
    as near when its centre lies at most ``near_mm`` from the nearest mask
    voxel centre (Euclidean, in mm, voxel sizes from the affine's columns).
    """
    lesion = np.asarray(lesion, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    voxel_ml = voxel_volume_mm3(affine) / MM3_PER_ML
    inside = float(np.count_nonzero(lesion & mask)) * voxel_ml
    if not mask.any() or not lesion.any():
        return inside, 0.0
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    margin = [int(np.ceil(near_mm / z)) + 1 for z in zooms]
    box = tuple(slice(max(s.start - m, 0), min(s.stop + m, n))
                for s, m, n in zip(ndimage.find_objects(mask.astype(np.uint8))[0], margin, mask.shape))
    distance = ndimage.distance_transform_edt(~mask[box], sampling=zooms)
    near = float(np.count_nonzero(lesion[box] & ~mask[box] & (distance <= near_mm))) * voxel_ml
    return inside, near
