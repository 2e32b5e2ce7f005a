"""Per-mask QC measurements on arrays: overlap, connected parts, centroids, side swaps.

Every function takes arrays on one grid (and its affine for distances in mm)
and returns a number; judging the number (pass, warn, fail) is
:mod:`thalamus_bidsapp.stats.qc`'s job. The thalamus prior is a pair of
probability maps (left, right) in [0, 1] on the mask's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a corner belong to the same part.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A and B| / (|A| + |B|); NaN when both are empty."""
    a, b = np.asanyarray(a) > 0, np.asanyarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else float("nan")


def median_dice(mask: np.ndarray, others: Sequence[np.ndarray]) -> float:
    """Median Dice of ``mask`` with each of ``others``; NaN without others."""
    values = [dice(mask, other) for other in others]
    values = [v for v in values if np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def component_count(mask: np.ndarray, min_fraction: float = 0.0) -> int:
    """Connected parts (26-connectivity) holding at least ``min_fraction`` of the mask's voxels.

    0 for an empty mask. A mask broken into pieces that are all smaller than
    ``min_fraction`` counts every piece (it is fragmented, not empty).
    """
    inside = np.asanyarray(mask) > 0
    total = int(inside.sum())
    if not total:
        return 0
    box = ndimage.find_objects(inside.astype(np.uint8))[0]  # label only the mask's bounding box: fast on big grids
    labels, count = ndimage.label(inside[box], structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel())[1:]
    large = int(np.count_nonzero(sizes >= min_fraction * total))
    return large if large else int(count)


def centroid_mm(weights: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """World (RAS+, mm) centre of mass of a mask or probability map; None when it is empty."""
    weights = np.clip(np.asanyarray(weights, dtype=np.float64), 0.0, None)
    total = float(weights.sum())
    if total <= 0:
        return None
    voxel = np.array(ndimage.center_of_mass(weights))
    return np.asarray(affine)[:3, :3] @ voxel + np.asarray(affine)[:3, 3]


def centroid_distance(mask: np.ndarray, prior: np.ndarray, affine: np.ndarray) -> float:
    """Distance in mm between the centre of ``mask`` and the probability-weighted centre of ``prior``."""
    a, b = centroid_mm(np.asanyarray(mask) > 0, affine), centroid_mm(prior, affine)
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(a - b))


def side_overlaps(left: np.ndarray, right: np.ndarray, prior_left: np.ndarray, prior_right: np.ndarray,
                  threshold: float = 0.5) -> dict[str, float]:
    """Fraction of each side of a mask inside each side of the prior (binarised at ``threshold``).

    Returns ``left_in_left``, ``left_in_right``, ``right_in_right`` and
    ``right_in_left``; NaN for an empty side.
    """
    prior = {"left": np.asanyarray(prior_left) >= threshold, "right": np.asanyarray(prior_right) >= threshold}
    out = {}
    for name, side in (("left", np.asanyarray(left) > 0), ("right", np.asanyarray(right) > 0)):
        n = int(side.sum())
        for other, region in prior.items():
            out[f"{name}_in_{other}"] = float(np.count_nonzero(side & region)) / n if n else float("nan")
    return out


def swapped_sides(overlaps: dict[str, float]) -> int:
    """How many sides of a mask overlap the opposite side of the prior more than their own (0, 1 or 2)."""
    swapped = 0
    for own, other in (("left", "right"), ("right", "left")):
        mine, theirs = overlaps[f"{own}_in_{own}"], overlaps[f"{own}_in_{other}"]
        if np.isfinite(mine) and np.isfinite(theirs) and theirs > mine:
            swapped += 1
    return swapped
