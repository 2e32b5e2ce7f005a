"""Lesion filling: replace lesion voxels of a T1w with intensities of the normal tissue near them.

Like FSL's ``lesion_filling``, each lesion is filled from the
normal-appearing white matter (NAWM) around it, so a segmenter sees white
matter where a T1-hypointense lesion was; unlike a constant fill, the values
are drawn from the NAWM voxels near that lesion (a seeded generator: the same
inputs and seed give the same image), so the filled region keeps the local
intensity level and texture of white matter. The NAWM is the white matter's
intensity peak, not a k-means class (:mod:`thalamus_bidsapp.image.tissue_classes`),
so neither thalamus nor grey/white partial volume is drawn into a lesion
next to the thalamus. Lesions lying in the thalamus (mostly inside the prior;
without a prior, lesions surrounded by grey matter) are filled from the
normal thalamic (grey) voxels near them instead. When too little normal
thalamus is left to sample from, the thalamic lesion voxels are filled from
the nearest normal-appearing grey matter, and the result says so
(``thalamus_fill`` = :data:`FALLBACK`, with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from thalamus_bidsapp.image.tissue_classes import (
    TissueClasses,
    grey_band,
    normal_appearing_white_matter,
    pure_white_matter,
    tissue_classes,
)

#: First search radius around a lesion for tissue to draw from (mm); doubled until enough is found.
START_RADIUS_MM = 5.0
#: Doublings of the radius before the whole pool is used.
MAX_DOUBLINGS = 4
#: Fewest pool voxels a neighbourhood must hold to be drawn from.
MIN_SAMPLES = 50
#: Percentiles of a neighbourhood's intensities kept for drawing (bright vessels, partial volume left out).
TRIM_PERCENTILES = (5.0, 95.0)
#: Default seed of the generator (recorded in the sidecar).
DEFAULT_SEED = 20161
#: Without a prior, a lesion is filled as grey matter when at least this fraction of its shell is grey.
GREY_SHELL_FRACTION = 0.7
#: Thickness of the shell around a lesion (voxels, beyond its one-voxel rim) judged for grey matter.
SHELL_VOXELS = 2
#: Fewest normal thalamus voxels (fraction of the prior) to fill thalamic lesions from the thalamus itself.
MIN_NORMAL_THALAMUS_FRACTION = 0.1
#: Depth (mm) inside the prior beyond which a lesion is in the thalamus whatever else it covers: a registered prior
#: is a few millimetres wider than the thalamus, so only its outer band can hold grazing white-matter lesions.
THALAMUS_CORE_MM = 4.0

#: ``FillResult.thalamus_fill`` values: where thalamic lesion voxels were drawn from.
NORMAL_THALAMUS = "normal thalamus"
GREY_MATTER = "surrounding grey matter"
FALLBACK = "fallback: nearest normal-appearing grey matter"

#: What the fill does, in the filled T1w's sidecar.
ALGORITHM = (
    "lesion voxels replaced by intensities drawn at random (seeded) from the normal-appearing white matter (NAWM) "
    f"within a growing radius of each lesion (first {START_RADIUS_MM:g} mm, doubled until {MIN_SAMPLES} voxels), "
    "each neighbourhood's 5th-95th percentile range; NAWM = brain voxels whose whole 3x3x3 neighbourhood lies within "
    "2.5 robust standard deviations of the white matter's intensity peak, its mean at most one below it (mode of "
    "the brightest class of "
    "a 3-class k-means of the lesioned T1w, lesions excluded; spread from the bright side of the peak), minus a "
    "one-voxel rim around the lesions and the thalamus prior. Lesions lying at least half in the thalamus prior, or "
    f"reaching more than {THALAMUS_CORE_MM:g} mm inside it (a thalamic lesion confluent with white-matter lesions), are "
    "filled, inside it, from the normal thalamic voxels near them (prior voxels, eroded by one voxel, neither "
    "lesion, CSF-dark nor NAWM); without a prior, lesions whose surrounding shell is at least "
    f"{GREY_SHELL_FRACTION:g} grey matter (between the CSF/grey border and the NAWM) are filled from the grey "
    "matter near them. When under "
    f"{MIN_NORMAL_THALAMUS_FRACTION:.0%} of the prior is normal thalamus, its lesion voxels are filled from the "
    "nearest normal-appearing grey matter instead (ThalamusFill, ThalamusFillReason)"
)


@dataclass(frozen=True)
class FillResult:
    """A filled T1w and what was done.

    ``image``: the input's shape and dtype, equal to the input outside the
    lesion. ``n_from_white_matter`` / ``n_from_thalamus``: lesion voxels filled
    from the white matter and as thalamus (grey). ``white_matter_range`` /
    ``thalamus_range``: (min, max) of the pool intensities (input units; None
    for an unused pool). ``thalamus_fill``: where the thalamic voxels came from
    (:data:`NORMAL_THALAMUS`, :data:`GREY_MATTER`, :data:`FALLBACK`; None when
    none), ``thalamus_fill_reason``: why the fallback was used (else None).
    """

    image: np.ndarray
    n_from_white_matter: int
    n_from_thalamus: int
    white_matter_range: tuple[float, float] | None
    thalamus_range: tuple[float, float] | None
    tissue_centres: tuple[float, float, float] | None
    seed: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    white_matter_peak: tuple[float, float] | None = None
    thalamus_fill: str | None = None
    thalamus_fill_reason: str | None = None

    @property
    def fallback(self) -> bool:
        """True when thalamic lesion voxels were filled from the fallback (too little normal thalamus)."""
        return self.thalamus_fill == FALLBACK

    def provenance(self) -> dict[str, Any]:
        """JSON-ready description for the filled image's sidecar."""
        return {
            "Algorithm": ALGORITHM,
            "Seed": self.seed,
            "VoxelsFilledFromWhiteMatter": self.n_from_white_matter,
            "VoxelsFilledFromThalamus": self.n_from_thalamus,
            "WhiteMatterIntensityRange": list(self.white_matter_range) if self.white_matter_range else None,
            "WhiteMatterPeak": list(self.white_matter_peak) if self.white_matter_peak else None,
            "ThalamusIntensityRange": list(self.thalamus_range) if self.thalamus_range else None,
            "ThalamusFill": self.thalamus_fill,
            "ThalamusFillFallback": self.fallback,
            "ThalamusFillReason": self.thalamus_fill_reason,
            "TissueClassMeans": list(self.tissue_centres) if self.tissue_centres else None,
            "Notes": list(self.notes),
        }


