"""Simulated rescans of a real T1w, with an optional known thalamic atrophy.

A rescan is the same anatomy seen again: a rigid move (2-4 degrees about a
random axis through the image centre, 1-3 mm in a random direction), a
smooth multiplicative bias field of at most +-8 %, and Rician noise of 2 %
of the mean brain intensity. The moved (and, for atrophy, contracted)
anatomy is resampled once, with a cubic spline, onto the original grid.

The atrophy is a smooth radial contraction about a centre between the
thalami: every point within ``radius`` of the centre is scaled by the same
factor ``s`` towards the centre, and the scaling tapers smoothly to the
identity between ``radius`` and ``radius + taper``. A structure lying
inside the uniform ball therefore shrinks by exactly ``s**3 - 1`` of its
volume, whatever its boundary or the method that draws it.

Everything here is pure numpy/scipy/nibabel and deterministic given a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Defaults of the rescans (the values of the benchmark and the README).
ROTATION_DEG = (2.0, 4.0)
TRANSLATION_MM = (1.0, 3.0)
BIAS_FRACTION = 0.08
NOISE_FRACTION = 0.02


@dataclass(frozen=True)
class Contraction:
    """A radial contraction about ``center`` (RAS mm) that changes volumes inside ``radius`` by ``volume_change``."""

    center: tuple[float, float, float]
    radius: float
    volume_change: float  # e.g. -0.01 for 1 % atrophy
    taper: float = 15.0

    @property
    def scale(self) -> float:
        """Linear scaling inside the ball: ``scale ** 3 == 1 + volume_change``."""
        return float((1.0 + self.volume_change) ** (1.0 / 3.0))

    def source_points(self, points: np.ndarray) -> np.ndarray:
        """Where the contracted image takes each output point from (the inverse contraction), shape (N, 3).

        Inside the ball of radius ``scale * radius`` the factor is ``1 / scale``;
        beyond ``scale * radius + taper`` it is 1; between, a cosine blend in the
        radius keeps the map smooth and monotonic (so invertible).
        """
        center = np.asarray(self.center, float)
        offset = points - center
        r = np.linalg.norm(offset, axis=1)
        inner = self.scale * self.radius
        t = np.clip((r - inner) / self.taper, 0.0, 1.0)
        weight = 0.5 * (1.0 + np.cos(np.pi * t))  # 1 inside, 0 beyond the taper
        factor = weight / self.scale + (1.0 - weight)
        return center + offset * factor[:, None]


def covering_ball(mask: nib.Nifti1Image, margin_mm: float = 5.0) -> tuple[tuple[float, float, float], float]:
    """Centre (RAS mm) and radius of a ball holding every voxel of ``mask`` plus ``margin_mm``."""
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    if ijk.size == 0:
        raise ValueError("empty mask: no ball covers it")
    points = nib.affines.apply_affine(mask.affine, ijk)
    center = points.mean(axis=0)
    radius = float(np.linalg.norm(points - center, axis=1).max()) + margin_mm
    return (float(center[0]), float(center[1]), float(center[2])), radius


def random_rigid(rng: np.random.Generator, center: np.ndarray, rotation_deg=ROTATION_DEG,
                 translation_mm=TRANSLATION_MM) -> np.ndarray:
    """A 4x4 RAS rigid transform: rotation about a random axis through ``center``, then a translation."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(*rotation_deg))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    shift = direction * rng.uniform(*translation_mm)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = center - rotation @ center + shift
    return matrix


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float = BIAS_FRACTION) -> np.ndarray:
    """A smooth multiplicative field in ``[1 - amplitude, 1 + amplitude]``: a few low-frequency cosines."""
    grids = np.meshgrid(*(np.linspace(0.0, 1.0, n) for n in shape), indexing="ij")
    field = np.zeros(shape)
    for _ in range(4):
        freq = rng.uniform(0.3, 1.2, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        term = np.ones(shape)
        for axis in range(3):
            term = term * np.cos(np.pi * freq[axis] * grids[axis] + phase[axis])
        field += rng.normal() * term
    field /= np.abs(field).max()
    return 1.0 + amplitude * field


def rescan(image: nib.Nifti1Image, seed: int, *, contraction: Contraction | None = None,
           rigid: bool = True, bias: float = BIAS_FRACTION, noise: float = NOISE_FRACTION) -> nib.Nifti1Image:
    """A simulated rescan of ``image`` on its own grid (float32), with ``contraction`` applied if given.

    Output voxel ``x`` takes the original at ``contraction^-1(rigid^-1(x))``:
    the anatomy is contracted, then moved, and sampled once (cubic spline).
    """
    rng = np.random.default_rng(seed)
    data = np.asarray(image.dataobj, dtype=np.float32)
    shape = data.shape[:3]
    affine = image.affine
    center = nib.affines.apply_affine(affine, (np.asarray(shape) - 1) / 2.0)
    move = random_rigid(rng, center) if rigid else np.eye(4)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, ijk)
    source = nib.affines.apply_affine(np.linalg.inv(move), world)
    if contraction is not None:
        source = contraction.source_points(source)
    source_ijk = nib.affines.apply_affine(np.linalg.inv(affine), source).T
    moved = ndimage.map_coordinates(data, source_ijk, order=3, mode="constant", cval=0.0, prefilter=True)
    moved = np.clip(moved.reshape(shape), 0.0, None)
    if bias:
        moved = moved * bias_field(shape, rng, bias)
    if noise:
        brain = moved[moved > 0.1 * np.percentile(moved, 99)]
        sigma = noise * float(brain.mean())
        moved = np.sqrt((moved + rng.normal(0.0, sigma, shape)) ** 2 + rng.normal(0.0, sigma, shape) ** 2)
    header = image.header.copy() if isinstance(image, nib.Nifti1Image) else nib.Nifti1Header()
    out = nib.Nifti1Image(moved.astype(np.float32), affine, header)
    out.set_data_dtype(np.float32)
    out.header["scl_slope"], out.header["scl_inter"] = np.nan, np.nan
    return out


def crop_around(image: nib.Nifti1Image, center_mm, half_width_mm: float, zoom: float | None = None) -> nib.Nifti1Image:
    """A box of ``image`` around ``center_mm`` (for cheap tests), optionally resampled to ``zoom`` mm voxels."""
    voxel = np.round(nib.affines.apply_affine(np.linalg.inv(image.affine), center_mm)).astype(int)
    sizes = np.asarray(image.header.get_zooms()[:3], float)
    half = np.ceil(half_width_mm / sizes).astype(int)
    low = np.maximum(voxel - half, 0)
    high = np.minimum(voxel + half + 1, image.shape[:3])
    cropped = image.slicer[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    data = np.asarray(cropped.dataobj, dtype=np.float32)
    affine = cropped.affine
    if zoom is not None:
        factors = sizes / zoom
        data = ndimage.zoom(data, factors, order=1)
        affine = affine.copy()
        affine[:3, :3] = affine[:3, :3] @ np.diag(1.0 / factors)
    return nib.Nifti1Image(data, affine)
