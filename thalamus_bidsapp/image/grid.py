"""The one grid check: same voxel shape and the same affine within one tolerance."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError

#: Largest absolute difference (mm) between two affines of "the same" grid. NIfTI stores affines
#: as float32 (about 1e-5 mm of rounding at 256 mm); a real resampling moves voxels by far more.
GRID_ATOL_MM = 1e-3


def same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> bool:
    """Whether two images (or anything with ``shape`` and ``affine``) share shape (3 axes) and affine."""
    return (tuple(a.shape[:3]) == tuple(b.shape[:3])
            and bool(np.allclose(np.asarray(a.affine), np.asarray(b.affine), atol=GRID_ATOL_MM, rtol=0)))


def check_same_grid(images: Sequence[nib.spatialimages.SpatialImage], names: Sequence[str] | None = None) -> None:
    """Raise a :class:`ThalamusError` (exit 65) unless all images share the first one's grid.

    ``names`` label the images in the message (default ``image 0``, ``image 1``, ...).
    """
    if not images:
        return
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    ref = images[0]
    for name, img in zip(names[1:], images[1:]):
        if not same_grid(ref, img):
            raise ThalamusError(
                f"{name} is not on the grid of {names[0]}: shape {tuple(img.shape[:3])} vs "
                f"{tuple(ref.shape[:3])}, affine\n{np.round(img.affine, 4)}\nvs\n{np.round(ref.affine, 4)}. "
                "All masks must be resampled onto the native T1w grid first.",
                EXIT_DATAERR,
            )
