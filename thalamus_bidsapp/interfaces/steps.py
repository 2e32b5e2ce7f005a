"""nipype interfaces around the app's own steps.

Each interface is a thin shell: the work is done by plain functions in
``image/``, ``interfaces/<tool>.py`` and ``bidsio/`` so it can be tested
without nipype. Results land in the node's working directory; the
:class:`PublishDerivative` interface copies them into the output dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError


def _load(path: str) -> nib.spatialimages.SpatialImage:
    """Load an image, turning any reader failure into a clear error that names the file."""
    try:
        img = nib.load(path)
        img.get_fdata(dtype="float32")  # force a full read: a truncated gzip fails here, not later
    except Exception as err:
        raise ThalamusError(f"cannot read the image {path}: {err}", EXIT_DATAERR) from err
    return img


def _node_file(name: str) -> str:
    return os.path.abspath(name)


# --- reorientation ---------------------------------------------------------


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to reorient")


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image in RAS+ storage order")
    record_file = File(exists=True, desc="JSON record of the reorientation")


class Reorient(SimpleInterface):
    """Reorient an image to RAS+ (world geometry unchanged) and record how."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.image.reorient import reorient_to_ras

        img = _load(self.inputs.in_file)
        if img.ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if img.ndim != 3:
            raise ThalamusError(f"{self.inputs.in_file} is not a 3D image (shape {img.shape})", EXIT_DATAERR)
        out, record = reorient_to_ras(img)
        self._results["out_file"] = _node_file("reoriented.nii.gz")
        nib.save(out, self._results["out_file"])
        self._results["record_file"] = _node_file("reorientation.json")
        Path(self._results["record_file"]).write_text(json.dumps(record, indent=2))
        return runtime


# --- brain mask ------------------------------------------------------------


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reoriented T1w")
    threads = traits.Int(1, usedefault=True, desc="CPU threads for the network")


class _MaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary mask on the T1w grid")
    provenance_file = File(exists=True, desc="JSON provenance for the sidecar")


class BrainMask(SimpleInterface):
    """T1w brain mask with deepbet."""

    input_spec = _BrainMaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces.deepbet import brain_mask

        mask, provenance = brain_mask(_load(self.inputs.in_file), threads=self.inputs.threads)
        self._results["out_file"] = _node_file("brain_mask.nii.gz")
        nib.save(mask, self._results["out_file"])
        self._results["provenance_file"] = _node_file("provenance.json")
        Path(self._results["provenance_file"]).write_text(json.dumps(provenance, indent=2))
        return runtime


# --- FreeSurfer thalamus from an existing subject ---------------------------


class _FreeSurferThalamusInputSpec(BaseInterfaceInputSpec):
    subject_dir = traits.Directory(exists=True, mandatory=True, desc="finished FreeSurfer subject")
    reference = File(exists=True, mandatory=True, desc="reoriented T1w defining the output grid")


class FreeSurferThalamus(SimpleInterface):
    """aseg labels 10 + 49 on the T1w grid, and eTIV, from a finished FreeSurfer subject."""

    input_spec = _FreeSurferThalamusInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces.freesurfer import thalamus_from_subject

        mask, provenance = thalamus_from_subject(Path(self.inputs.subject_dir), _load(self.inputs.reference))
        self._results["out_file"] = _node_file("thalamus_freesurfer.nii.gz")
        nib.save(mask, self._results["out_file"])
        self._results["provenance_file"] = _node_file("provenance.json")
        Path(self._results["provenance_file"]).write_text(json.dumps(provenance, indent=2))
        return runtime


class _ReconAllInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="raw T1w")
    t2w = File(exists=True, desc="raw T2w, for -T2 -T2pial")
    subject_id = traits.Str(mandatory=True, desc="FreeSurfer subject name")
    subjects_dir = traits.Str(mandatory=True, desc="SUBJECTS_DIR")
    license_file = File(exists=True, mandatory=True, desc="FreeSurfer license")
    nthreads = traits.Int(1, usedefault=True, desc="OpenMP threads")


class _ReconAllOutputSpec(TraitedSpec):
    subject_dir = traits.Directory(exists=True, desc="finished FreeSurfer subject")


class ReconAll(SimpleInterface):
    """FreeSurfer ``recon-all -all`` (hours), when no finished subject exists."""

    input_spec = _ReconAllInputSpec
    output_spec = _ReconAllOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces.freesurfer import run_recon_all

        subject_dir = run_recon_all(
            Path(self.inputs.t1w),
            self.inputs.subject_id,
            Path(self.inputs.subjects_dir),
            license_file=Path(self.inputs.license_file),
            t2w=Path(self.inputs.t2w) if isdefined(self.inputs.t2w) else None,
            nthreads=self.inputs.nthreads,
            log_file=Path(_node_file("recon-all.log")),
        )
        self._results["subject_dir"] = str(subject_dir)
        return runtime


# --- volumes table -----------------------------------------------------------


class _SessionVolumesInputSpec(BaseInterfaceInputSpec):
    mask_files = InputMultiObject(File(exists=True), desc="thalamus masks (none when no method ran)")
    methods = traits.List(traits.Str, mandatory=True, desc="method of each mask")
    contrasts = traits.List(traits.Str, mandatory=True, desc="contrast of each mask")
    icv_provenance = File(exists=True, desc="provenance JSON holding an ICV record (FreeSurfer eTIV)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask, the ICV fallback")


class _SessionVolumesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="volumes TSV")


class SessionVolumes(SimpleInterface):
    """One row per mask: method, contrast, n_voxels, volume_mm3, volume_ml, icv_ml, icv_source."""

    input_spec = _SessionVolumesInputSpec
    output_spec = _SessionVolumesOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.tables import session_volumes_table

        icv_record = None
        if self.inputs.icv_provenance:
            icv_record = json.loads(Path(self.inputs.icv_provenance).read_text()).get("ICV")
        table = session_volumes_table(
            [Path(p) for p in self.inputs.mask_files] if isdefined(self.inputs.mask_files) else [],
            list(self.inputs.methods),
            list(self.inputs.contrasts),
            brain_mask=Path(self.inputs.brain_mask),
            icv_record=icv_record,
        )
        self._results["out_file"] = _node_file("volumes.tsv")
        table.to_csv(self._results["out_file"], sep="\t", index=False, na_rep="n/a", float_format="%.10g")
        return runtime


# --- publishing into the output dataset --------------------------------------


class _PublishInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="finished file to publish")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the output name")
    sidecar = traits.Dict(desc="JSON sidecar content")
    provenance_files = InputMultiObject(File(exists=True), desc="JSON files merged into the sidecar")


class _PublishOutputSpec(TraitedSpec):
    out_file = File(desc="published path")


class PublishDerivative(SimpleInterface):
    """Copy a result into the output dataset under its BIDS name, atomically, with a sidecar."""

    input_spec = _PublishInputSpec
    output_spec = _PublishOutputSpec
    # Always checked, but an identical file is not rewritten (see bidsio.derivatives.publish).
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish

        sidecar = None
        if self.inputs.sidecar or self.inputs.provenance_files:
            sidecar = {}
            for prov in self.inputs.provenance_files or []:
                sidecar.update(json.loads(Path(prov).read_text()))
            sidecar.update(self.inputs.sidecar or {})
        out = derivative_path(Path(self.inputs.output_dir), dict(self.inputs.entities))
        self._results["out_file"] = str(publish(Path(self.inputs.in_file), out, sidecar))
        return runtime

