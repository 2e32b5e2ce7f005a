"""Bring label images onto a reference grid through world coordinates."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from thalamus_bidsapp.image.grid import same_grid
from thalamus_bidsapp.image.nifti import new_image


def labels_to_grid(labels: nib.spatialimages.SpatialImage, reference: nib.spatialimages.SpatialImage,
                   world_map: np.ndarray | None = None) -> nib.Nifti1Image:
    """Nearest-neighbour resampling of an integer label image onto ``reference``'s grid.

    ``world_map`` (4, 4), optional: maps a reference world point (RAS+ mm) to
    the labels' world (e.g. a registration's T1w -> FLAIR transform); None:
    both images share one world.

    Each reference voxel takes the label of the source voxel whose centre is
    nearest to its world position (``labels.affine`` and ``reference.affine``
    define the positions, in mm); voxels outside the source get 0. When both
    grids are identical the labels are returned unchanged, so voxel counts
    are preserved exactly.

    Returns
    -------
    A NIfTI-1 image of shape ``reference.shape[:3]`` with the reference
    affine and the source's integer dtype.
    """
    data = np.asanyarray(labels.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data).astype(np.int32)
    if world_map is None and same_grid(labels, reference):
        out = data
    else:
        world = np.eye(4) if world_map is None else np.asarray(world_map, dtype=float)
        ref_to_src = np.linalg.inv(labels.affine) @ world @ reference.affine
        # round() rather than map_coordinates' order=0 keeps ties deterministic.
        grid = np.indices(reference.shape[:3], dtype=np.float32).reshape(3, -1)
        src = ref_to_src[:3, :3] @ grid + ref_to_src[:3, 3:4]
        idx = np.rint(src).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.array(data.shape[:3])[:, None]), axis=0)
        out = np.zeros(grid.shape[1], dtype=data.dtype)
        out[inside] = data[idx[0, inside], idx[1, inside], idx[2, inside]]
        out = out.reshape(reference.shape[:3])
    return new_image(out, reference.affine)
