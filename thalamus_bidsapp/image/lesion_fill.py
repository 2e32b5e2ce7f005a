"""Lesion filling: replace lesion voxels of a T1w with intensities of the normal tissue near them.

Like FSL's ``lesion_filling``, each lesion is filled from the
normal-appearing white matter (NAWM) around it, so a segmenter sees white
matter where a T1-hypointense lesion was; unlike a constant fill, the values
are drawn from the NAWM voxels near that lesion (a seeded generator: the same
inputs and seed give the same image), so the filled region keeps the local
intensity level and texture of white matter. Lesion voxels inside a thalamus
prior are filled from the normal thalamic voxels near them instead, so an
intra-thalamic lesion becomes thalamus, not white matter. The NAWM is
estimated from the lesioned image itself (:mod:`thalamus_bidsapp.image.tissue_classes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from thalamus_bidsapp.image.tissue_classes import normal_appearing_white_matter, tissue_classes

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


#: What the fill does, in the filled T1w's sidecar.
ALGORITHM = (
    "lesion voxels replaced by intensities drawn at random (seeded) from the normal-appearing white matter within "
    f"a growing radius of each lesion (first {START_RADIUS_MM:g} mm, doubled until {MIN_SAMPLES} voxels), each "
    "neighbourhood's 5th-95th percentile range; lesion voxels inside the thalamus prior (of lesions lying at least "
    "half in it) drawn likewise from the normal thalamic voxels near them; white matter from a 3-class k-means of "
    "the lesioned T1w inside the brain mask, lesions excluded, eroded by one voxel, minus a one-voxel rim around the "
    "lesions and the thalamus prior"
)


@dataclass(frozen=True)
class FillResult:
    """A filled T1w and what was done.

    ``image``: the input's shape and dtype, equal to the input outside the
    lesion. ``n_from_white_matter`` / ``n_from_thalamus``: lesion voxels filled
    from each pool. ``white_matter_range`` / ``thalamus_range``: (min, max) of
    the pool intensities (input units; None for an unused pool).
    """

    image: np.ndarray
    n_from_white_matter: int
    n_from_thalamus: int
    white_matter_range: tuple[float, float] | None
    thalamus_range: tuple[float, float] | None
    tissue_centres: tuple[float, float, float] | None
    seed: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready description for the filled image's sidecar."""
        return {
            "Algorithm": ALGORITHM,
            "Seed": self.seed,
            "VoxelsFilledFromWhiteMatter": self.n_from_white_matter,
            "VoxelsFilledFromThalamus": self.n_from_thalamus,
            "WhiteMatterIntensityRange": list(self.white_matter_range) if self.white_matter_range else None,
            "ThalamusIntensityRange": list(self.thalamus_range) if self.thalamus_range else None,
            "TissueClassMeans": list(self.tissue_centres) if self.tissue_centres else None,
            "Notes": list(self.notes),
        }


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
        Optional boolean thalamus prior, shape (X, Y, Z): its lesion voxels are
        filled from its normal (non-lesion) voxels. None: every lesion voxel is
        filled from the white matter (and the notes say so).
    seed
        Seed of the random generator.

    Returns
    -------
    FillResult
        Nothing changes when ``lesion`` is empty.
    """
    lesion = np.asarray(lesion, dtype=bool)
    notes = [] if thalamus is not None else ["no thalamus prior: every lesion voxel filled from the white matter"]
    if not lesion.any():
        return FillResult(np.array(t1w, copy=True), 0, 0, None, None, None, seed,
                          ("empty lesion mask: nothing filled",))
    rng = np.random.default_rng(seed)
    classes = tissue_classes(t1w, brain, exclude=ndimage.binary_dilation(lesion))
    white = normal_appearing_white_matter(classes, lesion)
    if thalamus is not None:  # the thalamus is nearly as bright as white matter on a T1w: keep it out of the pool
        white &= ~np.asarray(thalamus, dtype=bool)
    in_thalamus = thalamic_lesions(lesion, thalamus) if thalamus is not None else np.zeros_like(lesion)
    thalamic_pool = None
    if in_thalamus.any():
        rim = ndimage.binary_dilation(lesion)
        thalamic_pool = ndimage.binary_erosion(np.asarray(thalamus, dtype=bool)) & ~rim & np.asarray(brain, bool)
        if thalamic_pool.sum() < MIN_SAMPLES:
            notes.append("too little normal thalamus outside the lesions: its lesion voxels filled from white matter")
            in_thalamus, thalamic_pool = np.zeros_like(lesion), None
    filled = np.array(t1w, copy=True)
    _fill_from(filled, t1w, lesion & ~in_thalamus, white, zooms, rng)
    if thalamic_pool is not None:
        _fill_from(filled, t1w, in_thalamus, thalamic_pool, zooms, rng)
    return FillResult(
        filled, int((lesion & ~in_thalamus).sum()), int(in_thalamus.sum()),
        _range(t1w, white), _range(t1w, thalamic_pool) if thalamic_pool is not None else None,
        classes.centres, seed, tuple(notes))


def thalamic_lesions(lesion: np.ndarray, thalamus: np.ndarray) -> np.ndarray:
    """The lesion voxels to fill as thalamus: those in the prior, of lesions lying mostly (>= half) in it.

    A registered prior is a few millimetres wider or narrower than the
    subject's thalamus; a white-matter lesion next to the thalamus that only
    grazes the prior stays white matter instead of growing the thalamus.
    ``lesion`` and ``thalamus``: boolean, shape (X, Y, Z); returns the same.
    """
    thalamus = np.asarray(thalamus, dtype=bool)
    components, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(lesion)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    inside = np.bincount(components[thalamus].ravel(), minlength=count + 1)
    thalamic = inside * 2 >= sizes
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
