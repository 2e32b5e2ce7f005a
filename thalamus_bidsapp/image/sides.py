"""Left and right thalamus: a side label map (0 background, 1 left, 2 right) beside each binary mask.

Every method's bilateral mask stays as it is; its sides are a label image on
the same grid whose non-zero voxels are exactly the mask's. Sides come from
the method's own left/right labels (:func:`sides_from_labels`), or, for a
mask without sides of its own, from the nearer of two side seeds
(:func:`split_by_nearest`: MeshNet's 18-class mask split by the 104-class
model's left and right thalamus, MindGlide's masks split by the envelope's
sides). Left is the subject's left in world (RAS+) coordinates whatever the
voxel order: labels already name the anatomical side, and
:func:`world_sides_agree` checks that the left part lies at smaller world x.
"""

from __future__ import annotations

from collections.abc import Iterable

import nibabel as nib
import numpy as np
from scipy import ndimage

from thalamus_bidsapp.image.masks import integer_labels

BACKGROUND, LEFT, RIGHT = 0, 1, 2
#: The hemispheres of the volumes table, in its row order.
HEMISPHERES = ("bilateral", "left", "right")
#: The lookup table of a side label map (BIDS ``dseg.tsv``).
LOOKUP = ((BACKGROUND, "background", "BG"), (LEFT, "Left-Thalamus", "L"), (RIGHT, "Right-Thalamus", "R"))


def sides_from_labels(labels: np.ndarray, left: Iterable[int], right: Iterable[int]) -> np.ndarray:
    """uint8 side map of a label array: 1 where the label is one of ``left``, 2 where one of ``right``."""
    left, right = np.asarray(list(left)), np.asarray(list(right))
    overlap = np.intersect1d(left, right)
    if overlap.size:
        raise ValueError(f"labels {overlap.tolist()} are given as both left and right")
    data = integer_labels(labels)
    out = np.zeros(data.shape, dtype=np.uint8)
    out[np.isin(data, left)] = LEFT
    out[np.isin(data, right)] = RIGHT
    return out


def split_by_nearest(
    mask: np.ndarray,
    left_seed: np.ndarray,
    right_seed: np.ndarray,
    *,
    zooms: Iterable[float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
) -> np.ndarray:
    """Give each voxel of ``mask`` the side of the nearer seed (Euclidean distance in mm).

    Parameters
    ----------
    mask
        Binary array (the bilateral mask to split).
    left_seed, right_seed
        Binary arrays on the same grid marking voxels known to be left or right
        (they need not lie inside ``mask``; where both mark a voxel, the
        distance tie goes to the left).
    zooms
        Voxel size in mm, for the distances.
    affine
        The grid's voxel-to-world matrix, used only when a seed is empty: then
        the mask is split at its median world x (left: smaller x, RAS+).

    Returns
    -------
    numpy.ndarray
        uint8, 0 outside ``mask``, 1 left, 2 right.
    """
    inside = np.asanyarray(mask) > 0
    left_seed, right_seed = np.asanyarray(left_seed) > 0, np.asanyarray(right_seed) > 0
    out = np.zeros(inside.shape, dtype=np.uint8)
    if not inside.any():
        return out
    if not left_seed.any() or not right_seed.any():
        if affine is None:
            raise ValueError("a side seed is empty and no affine was given to split by world x")
        return split_by_world_x(inside, affine)
    # Distances only inside the bounding box of everything involved: the seeds
    # and the mask are small next to the image.
    box = _bounding_box(inside | left_seed | right_seed)
    sampling = tuple(float(z) for z in zooms)[: inside.ndim]
    to_left = ndimage.distance_transform_edt(~left_seed[box], sampling=sampling)
    to_right = ndimage.distance_transform_edt(~right_seed[box], sampling=sampling)
    sub = np.where(to_left <= to_right, LEFT, RIGHT).astype(np.uint8)
    sub[~inside[box]] = BACKGROUND
    out[box] = sub
    return out


def split_by_world_x(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Split a binary mask at its median world x: smaller x is left (RAS+)."""
    inside = np.asanyarray(mask) > 0
    out = np.zeros(inside.shape, dtype=np.uint8)
    voxels = np.argwhere(inside)
    if not len(voxels):
        return out
    x = voxels @ np.asarray(affine)[0, :3] + np.asarray(affine)[0, 3]
    out[tuple(voxels.T)] = np.where(x < np.median(x), LEFT, RIGHT)
    return out


def sides_within(mask: np.ndarray, sides: np.ndarray, affine: np.ndarray, zooms: Iterable[float]) -> np.ndarray:
    """The sides of ``mask`` taken from another side map: its side where it has one, else the nearer side."""
    return split_by_nearest(mask, np.asanyarray(sides) == LEFT, np.asanyarray(sides) == RIGHT,
                            zooms=zooms, affine=affine)


def check_sides_match(mask: np.ndarray, sides: np.ndarray) -> None:
    """Raise ValueError unless the side map's non-zero voxels are exactly the mask's."""
    inside, labelled = np.asanyarray(mask) > 0, np.asanyarray(sides) > 0
    if inside.shape != labelled.shape:
        raise ValueError(f"side map shape {labelled.shape} differs from the mask's {inside.shape}")
    differ = int(np.count_nonzero(inside != labelled))
    if differ:
        raise ValueError(f"the side map and the bilateral mask differ in {differ} voxels")


def world_sides_agree(sides: np.ndarray, affine: np.ndarray) -> bool | None:
    """Whether the left part's centre lies at smaller world x than the right part's (None: a side is empty)."""
    sides = np.asanyarray(sides)
    centres = []
    for side in (LEFT, RIGHT):
        voxels = np.argwhere(sides == side)
        if not len(voxels):
            return None
        centres.append(float(voxels.mean(axis=0) @ np.asarray(affine)[0, :3] + np.asarray(affine)[0, 3]))
    return centres[0] < centres[1]


def sides_image(sides: np.ndarray, reference: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """A uint8 side map with the grid (affine, qform/sform codes, units) of ``reference`` (usually the mask)."""
    from thalamus_bidsapp.image.ensembles import mask_like

    grid = mask_like(np.asarray(sides) > 0, reference)  # checks the shape, copies the grid codes
    out = nib.Nifti1Image(np.asarray(sides, dtype=np.uint8), grid.affine, grid.header)
    out.set_data_dtype(np.uint8)
    return out


def asymmetry_index(left: float, right: float) -> float:
    """(L - R) / ((L + R) / 2); NaN when both are 0."""
    total = (left + right) / 2.0
    return float((left - right) / total) if total else float("nan")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)
