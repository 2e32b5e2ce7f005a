"""Volumes carried by a deformation: Jacobian determinants integrated inside a mask.

A map ``phi(x) = x + u(x)`` from a reference grid (a within-subject
template) to a session sends the reference region ``M`` onto a region of
volume ``integral over M of det(D phi)``. With ``M`` the template's
thalamus, that integral is the session's thalamic volume, measured with one
boundary for every session: the change between sessions is then carried by
the registration, not by two independently drawn masks.

Pure numpy; the displacement field comes from any tool (ANTs writes fields
of world displacements, in LPS millimetres, on the reference grid).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["invert_displacement_at", "jacobian_determinant", "integrate_jacobian", "scaling_field"]


def jacobian_determinant(displacement: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``det(I + du/dx)`` at every voxel of a displacement field.

    Parameters
    ----------
    displacement
        Shape (X, Y, Z, 3): the displacement ``u`` (mm, world axes) of the map
        ``x -> x + u(x)`` at each voxel of the grid.
    affine
        Voxel-to-world 4x4 matrix of that grid, in the same world axes as
        ``u`` (RAS+ or LPS: the determinant is the same in either, as long
        as the field and the affine agree).

    Returns
    -------
    numpy.ndarray, shape (X, Y, Z)
        The Jacobian determinant (float64); central differences inside, one
        sided at the edges.
    """
    field = np.asarray(displacement, dtype=np.float64)
    if field.ndim != 4 or field.shape[3] != 3:
        raise ValueError(f"displacement must have shape (X, Y, Z, 3), not {field.shape}")
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    # du_a/di_b, then the chain rule through the voxel-to-world matrix: du/dx = du/di @ inv(A).
    per_voxel = np.stack([np.stack(np.gradient(field[..., a], axis=(0, 1, 2)), axis=-1) for a in range(3)], axis=-2)
    gradient = per_voxel @ np.linalg.inv(linear)
    return np.linalg.det(np.eye(3) + gradient)


def integrate_jacobian(
    determinant: np.ndarray,
    labels: np.ndarray,
    voxel_volume_mm3: float,
    regions: Mapping[str, tuple[int, ...]],
) -> dict[str, float]:
    """Volume (mL) of each region of the reference after the map: the sum of ``det`` over its voxels.

    Parameters
    ----------
    determinant
        Jacobian determinant on the reference grid (see :func:`jacobian_determinant`).
    labels
        Integer label map on the same grid (e.g. 0 background, 1 left, 2 right).
    voxel_volume_mm3
        Volume of one voxel of the grid.
    regions
        Name -> the labels it joins, e.g. ``{"left": (1,), "right": (2,), "bilateral": (1, 2)}``.

    Returns
    -------
    dict
        Name -> volume in mL; a region with no voxel is NaN.
    """
    det = np.asarray(determinant, dtype=np.float64)
    labels = np.asarray(labels)
    if det.shape != labels.shape:
        raise ValueError(f"determinant {det.shape} and labels {labels.shape} are not on the same grid")
    if np.any(det[labels > 0] <= 0):
        raise ValueError("the deformation folds inside the mask (a Jacobian determinant <= 0)")
    volumes = {}
    for name, values in regions.items():
        inside = np.isin(labels, values)
        volumes[name] = float(det[inside].sum() * voxel_volume_mm3 / 1000.0) if inside.any() else float("nan")
    return volumes


def scaling_field(shape: tuple[int, int, int], affine: np.ndarray, center_mm, scale: float) -> np.ndarray:
    """The displacement field of a uniform scaling about ``center_mm``: ``u(x) = (scale - 1) (x - c)``.

    Its Jacobian determinant is ``scale ** 3`` everywhere (a reference for tests and checks).
    """
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    world = ijk @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    return ((scale - 1.0) * (world - np.asarray(center_mm, float))).reshape(*shape, 3)


def invert_displacement_at(points: np.ndarray, displacement: np.ndarray, affine: np.ndarray,
                           iterations: int = 5) -> np.ndarray:
    """The points ``x`` with ``x + u(x) = y`` for each ``y`` of ``points`` (N, 3), by fixed-point iteration.

    ``u`` is trilinearly interpolated on its grid (``affine``: voxel to the
    world axes of ``points`` and ``u``) and taken as 0 outside it. The
    iteration ``x <- y - u(x)`` converges for the smooth, small
    displacements of a within-subject registration (contraction when
    ``|du/dx| < 1``).
    """
    from scipy import ndimage

    field = np.asarray(displacement, dtype=np.float64)
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    targets = np.asarray(points, dtype=np.float64)
    current = targets.copy()
    for _ in range(iterations):
        ijk = (current @ inverse[:3, :3].T + inverse[:3, 3]).T
        u = np.stack([ndimage.map_coordinates(field[..., a], ijk, order=1, mode="constant", cval=0.0)
                      for a in range(3)], axis=1)
        current = targets - u
    return current
