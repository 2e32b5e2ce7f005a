"""Ensembles and intersections of binary thalamus masks on one voxel grid.

The paper (Ibrahim et al. 2026, section 2.6.2) fuses the MindGlide masks of
the T1w, the registered FLAIR and the scaled registered R1 by the voxel-wise
mean of the binary masks, binarised at >= 0.5: for two masks that is their
union, for three a majority vote. Every mask here must already lie on the
native T1w grid; nothing is resampled, a grid mismatch is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.grid import check_same_grid  # noqa: F401 - re-exported for the adapters

logger = logging.getLogger(__name__)

#: Threshold on the voxel-wise mean of the binary masks (paper: ">= 0.5").
ENSEMBLE_THRESHOLD = 0.5

#: Named MindGlide ensembles: BIDS-safe name -> contrasts fused, in order.
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "T1wFLAIR": ("T1w", "FLAIR"),
    "T1wR1": ("T1w", "R1"),
    "R1FLAIR": ("R1", "FLAIR"),
    "T1wFLAIRR1": ("T1w", "FLAIR", "R1"),
}

def binary(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Boolean array of shape (X, Y, Z): voxels > 0 (a 4D singleton axis is dropped)."""
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ThalamusError(f"expected a 3D mask, got shape {data.shape}", EXIT_DATAERR)
    return data > 0


def mask_like(mask: np.ndarray, reference: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """A uint8 0/1 NIfTI mask with the grid (affine, qform/sform codes, units) of ``reference``.

    Parameters
    ----------
    mask
        Boolean or 0/1 array of shape ``reference.shape[:3]``.
    reference
        The grid the mask lies on (usually the native T1w).
    """
    if tuple(mask.shape) != tuple(reference.shape[:3]):
        raise ValueError(f"mask shape {mask.shape} does not match reference {reference.shape[:3]}")
    out = nib.Nifti1Image((np.asarray(mask) > 0).astype(np.uint8), reference.affine)
    hdr = reference.header
    if isinstance(hdr, nib.Nifti1Header):
        # Keep the reference's coordinate-system codes so viewers and FSL treat
        # the mask exactly like the T1w it belongs to.
        out.set_qform(reference.affine, code=int(hdr["qform_code"]) or 1)
        out.set_sform(reference.affine, code=int(hdr["sform_code"]) or 1)
        out.header.set_xyzt_units(*hdr.get_xyzt_units())
    else:
        out.set_qform(reference.affine, code=1)
        out.set_sform(reference.affine, code=1)
        out.header.set_xyzt_units("mm")
    out.set_data_dtype(np.uint8)
    return out


def mean_vote(
    masks: Sequence[nib.spatialimages.SpatialImage],
    threshold: float = ENSEMBLE_THRESHOLD,
    names: Sequence[str] | None = None,
) -> nib.Nifti1Image:
    """Voxel-wise mean of binary masks, kept where the mean is >= ``threshold``.

    With the default 0.5 this is the union of two masks and the majority of
    three. The comparison is done on vote counts (``votes >= threshold * n``)
    so that 2/3 or 1/2 is never lost to floating-point rounding.

    Parameters
    ----------
    masks
        Binary masks on one grid (shape (X, Y, Z)); values > 0 count as inside.
    threshold
        Fraction of masks that must agree, in (0, 1].
    names
        Labels for grid-mismatch messages.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 0/1 mask on the grid of the first input.
    """
    if not masks:
        raise ValueError("mean_vote needs at least one mask")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    check_same_grid(masks, names)
    votes = np.zeros(masks[0].shape[:3], dtype=np.int32)
    for img in masks:
        votes += binary(img)
    # votes/n >= t  <=>  votes >= t*n; the tiny slack absorbs t*n like 1.5000000001.
    keep = votes >= threshold * len(masks) - 1e-9
    return mask_like(keep, masks[0])


def intersection(
    a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage, names: Sequence[str] = ("mask", "envelope")
) -> nib.Nifti1Image:
    """Voxel-wise AND of two binary masks on the same grid (uint8 0/1, grid of ``a``)."""
    check_same_grid([a, b], names)
    return mask_like(binary(a) & binary(b), a)


@dataclass
class EnsembleResult:
    """One named ensemble: what it fused, what was missing, and the mask if built."""

    name: str
    contrasts: tuple[str, ...]
    missing: tuple[str, ...] = ()
    mask: nib.Nifti1Image | None = None
    threshold: float = ENSEMBLE_THRESHOLD
    rule: str = field(default="")

    @property
    def built(self) -> bool:
        return self.mask is not None

    def provenance(self) -> dict:
        """Sidecar fields: inputs, rule, threshold and missing inputs."""
        return {
            "Ensemble": self.name,
            "Contrasts": list(self.contrasts),
            "Rule": self.rule,
            "Threshold": self.threshold,
            "MissingInputs": list(self.missing),
            "Built": self.built,
        }


def build_ensembles(
    masks: Mapping[str, nib.spatialimages.SpatialImage | None],
    ensembles: Mapping[str, Sequence[str]] = ENSEMBLES,
    threshold: float = ENSEMBLE_THRESHOLD,
) -> dict[str, EnsembleResult]:
    """Build each named ensemble whose input masks all exist.

    An ensemble with a missing input is not built from the remaining masks
    (a "T1w+FLAIR" made of the T1w alone would be mislabelled); it is
    returned with ``mask=None`` and its missing contrasts listed, and a log
    line says so.

    Parameters
    ----------
    masks
        Contrast name (``T1w``, ``FLAIR``, ``R1``) -> binary mask on the T1w
        grid, or None when that contrast's mask does not exist.
    ensembles
        Ensemble name -> contrasts to fuse (default :data:`ENSEMBLES`).
    threshold
        Threshold on the voxel-wise mean (default 0.5).

    Returns
    -------
    dict
        Ensemble name -> :class:`EnsembleResult`, in the order of ``ensembles``.
    """
    results: dict[str, EnsembleResult] = {}
    for name, contrasts in ensembles.items():
        contrasts = tuple(contrasts)
        missing = tuple(c for c in contrasts if masks.get(c) is None)
        rule = f"mean of {len(contrasts)} binary masks >= {threshold}" + (
            " (union)" if len(contrasts) == 2 and threshold == 0.5 else
            " (majority)" if len(contrasts) == 3 and threshold == 0.5 else ""
        )
        if missing:
            logger.info("ensemble %s not built: missing MindGlide mask(s) for %s", name, ", ".join(missing))
            results[name] = EnsembleResult(name, contrasts, missing, None, threshold, rule)
            continue
        fused = mean_vote([masks[c] for c in contrasts], threshold, names=list(contrasts))
        results[name] = EnsembleResult(name, contrasts, (), fused, threshold, rule)
    return results