@dataclass(frozen=True)
class _GreyPlan:
    """Which lesion voxels are filled as grey matter (thalamus), from which pool, and why."""

    targets: np.ndarray
    pool: np.ndarray | None
    source: str | None
    reason: str | None = None


def fill_lesions(
    t1w: np.ndarray,
    lesion: np.ndarray,
    brain: np.ndarray,
    zooms: tuple[float, float, float],
    *,
    thalamus: np.ndarray | None = None,
    seed: int = DEFAULT_SEED,
) -> FillResult:
    """Fill the lesion voxels of a T1w from the normal tissue near them.

    Parameters
    ----------
    t1w
        T1-weighted intensities, shape (X, Y, Z), any units and dtype.
    lesion
        Boolean lesion mask on the same grid, shape (X, Y, Z).
    brain
        Boolean brain mask, shape (X, Y, Z): the tissue classes are learnt inside it.
    zooms
        Voxel size (mm) along X, Y, Z: the search radius is in mm.
    thalamus
        Optional boolean thalamus prior, shape (X, Y, Z): the lesions lying
        mostly in it are filled, inside it, from its normal voxels. None: the
        lesions surrounded by grey matter are filled from it, the others from
        the white matter (and the notes say so).
    seed
        Seed of the random generator.

    Returns
    -------
    FillResult
        Nothing changes when ``lesion`` is empty.
    """
    lesion = np.asarray(lesion, dtype=bool)
    notes = [] if thalamus is not None else [
        "no thalamus prior: lesions surrounded by grey matter filled from it, the others from the white matter"]
    if not lesion.any():
        return FillResult(np.array(t1w, copy=True), 0, 0, None, None, None, seed,
                          ("empty lesion mask: nothing filled",))
    rng = np.random.default_rng(seed)
    brain = np.asarray(brain, dtype=bool)
    rim = ndimage.binary_dilation(lesion)
    classes = tissue_classes(t1w, brain, exclude=rim)
    white = normal_appearing_white_matter(t1w, brain, classes, lesion)
    if thalamus is not None:  # the thalamus is nearly as bright as white matter on a T1w: keep it out of the pool
        white &= ~np.asarray(thalamus, dtype=bool)
    plan = (_thalamic_plan(t1w, lesion, brain, classes, np.asarray(thalamus, dtype=bool), rim, zooms)
            if thalamus is not None else _grey_plan(t1w, lesion, brain, classes, rim))
    if plan.reason:
        notes.append(plan.reason)
    filled = np.array(t1w, copy=True)
    _fill_from(filled, t1w, lesion & ~plan.targets, white, zooms, rng)
    if plan.pool is not None:
        _fill_from(filled, t1w, plan.targets, plan.pool, zooms, rng)
    return FillResult(
        filled, int((lesion & ~plan.targets).sum()), int(plan.targets.sum()),
        _range(t1w, white), _range(t1w, plan.pool) if plan.pool is not None else None,
        classes.centres, seed, tuple(notes), (classes.white_peak, classes.white_spread),
        plan.source if plan.targets.any() else None, plan.reason)


