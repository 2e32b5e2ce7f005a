"""Tissue classes of a T1w from its own intensities: the normal-appearing white matter for lesion filling.

A T1w brain holds three intensity classes (CSF dark, grey matter middle,
white matter bright). A one-dimensional k-means with three centres, started
at fixed percentiles, separates them deterministically (no random start, so a
re-run gives the same classes) and in well under a second on 256^3 voxels.
It is the initialisation ANTs Atropos itself uses; Atropos' Markov random
field smoothing and partial-volume priors refine the class borders, which do
not matter here: the white matter is only a pool of intensities to draw from,
and the voxels next to grey matter (partial volume) are left out by eroding it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Percentiles of the brain's intensities where the CSF, grey and white matter centres start.
START_PERCENTILES = (10.0, 50.0, 85.0)


@dataclass(frozen=True)
class TissueClasses:
    """Three intensity classes of a T1w brain.

    ``centres``: class means (CSF, GM, WM) in the image's intensity units,
    ascending. ``white_matter``: boolean, the image's shape, the voxels of the
    brightest class (before erosion). ``iterations``: k-means iterations run.
    """

    centres: tuple[float, float, float]
    white_matter: np.ndarray
    iterations: int


def kmeans_1d(values: np.ndarray, starts: np.ndarray, *, max_iterations: int = 100) -> tuple[np.ndarray, int]:
    """Lloyd's k-means on intensities; returns the sorted centres, shape (k,), and the iterations run.

    ``values``: 1-D array of intensities; ``starts``: initial centres, shape (k,).
    Assignment uses the midpoints between sorted centres, so each step is one
    ``searchsorted`` and one ``bincount`` (linear in the number of values).
    """
    values = np.asarray(values, dtype=np.float64)
    centres = np.sort(np.asarray(starts, dtype=np.float64))
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        labels = np.searchsorted((centres[1:] + centres[:-1]) / 2.0, values)
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.bincount(labels, weights=values, minlength=len(centres))
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        updated = np.sort(updated)
        if np.allclose(updated, centres, rtol=0, atol=1e-6 * (abs(centres).max() + 1)):
            centres = updated
            break
        centres = updated
    return centres, iterations


def tissue_classes(t1w: np.ndarray, brain: np.ndarray, exclude: np.ndarray | None = None) -> TissueClasses:
    """The CSF/GM/WM intensity classes of a T1w inside ``brain``, leaving ``exclude`` (lesions) out.

    Parameters
    ----------
    t1w
        T1-weighted intensities, shape (X, Y, Z), any units (white matter brightest).
    brain
        Boolean brain mask, shape (X, Y, Z).
    exclude
        Boolean voxels not to learn from (the lesions and their rim), shape (X, Y, Z); they are never white matter.

    Raises
    ------
    ValueError
        When fewer than 100 voxels remain to learn from.
    """
    inside = np.asarray(brain, dtype=bool) & np.isfinite(t1w)
    if exclude is not None:
        inside &= ~np.asarray(exclude, dtype=bool)
    values = np.asarray(t1w, dtype=np.float64)[inside]
    if values.size < 100:
        raise ValueError(f"only {values.size} brain voxels outside the lesions: too few to estimate tissue classes")
    centres, iterations = kmeans_1d(values, np.percentile(values, START_PERCENTILES))
    threshold = (centres[1] + centres[2]) / 2.0
    white = inside & (np.asarray(t1w, dtype=np.float64) > threshold)
    return TissueClasses(tuple(float(c) for c in centres), white, iterations)


def normal_appearing_white_matter(classes: TissueClasses, lesion: np.ndarray, *, rim_voxels: int = 1) -> np.ndarray:
    """The white matter away from grey matter and lesions: the pool lesion filling draws from.

    The white-matter class is eroded by one voxel (partial volume with grey
    matter and CSF) and the lesions dilated by ``rim_voxels`` are removed
    (the "dirty-appearing" rim around a lesion). Boolean, shape of ``lesion``.
    """
    core = ndimage.binary_erosion(classes.white_matter, iterations=1)
    rim = ndimage.binary_dilation(lesion, iterations=rim_voxels) if rim_voxels > 0 else np.asarray(lesion, bool)
    return core & ~rim
