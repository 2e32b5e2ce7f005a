"""nipype interfaces for the volumes tables: one session's table, and tables joined."""

from __future__ import annotations

import json
import logging
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

from thalamus_bidsapp.interfaces.base import (
    defined_or_none,
    node_file,
)

LOGGER = logging.getLogger(__name__)


class _SessionVolumesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="volumes TSV")


class _SessionVolumesInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records (none when no method ran)")
    icv_provenance = File(exists=True, desc="provenance JSON holding an ICV record (FreeSurfer eTIV)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask, the ICV fallback")
    lesion_mask = File(exists=True, desc="lesion mask on the T1w grid (lesion columns; n/a without)")
    fill_provenance = File(exists=True, desc="the lesion fill's provenance JSON (LesionFilled)")
    filled_methods = traits.List(traits.Str, desc="methods that receive the lesion-filled T1w when it is filled")


class SessionVolumes(SimpleInterface):
    """One row per mask and hemisphere: method, contrast, hemisphere, n_voxels, volume_mm3, volume_ml, icv_ml, icv_source."""

    input_spec = _SessionVolumesInputSpec
    output_spec = _SessionVolumesOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.tables import session_volumes_table
        from thalamus_bidsapp.methods.records import filled_methods_of, made_on_filled_t1w, records_with_masks

        icv_record = None
        if isdefined(self.inputs.icv_provenance):
            icv_record = json.loads(Path(self.inputs.icv_provenance).read_text()).get("ICV")
        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        filled = filled_methods_of(defined_or_none(self.inputs.fill_provenance), self.inputs.filled_methods)
        table = session_volumes_table(
            [Path(r["mask_file"]) for r in records],
            [r["method"] for r in records],
            [r["contrast"] for r in records],
            brain_mask=Path(self.inputs.brain_mask),
            icv_record=icv_record,
            sides_files=[Path(r["sides_file"]) if r.get("sides_file") else None for r in records],
            lesion_mask=Path(self.inputs.lesion_mask) if isdefined(self.inputs.lesion_mask) else None,
            lesion_filled=[made_on_filled_t1w(r, filled) for r in records],
        )
        self._results["out_file"] = node_file("volumes.tsv")
        table.to_csv(self._results["out_file"], sep="\t", index=False, na_rep="n/a", float_format="%.10g")
        return runtime


class _ConcatTablesInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True, desc="TSV tables with the same columns")


class ConcatTables(SimpleInterface):
    """Stack TSV tables (the FLAIR and R1 registration QC rows of a session)."""

    input_spec = _ConcatTablesInputSpec
    output_spec = _SessionVolumesOutputSpec

    def _run_interface(self, runtime):
        import pandas as pd

        tables = [pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
                  for path in self.inputs.in_files]
        self._results["out_file"] = node_file("table.tsv")
        pd.concat(tables, ignore_index=True).to_csv(self._results["out_file"], sep="\t", index=False,
                                                    na_rep="n/a", float_format="%.6g")
        return runtime