def _thalamic_plan(t1w: np.ndarray, lesion: np.ndarray, brain: np.ndarray, classes: TissueClasses,
                   thalamus: np.ndarray, rim: np.ndarray, zooms: tuple[float, float, float]) -> _GreyPlan:
    """Lesions mostly in the prior, filled from its normal voxels, or from the fallback when too few are left.

    Normal thalamus: prior voxels eroded by one voxel, outside the lesions'
    rim, neither CSF-dark (ventricles, background) nor NAWM (a registered
    prior is wider than the thalamus). All boolean, the image's shape.
    """
    targets = thalamic_lesions(lesion, thalamus, zooms)
    if not targets.any():
        return _GreyPlan(targets, None, None)
    data = np.asarray(t1w, dtype=np.float64)
    pool = (ndimage.binary_erosion(thalamus) & ~rim & brain & (data > classes.csf_border)
            & ~pure_white_matter(t1w, brain, classes))
    needed = max(MIN_SAMPLES, int(np.ceil(MIN_NORMAL_THALAMUS_FRACTION * thalamus.sum())))
    if pool.sum() >= needed:
        return _GreyPlan(targets, pool, NORMAL_THALAMUS)
    reason = (f"too little normal thalamus to sample from: {int(pool.sum())} voxels of the {int(thalamus.sum())}-voxel "
              f"prior are neither lesion nor CSF nor white matter (at least {needed} needed); the thalamic lesion "
              "voxels were filled from the nearest normal-appearing grey matter, so the thalamus there is not measured")
    return _GreyPlan(targets, grey_band(t1w, brain, classes) & ~rim & ~thalamus, FALLBACK, reason)


def _grey_plan(t1w: np.ndarray, lesion: np.ndarray, brain: np.ndarray, classes: TissueClasses,
               rim: np.ndarray) -> _GreyPlan:
    """Without a prior: the lesions surrounded by grey matter, filled from the grey matter near them."""
    grey = grey_band(t1w, brain, classes)
    targets = grey_surrounded_lesions(lesion, grey, brain)
    return _GreyPlan(targets, grey & ~rim if targets.any() else None, GREY_MATTER)


