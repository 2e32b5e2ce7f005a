"""Tissue model of a T1w from its own intensities: the normal-appearing white matter (NAWM) for lesion filling.

A T1w brain holds three intensity classes (CSF dark, grey matter middle,
white matter bright). A one-dimensional k-means with three centres, started
at fixed percentiles, separates them deterministically (no random start, so a
re-run gives the same classes) and in well under a second on 256^3 voxels.

The brightest k-means class is not the white matter a lesion should be
filled with: its lower border lies halfway between the grey and white
centres, so it holds the grey/white partial-volume voxels and most of the
deep grey matter (the thalamus is only a little darker than white matter on
a T1w). The white matter is therefore taken from its *peak*: the mode of
the bright class (the top of its smoothed histogram) and its spread from
the bright side of the peak only (which partial volume with darker tissue
does not reach). Pure white matter lies within :data:`WHITE_SPREADS`
spreads of the peak; the NAWM is that set eroded by one voxel (26
neighbours) whose neighbourhood mean is near the peak, so every NAWM voxel is
surrounded by white-matter intensities and neither thalamus nor grey/white
borders can enter it. Between the
CSF/grey border and the NAWM's lower bound lies the grey band (cortex,
deep grey nuclei and partial volume), from which grey structures are filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Percentiles of the brain's intensities where the CSF, grey and white matter centres start.
START_PERCENTILES = (10.0, 50.0, 85.0)
#: Half-width of pure white matter around its peak, in spreads (robust standard deviations).
WHITE_SPREADS = 2.5
#: Lowest mean of a pure white-matter voxel's 3x3x3 neighbourhood, in spreads below the peak.
LOCAL_SPREADS = 1.0
#: Robust standard deviation of a normal distribution from the median of its upper half-deviations.
HALF_NORMAL_MEDIAN = 0.6744897501960817

_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class TissueClasses:
    """Intensity model of a T1w brain.

    ``centres``: k-means class means (CSF, GM, WM) in the image's intensity
    units, ascending. ``white_matter``: boolean, the image's shape, the voxels
    of the brightest k-means class. ``white_peak`` / ``white_spread``: the
    white matter's mode and robust standard deviation (bright side).
    ``white_range``: (low, high) intensities of pure white matter.
    ``csf_border``: the intensity between the CSF and grey centres (darker is CSF).
    ``iterations``: k-means iterations run.
    """

    centres: tuple[float, float, float]
    white_matter: np.ndarray
    iterations: int
    white_peak: float = float("nan")
    white_spread: float = float("nan")

    @property
    def white_range(self) -> tuple[float, float]:
        """Intensities of pure white matter: the peak +- :data:`WHITE_SPREADS` spreads."""
        half = WHITE_SPREADS * self.white_spread
        return (self.white_peak - half, self.white_peak + half)

    @property
    def csf_border(self) -> float:
        """Midpoint of the CSF and grey-matter centres: darker voxels are CSF (or background)."""
        return (self.centres[0] + self.centres[1]) / 2.0


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


def intensity_mode(values: np.ndarray, *, bins: int = 1024) -> float:
    """The mode of a sample: the highest point of its histogram smoothed by a Gaussian kernel.

    The kernel's width is a quarter of the sample's robust standard deviation
    (interquartile range / 1.349), at least two bins: wide enough that an
    integer-valued image (FreeSurfer's ``norm.mgz``) has no empty bins between
    its values, narrow enough to keep the peak where it is; a long tail on one
    side (partial volume below the white-matter peak) does not move it.
    ``values``: 1-D, finite.
    """
    values = np.asarray(values, dtype=np.float64)
    low, q1, q3, high = np.percentile(values, (0.5, 25.0, 75.0, 99.5))
    if high <= low:
        return float(np.median(values))
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    width = edges[1] - edges[0]
    smoothed = ndimage.gaussian_filter1d(counts.astype(np.float64), max(0.25 * (q3 - q1) / 1.349 / width, 2.0),
                                         mode="constant")
    top = int(np.argmax(smoothed))
    return float((edges[top] + edges[top + 1]) / 2.0)


def white_matter_peak(values: np.ndarray) -> tuple[float, float]:
    """(mode, robust standard deviation) of white-matter intensities ``values`` (1-D).

    The spread comes from the values above the mode only: the median of their
    distances to it, divided by :data:`HALF_NORMAL_MEDIAN`. At least a
    thousandth of the mode's magnitude (a flat, denoised image has no spread).
    """
    peak = intensity_mode(values)
    above = values[values > peak] - peak
    spread = float(np.median(above)) / HALF_NORMAL_MEDIAN if above.size else 0.0
    return peak, max(spread, 1e-3 * max(abs(peak), 1e-6))


def tissue_classes(t1w: np.ndarray, brain: np.ndarray, exclude: np.ndarray | None = None) -> TissueClasses:
    """The intensity model of a T1w inside ``brain``, leaving ``exclude`` (lesions) out.

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
    data = np.asarray(t1w, dtype=np.float64)
    values = data[inside]
    if values.size < 100:
        raise ValueError(f"only {values.size} brain voxels outside the lesions: too few to estimate tissue classes")
    centres, iterations = kmeans_1d(values, np.percentile(values, START_PERCENTILES))
    threshold = (centres[1] + centres[2]) / 2.0
    white = inside & (data > threshold)
    peak, spread = white_matter_peak(values[values > threshold])
    return TissueClasses(tuple(float(c) for c in centres), white, iterations, peak, spread)


def pure_white_matter(t1w: np.ndarray, brain: np.ndarray, classes: TissueClasses) -> np.ndarray:
    """Voxels of pure white matter: boolean, ``t1w``'s shape.

    Every voxel of its 3x3x3 neighbourhood lies in :attr:`TissueClasses.white_range`
    and the neighbourhood's mean is at least :data:`LOCAL_SPREADS` spreads
    below the peak at most: a bright part of a grey structure (the lateral
    thalamus on a T1w with a wide white-matter peak) has single voxels in the
    white range but a darker neighbourhood.
    """
    low, high = classes.white_range
    data = np.asarray(t1w, dtype=np.float64)
    pure = np.asarray(brain, dtype=bool) & (data >= low) & (data <= high)
    pure = ndimage.binary_erosion(pure, structure=_CUBE)
    local_mean = ndimage.uniform_filter(data, size=3, mode="nearest")
    return pure & (local_mean >= classes.white_peak - LOCAL_SPREADS * classes.white_spread)


def normal_appearing_white_matter(t1w: np.ndarray, brain: np.ndarray, classes: TissueClasses, lesion: np.ndarray, *,
                                  rim_voxels: int = 1) -> np.ndarray:
    """The pure white matter away from lesions: the pool lesion filling draws from.

    :func:`pure_white_matter` without the lesions dilated by ``rim_voxels``
    (the "dirty-appearing" rim around a lesion). Boolean, shape of ``lesion``.
    """
    rim = ndimage.binary_dilation(lesion, iterations=rim_voxels) if rim_voxels > 0 else np.asarray(lesion, bool)
    return pure_white_matter(t1w, brain, classes) & ~rim


def grey_band(t1w: np.ndarray, brain: np.ndarray, classes: TissueClasses) -> np.ndarray:
    """Brain voxels darker than pure white matter but brighter than CSF: grey matter and partial volume (boolean)."""
    data = np.asarray(t1w, dtype=np.float64)
    return np.asarray(brain, dtype=bool) & (data > classes.csf_border) & (data < classes.white_range[0])
