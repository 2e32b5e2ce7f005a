"""The session's QC step as a nipype node: checks per mask, and the volumes table with ``qc_status``.

The work is :func:`thalamus_bidsapp.qc.session.session_checks`; this shell
reads the node's files and writes two tables in its folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _SessionQCInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records (none when no method ran)")
    volumes_file = File(exists=True, mandatory=True, desc="the session's volumes TSV")
    registration_qc = File(exists=True, desc="the session's registration QC TSV (when an image was registered)")
    thalamus_prior = InputMultiObject(
        File(exists=True), desc="[left, right] thalamus probability maps on the T1w grid "
        "(*_hemi-L/R_space-T1w_label-thalamus_desc-prior_probseg); without them the prior checks are skipped")
    fill_provenance = File(exists=True, desc="the lesion fill's provenance JSON (adds the lesion_fill check)")
    thresholds = traits.Dict(mandatory=True, desc="QC thresholds (thalamus_bidsapp.qc.thresholds.load_thresholds)")


class _SessionQCOutputSpec(TraitedSpec):
    qc_file = File(exists=True, desc="QC table: method, contrast, check, value, threshold, status, reason")
    volumes_file = File(exists=True, desc="the volumes TSV with a qc_status column (worst status per mask)")


class SessionQC(SimpleInterface):
    """Run every QC check on the session's masks; add ``qc_status`` to its volumes table."""

    input_spec = _SessionQCInputSpec
    output_spec = _SessionQCOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.atomic import read_tsv
        from thalamus_bidsapp.methods.records import records_with_masks
        from thalamus_bidsapp.qc.session import MaskFiles, session_checks, with_qc_status

        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        masks = [MaskFiles(r["method"], r["contrast"], Path(r["mask_file"]),
                           Path(r["sides_file"]) if r.get("sides_file") else None, _family(r["method"]),
                           _no_sides_reason(r))
                 for r in records]
        volumes = read_tsv(self.inputs.volumes_file)
        registration = read_tsv(self.inputs.registration_qc) if isdefined(self.inputs.registration_qc) else None
        prior = list(self.inputs.thalamus_prior) if isdefined(self.inputs.thalamus_prior) else None
        fill = (json.loads(Path(self.inputs.fill_provenance).read_text())
                if isdefined(self.inputs.fill_provenance) else None)
        qc = session_checks(masks, volumes, self.inputs.thresholds, registration_qc=registration, prior=prior,
                            lesion_fill=fill)
        self._results["qc_file"] = os.path.abspath("segmentation_qc.tsv")
        qc.to_csv(self._results["qc_file"], sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        self._results["volumes_file"] = os.path.abspath("volumes_qc.tsv")
        with_qc_status(volumes, qc).to_csv(self._results["volumes_file"], sep="\t", index=False, na_rep="n/a",
                                           float_format="%.10g")
        return runtime


def _no_sides_reason(record: dict) -> str | None:
    """The reason a method recorded for making no sides (``Sides: {"Run": false, "Reason": ...}``)."""
    sides = (record.get("provenance") or {}).get("Sides")
    if isinstance(sides, dict) and sides.get("Run") is False and not record.get("sides_file"):
        return str(sides.get("Reason") or "left and right were not measured")
    return None


def _family(desc: str) -> str:
    """The registered method that publishes masks with this desc (itself when none claims it)."""
    from thalamus_bidsapp.methods.registry import method_of_mask

    method = method_of_mask(desc)
    return method.name if method is not None else desc