def grey_surrounded_lesions(lesion: np.ndarray, grey: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The lesions (26-connected) whose shell is mostly grey matter: inside a grey structure such as the thalamus.

    The shell of a lesion is the brain within :data:`SHELL_VOXELS` voxels
    beyond the one-voxel rim of all lesions; a lesion is grey when at least
    :data:`GREY_SHELL_FRACTION` of its shell is ``grey``. A white-matter
    lesion touching the thalamus has white matter on most of its shell.
    All arguments boolean, shape (X, Y, Z); returns the same.
    """
    components, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    out = np.zeros(lesion.shape, dtype=bool)
    rim = ndimage.binary_dilation(lesion)
    reach = SHELL_VOXELS + 1
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(slice(max(s.start - reach, 0), min(s.stop + reach, n)) for s, n in zip(box, lesion.shape))
        component = components[grown] == index
        shell = ndimage.binary_dilation(component, iterations=reach) & ~rim[grown] & brain[grown]
        if shell.any() and grey[grown][shell].mean() >= GREY_SHELL_FRACTION:
            out[grown] |= component
    return out


def thalamic_lesions(lesion: np.ndarray, thalamus: np.ndarray,
                     zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The lesion voxels to fill as thalamus: those in the prior, of lesions mostly in it or reaching its core.

    Mostly: at least half of the lesion's voxels; its core: more than
    :data:`THALAMUS_CORE_MM` inside the prior.

    A registered prior is a few millimetres wider or narrower than the
    subject's thalamus; a white-matter lesion next to the thalamus that only
    grazes the prior stays white matter instead of growing the thalamus. A
    thalamic lesion confluent with large white-matter lesions (common in MS)
    lies mostly outside the prior, but reaches its core: its voxels in the
    prior are thalamus. ``lesion`` and ``thalamus``: boolean, shape (X, Y, Z);
    ``zooms``: voxel size (mm); returns the same shape, boolean.
    """
    thalamus = np.asarray(thalamus, dtype=bool)
    components, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(lesion)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    inside = np.bincount(components[thalamus].ravel(), minlength=count + 1)
    core = ndimage.distance_transform_edt(thalamus, sampling=zooms) > THALAMUS_CORE_MM
    deep = np.bincount(components[core].ravel(), minlength=count + 1) > 0
    thalamic = (inside * 2 >= sizes) | deep
    thalamic[0] = False
    return thalamic[components] & thalamus


def _range(t1w: np.ndarray, pool: np.ndarray) -> tuple[float, float] | None:
    values = np.asarray(t1w)[pool]
    return (float(values.min()), float(values.max())) if values.size else None


def _fill_from(out: np.ndarray, t1w: np.ndarray, targets: np.ndarray, pool: np.ndarray,
               zooms: tuple[float, float, float], rng: np.random.Generator) -> None:
    """Write, into ``out`` at each connected component of ``targets``, values drawn from ``pool`` near it.

    ``out`` and ``t1w``: shape (X, Y, Z); ``targets`` and ``pool``: boolean, same shape.
    """
    if not targets.any():
        return
    if not pool.any():
        raise ValueError("no normal-appearing tissue to fill the lesions from")
    components, _ = ndimage.label(targets, structure=np.ones((3, 3, 3), dtype=bool))
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        samples = _nearby_samples(t1w, components, index, box, pool, zooms)
        inside = components[box] == index
        region = out[box]  # a view: writing into it writes into ``out``
        region[inside] = rng.choice(samples, size=int(inside.sum()))


def _nearby_samples(t1w: np.ndarray, components: np.ndarray, index: int, box: tuple[slice, ...],
                    pool: np.ndarray, zooms: tuple[float, float, float]) -> np.ndarray:
    """Pool intensities within a radius of component ``index`` (grown until enough), 1-D array."""
    radius = START_RADIUS_MM
    for _ in range(MAX_DOUBLINGS + 1):
        margin = [int(np.ceil(radius / z)) for z in zooms]
        grown = tuple(slice(max(s.start - m, 0), min(s.stop + m, n))
                      for s, m, n in zip(box, margin, components.shape))
        component = components[grown] == index
        distance = ndimage.distance_transform_edt(~component, sampling=zooms)
        near = (distance <= radius) & pool[grown]
        if near.sum() >= MIN_SAMPLES:
            return _trimmed(np.asarray(t1w)[grown][near])
        radius *= 2.0
    return _trimmed(np.asarray(t1w)[pool])


def _trimmed(values: np.ndarray) -> np.ndarray:
    """The values between their 5th and 95th percentiles: vessels and partial-volume voxels left out."""
    low, high = np.percentile(values, TRIM_PERCENTILES)
    kept = values[(values >= low) & (values <= high)]
    return kept if kept.size else values
