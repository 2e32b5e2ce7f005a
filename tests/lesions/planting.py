"""Planted T1-hypointense lesions on real anatomy (FreeSurfer subjects), for the lesion-filling tests.

Lesions are spheres placed by a seeded generator: juxtathalamic ones in the
white matter 1-5 mm from the thalamus (aseg labels 2/41 only, so the
thalamus itself is untouched) and intra-thalamic ones inside labels 10/49.
Their voxels get 45-65 % of the mean white-matter intensity times the
voxel's own relative texture, as MS lesions look on a T1w.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WHITE_MATTER = (2, 41)
THALAMUS = (10, 49)


@dataclass(frozen=True)
class Planted:
    image: np.ndarray
    lesion: np.ndarray
    juxtathalamic_ml: float
    intrathalamic_ml: float


def _spheres(candidates: np.ndarray, allowed: np.ndarray, radius_vox: float, target_voxels: int,
             rng: np.random.Generator) -> np.ndarray:
    """Union of spheres centred on random ``candidates`` voxels, clipped to ``allowed``, until ``target_voxels``."""
    out = np.zeros(allowed.shape, dtype=bool)
    centres = np.argwhere(candidates)
    r = int(np.ceil(radius_vox))
    ball = np.sum(np.square(np.indices((2 * r + 1,) * 3) - r), axis=0) <= radius_vox ** 2
    for _ in range(200):
        if out.sum() >= target_voxels:
            break
        c = centres[rng.integers(len(centres))]
        box = tuple(slice(ci - r, ci + r + 1) for ci in c)
        out[box] |= ball
        out &= allowed
    return out


def plant_lesions(t1w: np.ndarray, aseg: np.ndarray, *, seed: int, juxta_ml: float = 6.0,
                  intra_ml: float = 0.75, kinds: tuple[str, ...] = ("juxta", "intra")) -> Planted:
    """Plant lesions on a 1 mm T1w with its aseg (same grid); returns the lesioned image and the lesion mask."""
    rng = np.random.default_rng(seed)
    thalamus = np.isin(aseg, THALAMUS)
    white = np.isin(aseg, WHITE_MATTER)
    distance = ndimage.distance_transform_edt(~thalamus)
    lesion = np.zeros(aseg.shape, dtype=bool)
    juxta = np.zeros_like(lesion)
    intra = np.zeros_like(lesion)
    if "juxta" in kinds:
        ring = white & (distance >= 1) & (distance <= 5)
        juxta = _spheres(ring & (distance >= 2) & (distance <= 4), ring, 3.0, int(juxta_ml * 1000), rng)
    if "intra" in kinds:
        core = thalamus & (ndimage.distance_transform_edt(thalamus) >= 4)
        intra = _spheres(core, thalamus, 2.5, int(intra_ml * 1000), rng)
    lesion = juxta | intra
    wm_mean = float(np.asarray(t1w, float)[white].mean())
    image = np.asarray(t1w, dtype=np.float32).copy()
    texture = image[lesion] / max(float(np.median(image[lesion])), 1e-6)
    fraction = rng.uniform(0.45, 0.65)
    image[lesion] = fraction * wm_mean * np.clip(texture, 0.8, 1.2)
    return Planted(image, lesion, juxta.sum() / 1000.0, intra.sum() / 1000.0)
