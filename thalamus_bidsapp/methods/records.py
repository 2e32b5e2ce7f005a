"""Mask records: what every method node writes per mask, and what the volumes and publishing steps read.

A record is a small JSON per mask with the mask file, its method (the
``desc`` entity), its contrast and its provenance. The volumes table and the
publishing step read records, so they handle any set of masks, including
masks that exist only at run time (an R1 map excluded by the registration QC
leaves no R1 records) and methods they have never heard of.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, TraitedSpec, isdefined

from thalamus_bidsapp.image.sides import check_sides_match, sides_image, world_sides_agree

LOGGER = logging.getLogger(__name__)

#: The ``content_digest`` input of a :class:`ReadsOutsideFiles` interface.
CONTENT_DIGEST_DESC = "sha256 of the contents of the input files read from outside the work folder"


class ReadsOutsideFiles:
    """Mixin of a nipype interface that reads files from outside the work folder (raw images, a FreeSurfer subject).

    nipype keys cached results on a file's path, size and modification time,
    so a file edited in place (``touch -r``) would return the old result. Such
    an interface declares it by inheriting this class, names the inputs holding
    those files in :attr:`outside_inputs` and has a ``content_digest`` input
    (:data:`CONTENT_DIGEST_DESC`); the participant workflow fills that input
    with a digest of the contents of :meth:`outside_files`, so the node is
    recomputed when they change.
    """

    #: The inputs naming files outside the work folder.
    outside_inputs: ClassVar[tuple[str, ...]] = ()

    def outside_files(self) -> list[str]:
        """The files outside the work folder this node reads, known before it runs (inputs in name order)."""
        values = (getattr(self.inputs, name) for name in sorted(self.outside_inputs))
        return [value for value in values if isdefined(value)]


def write_mask_record(
    mask: nib.spatialimages.SpatialImage | None,
    method: str,
    contrast: str,
    provenance: dict[str, Any],
    *,
    folder: Path | None = None,
    missing: list[str] | None = None,
    sides: np.ndarray | None = None,
    side_labels: dict[str, Any] | None = None,
) -> str:
    """Save ``mask`` (if any) and its record in ``folder`` (the node's directory); return the record path.

    A record without a mask says a mask could not be made and why
    (``missing`` inputs), so it is reported rather than silently absent.
    ``sides`` is the mask's side map (0 background, 1 left, 2 right; its
    non-zero voxels exactly the mask's), saved beside it with
    ``side_labels`` saying where the sides come from.
    """
    folder = Path(folder or os.getcwd())
    record: dict[str, Any] = {"method": method, "contrast": contrast, "provenance": provenance, "mask_file": None}
    if mask is not None:
        mask_file = folder / f"thalamus_{method}.nii.gz"
        nib.save(mask, str(mask_file))
        record["mask_file"] = str(mask_file)
        if sides is not None:
            check_sides_match(np.asanyarray(mask.dataobj), sides)
            _warn_if_sides_mirrored(sides, mask.affine, method)
            sides_file = folder / f"thalamus_{method}_sides.nii.gz"
            nib.save(sides_image(sides, mask), str(sides_file))
            record["sides_file"] = str(sides_file)
            record["side_labels"] = dict(side_labels or {})
    if missing:
        record["missing_inputs"] = list(missing)
    record_file = folder / f"record_{method}.json"
    record_file.write_text(json.dumps(record, indent=2, default=str))
    return str(record_file)


def _warn_if_sides_mirrored(sides: np.ndarray, affine: np.ndarray, method: str) -> None:
    """Labels name anatomical sides; a left part at larger world x than the right means a flipped image."""
    if world_sides_agree(sides, affine) is False:
        LOGGER.warning("%s: the left thalamus lies at larger world x (RAS+) than the right; the image's "
                       "affine may be flipped left-right", method)


def read_mask_record(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def records_with_masks(record_files: list[str]) -> list[dict[str, Any]]:
    """The records that hold a mask, in order; records without one are logged."""
    kept = []
    for path in record_files:
        record = read_mask_record(path)
        if record.get("mask_file"):
            kept.append(record)
        else:
            LOGGER.info("no %s mask: missing inputs %s", record["method"], ", ".join(record.get("missing_inputs", [])))
    return kept


class RecordOutputSpec(TraitedSpec):
    """Outputs of a node making one mask: its record and the mask itself."""

    record_file = File(exists=True, desc="mask record JSON")
    out_file = File(exists=True, desc="binary thalamus mask on the T1w grid")


def made_on_filled_t1w(record: dict[str, Any], filled_methods: list[str] | tuple[str, ...]) -> bool:
    """Whether a mask was segmented on the lesion-filled T1w.

    ``filled_methods``: the methods that received the filled T1w this run
    (empty when nothing was filled). A mask counts when its method is one of
    them, a T1w enters its contrast (``T1w``, ``T1w+FLAIR``), and it is not a
    ``desc-<mask>Unfilled`` mask of ``--lesion-filling both``.
    """
    from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX, method_of_mask

    if not filled_methods or str(record["method"]).endswith(UNFILLED_SUFFIX):
        return False
    method = method_of_mask(str(record["method"]))
    return method is not None and method.name in filled_methods and "T1w" in str(record["contrast"]).split("+")


def filled_methods_of(fill_provenance: str | os.PathLike | None, planned: list[str] | tuple[str, ...]) -> list[str]:
    """``planned`` when the lesion-fill provenance says the T1w was filled, else nothing."""
    if not fill_provenance:
        return []
    filled = json.loads(Path(fill_provenance).read_text()).get("LesionFilled", False)
    return list(planned) if filled else []
