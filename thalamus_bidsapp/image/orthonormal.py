"""An orthonormal grid over the field of view of a sheared one, for tools that read only orthonormal grids.

ITK (ANTs) accepts a voxel-to-world affine only when its direction cosines
are orthonormal; a sheared sform is refused ("ITK only supports orthonormal
direction cosines"). Such an image is resampled onto an orthonormal grid of
the same field of view (the closest rotation to the affine, the affine's
voxel sizes, a box holding every voxel of the original), the tool works on
that copy in world coordinates, and what it produces for the original grid is
resampled back. Volumes are never measured on the copy: they stay n x |det(A)|
of the published grid.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["is_orthonormal", "orthonormal_grid", "resample_affine"]


def is_orthonormal(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether the 3x3 part of ``affine`` is a rotation (or reflection) times positive voxel sizes: no shear."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if np.any(sizes <= 0) or not np.all(np.isfinite(linear)):
        return False
    directions = linear / sizes
    return bool(np.allclose(directions.T @ directions, np.eye(3), atol=tol))


def orthonormal_grid(shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of an orthonormal grid covering every voxel centre of the grid (``shape``, ``affine``).

    The directions are the rotation closest to the affine's 3x3 part (polar
    decomposition), the voxel sizes its column norms.
    """
    affine = np.asarray(affine, dtype=float)
    linear = affine[:3, :3]
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt
    sizes = np.linalg.norm(linear, axis=0)
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape[:3]])), dtype=float)
    local = (corners @ linear.T) @ rotation  # corner offsets from the origin, on the new axes (mm)
    low, high = local.min(axis=0), local.max(axis=0)
    new_shape = tuple(int(n) for n in np.ceil((high - low) / sizes - 1e-6).astype(int) + 1)
    new = np.eye(4)
    new[:3, :3] = rotation * sizes
    new[:3, 3] = affine[:3, 3] + rotation @ low
    return new_shape, new


def resample_affine(img: nib.spatialimages.SpatialImage, shape: tuple[int, ...], affine: np.ndarray, *,
                    order: int = 1) -> nib.Nifti1Image:
    """``img`` (3D) resampled onto the grid (``shape``, ``affine``) in world coordinates; float32, 0 outside."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    voxel_map = np.linalg.inv(np.asarray(img.affine, dtype=float)) @ np.asarray(affine, dtype=float)
    out = ndimage.affine_transform(data, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=tuple(shape[:3]),
                                   order=order, mode="constant", cval=0.0)
    return nib.Nifti1Image(out.astype(np.float32), np.asarray(affine, dtype=float))
