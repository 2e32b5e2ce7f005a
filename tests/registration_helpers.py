"""Make R1-like and misaligned images from real anatomy, with the true transform known.

All transforms here are 4x4 matrices in world (RAS+, mm) coordinates that map a
point of the *reference* (T1w) image to the point of the *moving* image that
shows the same anatomy: ``y = T @ x``. A registration with the T1w as fixed
image should find the same mapping (ANTs' forward transform is exactly this
fixed-to-moving point map).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def rigid_matrix(
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    center_mm: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Rigid 4x4 world transform: rotate about ``center_mm`` (x, then y, then z), then translate.

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        ``y = R (x - c) + c + t`` in mm.
    """
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    center = np.asarray(center_mm, dtype=float)
    mat = np.eye(4)
    mat[:3, :3] = rot
    mat[:3, 3] = center - rot @ center + np.asarray(translation_mm, dtype=float)
    return mat


def rotation_angle_deg(mat: np.ndarray) -> float:
    """Total rotation angle of the 3x3 part of a rigid 4x4 matrix, degrees."""
    cos = (np.trace(mat[:3, :3]) - 1.0) / 2.0
    return float(np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0))))


def brain_center_mm(img: nib.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the centre of mass of a mask, shape (3,)."""
    com = np.array(ndimage.center_of_mass(mask.astype(float)))
    return nib.affines.apply_affine(img.affine, com)


def make_brain_mask(image: Path, out_path: Path) -> Path:
    """Brain mask of an already skull-stripped image: nonzero voxels, holes filled, largest component."""
    img = nib.load(str(image))
    data = np.asarray(img.dataobj, dtype=np.float32)
    # Skull-stripped images interpolated into MNI carry small negative ringing outside the brain.
    mask = data > 0.02 * np.percentile(data[data > 0], 99)
    mask = ndimage.binary_closing(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_fill_holes(mask)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine), str(out_path))
    return out_path


def _resample_world(
    src: nib.Nifti1Image, src_data: np.ndarray, out_affine: np.ndarray, out_shape: tuple[int, int, int], world_map: np.ndarray
) -> np.ndarray:
    """Sample ``src`` on a grid: output voxel v takes the value at world point ``world_map @ out_affine @ v``."""
    vox2vox = np.linalg.inv(src.affine) @ world_map @ out_affine
    return ndimage.affine_transform(
        src_data, vox2vox[:3, :3], offset=vox2vox[:3, 3], output_shape=out_shape, order=1, mode="constant", cval=0.0
    )


def make_r1_like(
    t1w: Path,
    brain_mask: Path,
    out_path: Path,
    *,
    rotation_deg: tuple[float, float, float] = (6.0, -4.0, 5.0),
    translation_mm: tuple[float, float, float] = (6.0, -5.0, 7.0),
    voxel_mm: float = 1.6,
    noise_fraction: float = 0.02,
    bias_amplitude: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """Write an R1-like image (s^-1) of ``t1w``, misaligned by a known rigid transform.

    The T1w is smoothed to the new resolution, resampled onto an isotropic
    ``voxel_mm`` grid covering the same field of view through the rigid
    transform, mapped through a monotonic non-linear contrast
    ``R1 = 0.25 + 1.1 * u**1.8`` (``u`` = T1w scaled to 0..1 by its brain 99th
    percentile), multiplied by a smooth bias field (linear + quadratic,
    +/- ``bias_amplitude``) and given Gaussian noise of ``noise_fraction``
    of the brain maximum.

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        The true world transform (T1w point -> R1 point), see the module docstring.
    """
    img = nib.load(str(t1w))
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(brain_mask)).dataobj) > 0
    true = rigid_matrix(rotation_deg, translation_mm, brain_center_mm(img, mask))

    zooms = np.array(img.header.get_zooms()[:3], dtype=float)
    # Anti-aliasing before downsampling: Gaussian whose FWHM is the new voxel size.
    sigma_vox = np.sqrt(np.maximum(voxel_mm**2 - zooms**2, 0.0)) / 2.355 / zooms
    smooth = ndimage.gaussian_filter(data, sigma_vox)

    corners = np.array([[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1) for k in (0, img.shape[2] - 1)])
    world = nib.affines.apply_affine(img.affine, corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    out_shape = tuple(int(np.ceil((h - l) / voxel_mm)) + 1 for l, h in zip(lo, hi))
    out_affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    out_affine[:3, 3] = lo
    # Moving voxel at world y shows the anatomy found at T1w point T^-1 y.
    moved = _resample_world(img, smooth, out_affine, out_shape, np.linalg.inv(true))

    p99 = float(np.percentile(data[mask], 99))
    u = np.clip(moved / p99, 0.0, 1.2)
    r1 = np.where(moved > 0, 0.25 + 1.1 * u**1.8, 0.0)
    grid = np.indices(out_shape, dtype=np.float32)
    norm = [(g / max(n - 1, 1)) * 2.0 - 1.0 for g, n in zip(grid, out_shape)]
    bias = 1.0 + bias_amplitude * (0.6 * norm[0] - 0.4 * norm[2] + 0.5 * (norm[1] ** 2 - 0.33))
    rng = np.random.default_rng(seed)
    r1 = r1 * bias + rng.normal(0.0, noise_fraction * 1.35, size=out_shape)
    nib.save(nib.Nifti1Image(r1.astype(np.float32), out_affine), str(out_path))
    return true


def make_shifted(image: Path, out_path: Path, translation_mm: tuple[float, float, float]) -> np.ndarray:
    """Write ``image`` moved by a pure translation on its own grid; return the true transform (4, 4)."""
    img = nib.load(str(image))
    data = np.asarray(img.dataobj, dtype=np.float32)
    true = rigid_matrix((0.0, 0.0, 0.0), translation_mm)
    moved = _resample_world(img, data, img.affine, img.shape[:3], np.linalg.inv(true))
    nib.save(nib.Nifti1Image(moved.astype(np.float32), img.affine), str(out_path))
    return true


def make_noise_like(reference: Path, out_path: Path, seed: int = 1) -> Path:
    """Write smooth random noise with the grid and the positive range of ``reference``."""
    img = nib.load(str(reference))
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=img.shape[:3]).astype(np.float32), 1.5)
    noise = (noise - noise.min()) / np.ptp(noise)
    nib.save(nib.Nifti1Image(noise.astype(np.float32), img.affine), str(out_path))
    return out_path


def mean_displacement_mm(found: np.ndarray, true: np.ndarray, brain_mask: Path, step: int = 2) -> float:
    """Mean distance (mm) that brain voxels move under ``true^-1 @ found``.

    ``found`` and ``true`` are world (RAS mm) T1w-to-moving maps, shape (4, 4);
    a perfect registration gives the identity and 0 mm. Every ``step``-th
    voxel along each axis is used (enough for a rigid error).
    """
    img = nib.load(str(brain_mask))
    mask = np.asarray(img.dataobj) > 0
    vox = np.argwhere(mask[::step, ::step, ::step]) * step
    pts = nib.affines.apply_affine(img.affine, vox)
    err = nib.affines.apply_affine(np.linalg.inv(true) @ found, pts) - pts
    return float(np.linalg.norm(err, axis=1).mean())
