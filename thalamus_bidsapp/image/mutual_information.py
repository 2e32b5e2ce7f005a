"""Mutual information between the T1w and a registered image: the registration QC metric.

Definition (this is what the cut-offs 0.25 for FLIRT and 0.30 for ANTs refer to)
------------------------------------------------------------------------------
Let ``M`` be the set of voxels inside the T1w brain mask (mask > 0) where both
images are finite. For each image separately:

1. the intensity range is the [0.5, 99.5] percentile interval of that image's
   values in ``M`` (robust to a few extreme voxels such as vessels or
   interpolation overshoot); values outside it are clipped onto its ends;
2. the range is cut into ``bins`` = 32 equal-width bins (the last bin
   includes its upper edge).

The joint histogram ``n(a, b)`` of the two binned images over ``M`` gives
``p(a, b) = n(a, b) / |M|`` and the marginals ``p(a)``, ``p(b)``. Then

    MI = sum over n(a, b) > 0 of p(a, b) * ln( p(a, b) / (p(a) p(b)) )

in **nats** (natural logarithm). MI is 0 for independent images and at most
``ln(32) = 3.47``; it is symmetric in its two images. An image that is
constant in ``M`` has MI 0. The plug-in estimator's positive bias is about
``(bins - 1)**2 / (2 |M|)`` nats, under 0.001 for a brain of 10^6 voxels.

Both images must be on the same grid (the registered image resampled onto the
T1w grid), so no interpolation happens here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from thalamus_bidsapp.image.resample import same_grid

LOGGER = logging.getLogger(__name__)

#: Number of equal-width bins per image.
DEFAULT_BINS = 32
#: Percentiles (in the mask) that bound each image's histogram range.
DEFAULT_RANGE_PERCENTILES = (0.5, 99.5)


def mutual_information(
    reference: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
    range_percentiles: tuple[float, float] = DEFAULT_RANGE_PERCENTILES,
) -> float:
    """Mutual information (nats) between two images inside a mask, as defined in the module docstring.

    Parameters
    ----------
    reference
        T1w intensities, shape (X, Y, Z) (any shape works, all three must match).
    image
        Registered image on the same grid, shape (X, Y, Z).
    mask
        Brain mask of the reference, shape (X, Y, Z); nonzero = inside.
    bins
        Number of equal-width bins per image (default 32).
    range_percentiles
        Lower and upper percentile (0..100) of each image's in-mask values
        bounding its histogram range; values beyond are clipped to the range.

    Returns
    -------
    float
        MI in nats, >= 0.

    Raises
    ------
    ValueError
        If the shapes differ, ``bins`` < 2, or the mask holds no finite voxel.
    """
    reference = np.asarray(reference)
    image = np.asarray(image)
    mask = np.asarray(mask)
    if reference.shape != image.shape or reference.shape != mask.shape:
        raise ValueError(
            f"shapes differ: reference {reference.shape}, image {image.shape}, mask {mask.shape}"
        )
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    lo_pct, hi_pct = range_percentiles
    if not 0.0 <= lo_pct < hi_pct <= 100.0:
        raise ValueError(f"range_percentiles must satisfy 0 <= low < high <= 100, got {range_percentiles}")

    inside = (mask != 0) & np.isfinite(reference) & np.isfinite(image)
    n = int(inside.sum())
    if n == 0:
        raise ValueError("the mask holds no voxel where both images are finite")
    a = _bin_indices(reference[inside].astype(np.float64), bins, range_percentiles)
    b = _bin_indices(image[inside].astype(np.float64), bins, range_percentiles)

    if a.min() == a.max() or b.min() == b.max():
        # A single occupied bin carries no information; skip the rounding of the sum.
        return 0.0
    joint = np.bincount(a * bins + b, minlength=bins * bins).reshape(bins, bins).astype(np.float64) / n
    pa = joint.sum(axis=1)
    pb = joint.sum(axis=0)
    nz = joint > 0
    outer = np.outer(pa, pb)
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))
    # Rounding can leave -1e-17 for independent images; MI is non-negative.
    return max(mi, 0.0)


def _bin_indices(values: np.ndarray, bins: int, range_percentiles: tuple[float, float]) -> np.ndarray:
    """Equal-width bin index 0..bins-1 of each value over its robust range; shape as ``values``."""
    lo, hi = np.percentile(values, range_percentiles)
    if not hi > lo:
        # Constant (within the range): one bin, which makes MI exactly 0.
        return np.zeros(values.shape, dtype=np.int64)
    idx = np.floor((np.clip(values, lo, hi) - lo) / (hi - lo) * bins).astype(np.int64)
    return np.minimum(idx, bins - 1)


def mutual_information_images(
    reference: str | os.PathLike | SpatialImage,
    image: str | os.PathLike | SpatialImage,
    mask: str | os.PathLike | SpatialImage,
    **kwargs: Any,
) -> float:
    """:func:`mutual_information` on NIfTI files (paths); the three grids must match.

    Parameters
    ----------
    reference, image, mask
        Paths (or nibabel images) of the T1w, the registered image and the
        T1w brain mask, all on the T1w grid.
    **kwargs
        Passed to :func:`mutual_information` (``bins``, ``range_percentiles``).

    Returns
    -------
    float
        MI in nats.

    Raises
    ------
    ValueError
        If the grids (shape or affine, to 1e-3 mm) differ.
    """
    imgs = [x if isinstance(x, SpatialImage) else nib.load(os.fspath(x)) for x in (reference, image, mask)]
    ref_img = imgs[0]
    for other in imgs[1:]:
        if not same_grid(other, ref_img):
            raise ValueError(
                f"image grid differs from the reference grid: {other.shape} vs {ref_img.shape}"
            )
    arrays = [np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]) for img in imgs]
    return mutual_information(arrays[0], arrays[1], arrays[2], **kwargs)
