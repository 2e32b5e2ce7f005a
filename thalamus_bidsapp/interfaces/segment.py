"""nipype interfaces of the thalamus segmentation methods.

Every method node writes *mask records*: a small JSON per mask with the mask
file, its method (the ``desc`` entity), its contrast and its provenance. The
volumes table and the publishing step read records, so they handle any set
of masks, including masks that exist only at run time (an R1 map excluded by
the registration QC leaves no R1 records).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

LOGGER = logging.getLogger(__name__)


def write_mask_record(
    mask: nib.spatialimages.SpatialImage | None,
    method: str,
    contrast: str,
    provenance: dict[str, Any],
    *,
    folder: Path | None = None,
    missing: list[str] | None = None,
) -> str:
    """Save ``mask`` (if any) and its record in ``folder`` (the node's directory); return the record path.

    A record without a mask says a mask could not be made and why
    (``missing`` inputs), so it is reported rather than silently absent.
    """
    folder = Path(folder or os.getcwd())
    record: dict[str, Any] = {"method": method, "contrast": contrast, "provenance": provenance, "mask_file": None}
    if mask is not None:
        mask_file = folder / f"thalamus_{method}.nii.gz"
        nib.save(mask, str(mask_file))
        record["mask_file"] = str(mask_file)
    if missing:
        record["missing_inputs"] = list(missing)
    record_file = folder / f"record_{method}.json"
    record_file.write_text(json.dumps(record, indent=2, default=str))
    return str(record_file)


def read_mask_record(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


class _RecordOutputSpec(TraitedSpec):
    record_file = File(exists=True, desc="mask record JSON")
    out_file = File(exists=True, desc="binary thalamus mask on the T1w grid")


# --- FSL FIRST ----------------------------------------------------------------


class _FirstInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")


class FirstThalamus(SimpleInterface):
    """FSL FIRST ``run_first_all -s L_Thal,R_Thal -b`` on the brain-masked T1w; labels 10 + 49."""

    input_spec = _FirstInputSpec
    output_spec = _RecordOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces import first

        t1w = nib.load(self.inputs.t1w)
        brain = first.brain_masked_t1w(t1w, nib.load(self.inputs.brain_mask))
        brain_file = Path(runtime.cwd) / "t1w_brain.nii.gz"
        nib.save(brain, str(brain_file))
        prefix = Path(runtime.cwd) / "first"
        firstseg = first.run_first(brain_file, prefix)
        mask = first.first_thalamus_mask(firstseg, t1w)
        provenance = first.provenance(cmd=first.first_command(brain_file, prefix))
        self._results["record_file"] = write_mask_record(mask, "first", "T1w", provenance, folder=Path(runtime.cwd))
        self._results["out_file"] = read_mask_record(self._results["record_file"])["mask_file"]
        return runtime


# --- DBSegment ------------------------------------------------------------------


class _DBSegmentInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    executable = traits.Str(desc="DBSegment executable (default: on PATH)")
    model_folder = traits.Str(desc="DBSegment model folder (default: $DBSEGMENT_MODEL_PATH)")


class DBSegmentThalamus(SimpleInterface):
    """DBSegment (5 folds, test-time augmentation); thalamic labels merged, back on the T1w grid."""

    input_spec = _DBSegmentInputSpec
    output_spec = _RecordOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces import dbsegment

        executable = self.inputs.executable if isdefined(self.inputs.executable) else None
        model_folder = self.inputs.model_folder if isdefined(self.inputs.model_folder) else None
        seg_path, cmd = dbsegment.run_dbsegment(
            Path(self.inputs.t1w), Path(runtime.cwd) / "dbsegment", executable=executable, model_folder=model_folder
        )
        t1w = nib.load(self.inputs.t1w)
        mask = dbsegment.dbsegment_thalamus_mask(nib.load(str(seg_path)), t1w)
        found_exe = dbsegment.find_dbsegment(executable)
        provenance = dbsegment.provenance(cmd, found_exe, dbsegment.find_model_folder(model_folder),
                                          dbsegment.DEFAULT_FOLDS, tta=True, checksums=True)
        self._results["record_file"] = write_mask_record(mask, "dbsegment", "T1w", provenance,
                                                         folder=Path(runtime.cwd))
        self._results["out_file"] = read_mask_record(self._results["record_file"])["mask_file"]
        return runtime


# --- MeshNet --------------------------------------------------------------------


class _MeshNetInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    model_dir = traits.Str(mandatory=True, desc="folder with the verified model.json and model.bin")
    threads = traits.Int(1, usedefault=True, desc="torch CPU threads")


class MeshNetThalamus(SimpleInterface):
    """brainchop's 18-class MeshNet on the conformed T1w; class 'Thalamus' back on the T1w grid."""

    input_spec = _MeshNetInputSpec
    output_spec = _RecordOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces.meshnet import segment_thalamus

        mask, provenance = segment_thalamus(nib.load(self.inputs.t1w), Path(self.inputs.model_dir),
                                            threads=self.inputs.threads)
        self._results["record_file"] = write_mask_record(mask, "meshnet", "T1w", {"Tool": "MeshNet", **provenance},
                                                         folder=Path(runtime.cwd))
        self._results["out_file"] = read_mask_record(self._results["record_file"])["mask_file"]
        return runtime


# --- MindGlide and its ensembles ------------------------------------------------


class _MindGlideInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    flair = File(exists=True, desc="FLAIR registered onto the T1w grid")
    r1 = File(exists=True, desc="scaled R1 map registered onto the T1w grid")
    envelope_record = File(exists=True, mandatory=True, desc="mask record of the envelope method")
    model_path = traits.Str(mandatory=True, desc="MindGlide checkpoint")
    device = traits.Str("cpu", usedefault=True, desc="cpu, cuda or auto")


class _MindGlideOutputSpec(TraitedSpec):
    record_files = OutputMultiObject(File(exists=True), desc="mask records: per contrast, then ensembles")


class MindGlideThalamus(SimpleInterface):
    """MindGlide on T1w, FLAIR and R1 with one loaded network; DGM x envelope; ensembles."""

    input_spec = _MindGlideInputSpec
    output_spec = _MindGlideOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.image.ensembles import build_ensembles
        from thalamus_bidsapp.interfaces import mindglide

        envelope = read_mask_record(self.inputs.envelope_record)
        envelope_img = nib.load(envelope["mask_file"])
        images = {
            "T1w": self.inputs.t1w,
            "FLAIR": self.inputs.flair if isdefined(self.inputs.flair) else None,
            "R1": self.inputs.r1 if isdefined(self.inputs.r1) else None,
        }
        segmentations = mindglide.segment_contrasts(images, model_path=self.inputs.model_path,
                                                    device=self.inputs.device, allow_download=False)
        model = mindglide.load_model(self.inputs.model_path, self.inputs.device, allow_download=False)
        cwd = Path(runtime.cwd)
        records, masks = [], {}
        for contrast, seg in segmentations.items():
            mask = mindglide.mindglide_thalamus(seg, envelope_img)
            masks[contrast] = mask
            provenance = mindglide.provenance(model, envelope=envelope["method"], contrast=contrast)
            records.append(write_mask_record(mask, f"mindglide{contrast}", _BIDS_CONTRAST[contrast],
                                             provenance, folder=cwd))
        for name, result in build_ensembles({c: masks.get(c) for c in ("T1w", "FLAIR", "R1")}).items():
            contrast = "+".join(_BIDS_CONTRAST[c] for c in result.contrasts)
            records.append(write_mask_record(result.mask, f"ensemble{name}", contrast,
                                             {"Tool": "thalamus_bidsapp ensemble of MindGlide masks",
                                              **result.provenance()},
                                             folder=cwd, missing=list(result.missing)))
        self._results["record_files"] = records
        return runtime


_BIDS_CONTRAST = {"T1w": "T1w", "FLAIR": "FLAIR", "R1": "R1map"}


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
