"""nipype interfaces around the app's own steps (the segmentation methods' live in ``methods/``).

Each interface is a thin shell: the work is done by plain functions in
``image/``, ``interfaces/<tool>.py``, ``registration.py`` and ``bidsio/`` so
it can be tested without nipype. Results land in the node's working directory; the
:class:`PublishDerivative` interface copies them into the output dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import logging

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
from thalamus_bidsapp.methods.records import CONTENT_DIGEST_DESC  # declared by some method nodes too

LOGGER = logging.getLogger(__name__)


def read_files(node_inputs) -> list[str]:
    """The files outside the work folder that a node with these inputs reads, known before it runs."""
    names = {"in_file", "t1w", "t2w", "lesion_file", "raw_flair", "raw_t1w"}
    files = [getattr(node_inputs, name) for name in sorted(names & set(node_inputs.copyable_trait_names()))]
    files = [f for f in files if isdefined(f)]
    subject_dir = getattr(node_inputs, "subject_dir", None)
    if subject_dir is not None and isdefined(subject_dir):
        # What thalamus_from_subject reads of a finished FreeSurfer subject.
        files += [str(p) for p in (Path(subject_dir) / "mri" / "aseg.mgz", Path(subject_dir) / "stats" / "aseg.stats")
                  if p.is_file()]
    return files


def _load(path: str) -> nib.spatialimages.SpatialImage:
    from thalamus_bidsapp.image.nifti import load_image

    return load_image(path)


def _extension(path: str) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _node_file(name: str) -> str:
    return os.path.abspath(name)


def _save_image(img: nib.spatialimages.SpatialImage, name: str) -> str:
    """Save ``img`` in the node's folder; return its absolute path."""
    path = _node_file(name)
    nib.save(img, path)
    return path


def _save_json(data: dict, name: str) -> str:
    """Save ``data`` as JSON in the node's folder; return its absolute path."""
    path = _node_file(name)
    Path(path).write_text(json.dumps(data, indent=2, default=str))
    return path


# --- reorientation ---------------------------------------------------------


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to reorient")
    content_digest = traits.Str(desc=CONTENT_DIGEST_DESC)


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
        self._results["out_file"] = _save_image(out, "reoriented.nii.gz")
        self._results["record_file"] = _save_json(record, "reorientation.json")
        return runtime


# --- brain mask ------------------------------------------------------------


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reoriented T1w")
    threads = traits.Int(1, usedefault=True, nohash=True, desc="CPU threads for the network (not hashed)")


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
        self._results["out_file"] = _save_image(mask, "brain_mask.nii.gz")
        self._results["provenance_file"] = _save_json(provenance, "provenance.json")
        return runtime


class _SessionVolumesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="volumes TSV")


# --- registration of FLAIR and R1 to the T1w -----------------------------------


class _RegisterInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="reoriented FLAIR or R1 map")
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (reference grid)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    modality = traits.Enum("FLAIR", "R1map", mandatory=True, desc="what is registered")
    flirt_cutoff = traits.Float(0.25, usedefault=True, desc="MI cut-off for FLIRT strategies (nats)")
    ants_cutoff = traits.Float(0.30, usedefault=True, desc="MI cut-off for ANTs rigid (nats)")
    scale_r1 = traits.Bool(False, usedefault=True, desc="scale the registered R1 to 0..1000 in the brain")
    reorient_record = File(exists=True, desc="JSON record of the moving image's reorientation")


class _RegisterOutputSpec(TraitedSpec):
    out_file = File(desc="registered (and, for R1, scaled) image on the T1w grid; undefined when excluded")
    transform = File(desc="selected transform (FSL .mat or ITK .txt); undefined when excluded")
    qc_file = File(exists=True, desc="QC rows: image, strategy, mi, cutoff, passed, selected, reason")
    provenance_file = File(exists=True, desc="JSON provenance for the sidecars")


class RegisterToT1w(SimpleInterface):
    """FLIRT/ANTs candidates scored by mutual information; the QC rule picks one or excludes the image."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.atomic import save_nifti
        from thalamus_bidsapp.image.intensity import scale_r1_image
        from thalamus_bidsapp.registration import register_to_t1w

        cwd = Path(runtime.cwd)
        outcome = register_to_t1w(
            Path(self.inputs.moving), Path(self.inputs.t1w), Path(self.inputs.brain_mask), self.inputs.modality,
            cwd / "candidates", flirt_cutoff=self.inputs.flirt_cutoff, ants_cutoff=self.inputs.ants_cutoff,
        )
        self._results["qc_file"] = str(cwd / "registration_qc.tsv")
        outcome.qc.to_csv(self._results["qc_file"], sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        provenance = {}
        if isdefined(self.inputs.reorient_record):
            provenance.update(json.loads(Path(self.inputs.reorient_record).read_text()))
        provenance |= {
            "Registration": {"Modality": self.inputs.modality, "SelectedStrategy": outcome.selected,
                             "MutualInformation": outcome.mi, "Decision": outcome.summary,
                             "TransformFormat": outcome.transform_format, "FSLVersion": outcome.fsl_version,
                             "FlirtCutoff": self.inputs.flirt_cutoff, "AntsCutoff": self.inputs.ants_cutoff},
        }
        if outcome.excluded:
            LOGGER.warning("%s excluded: %s", self.inputs.modality, outcome.summary)
        else:
            registered = outcome.registered_image
            if self.inputs.scale_r1:
                registered = save_nifti(
                    scale_r1_image(_load(str(registered)), _load(self.inputs.brain_mask),
                                   names=(f"registered R1 map {registered}", f"brain mask {self.inputs.brain_mask}")),
                    cwd / "r1_scaled.nii.gz")
                provenance["Scaling"] = ("inside the T1w brain mask, clipped at the 99th percentile and rescaled "
                                         "linearly to 0..1000; 0 outside the mask")
            self._results["out_file"] = str(registered)
            self._results["transform"] = str(outcome.transform)
        self._results["provenance_file"] = _save_json(provenance, "provenance.json")
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
        self._results["out_file"] = _node_file("table.tsv")
        pd.concat(tables, ignore_index=True).to_csv(self._results["out_file"], sep="\t", index=False,
                                                    na_rep="n/a", float_format="%.6g")
        return runtime


# --- volumes table -----------------------------------------------------------


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
        filled = filled_methods_of(_defined(self.inputs.fill_provenance), self.inputs.filled_methods)
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
        self._results["out_file"] = _node_file("volumes.tsv")
        table.to_csv(self._results["out_file"], sep="\t", index=False, na_rep="n/a", float_format="%.10g")
        return runtime


# --- publishing into the output dataset --------------------------------------


class _PublishMasksInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="subject and session entities")
    sidecar = traits.Dict(desc="sidecar fields shared by every mask (Sources, SpatialReference)")
    fill_provenance = File(exists=True, desc="the lesion fill's provenance JSON (LesionFilled)")
    filled_methods = traits.List(traits.Str, desc="methods that receive the lesion-filled T1w when it is filled")
    filled_t1w_uri = traits.Str(desc="BIDS URI of the published lesion-filled T1w")


class _PublishMasksOutputSpec(TraitedSpec):
    out_files = traits.List(File(), desc="published masks")


class PublishMasks(SimpleInterface):
    """Publish every recorded thalamus mask as ``space-T1w_label-thalamus_desc-<method>_mask``.

    A mask with sides also gets ``space-T1w_seg-thalamus_desc-<method>_dseg.nii.gz``
    (0 background, 1 left, 2 right) and its lookup table ``..._dseg.tsv``.
    """

    input_spec = _PublishMasksInputSpec
    output_spec = _PublishMasksOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish
        from thalamus_bidsapp.methods.records import filled_methods_of, records_with_masks

        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        out_files = []
        filled = filled_methods_of(_defined(self.inputs.fill_provenance), self.inputs.filled_methods)
        for record in records:
            record["provenance"] = {**record["provenance"], **_lesion_fields(record, filled, self.inputs)}
            entities = {**self.inputs.entities, "space": "T1w", "label": "thalamus", "desc": record["method"],
                        "suffix": "mask"}
            sidecar = {
                **record["provenance"],
                "Type": "ROI",
                "Description": "Thalamus, left and right merged, binary mask on the T1w grid",
                "Method": record["method"],
                "Contrast": record["contrast"],
                **(self.inputs.sidecar or {}),
            }
            out = derivative_path(Path(self.inputs.output_dir), entities)
            out_files.append(str(publish(Path(record["mask_file"]), out, sidecar)))
            if record.get("sides_file"):
                out_files.extend(self._publish_sides(record, out))
        self._results["out_files"] = out_files
        return runtime

    def _publish_sides(self, record: dict, mask_path: Path) -> list[str]:
        """The mask's side map as ``space-T1w_seg-thalamus_desc-<method>_dseg`` with its lookup table."""
        from thalamus_bidsapp.bidsio.atomic import write_if_changed
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish
        from thalamus_bidsapp.image.sides import LOOKUP

        output_dir = Path(self.inputs.output_dir)
        entities = {**self.inputs.entities, "space": "T1w", "seg": "thalamus", "desc": record["method"],
                    "suffix": "dseg"}
        mask_uri = f"bids::{mask_path.relative_to(output_dir).as_posix()}"
        shared = dict(self.inputs.sidecar or {})
        sidecar = {
            **record["provenance"],
            "Description": "Left and right thalamus of the desc-" + record["method"] + " mask on the T1w grid "
                           "(0 background, 1 left, 2 right; left is the subject's left); its non-zero voxels are "
                           "exactly the mask's",
            "Method": record["method"],
            "Contrast": record["contrast"],
            "SideLabels": record.get("side_labels", {}),
            **shared,
            "Sources": [mask_uri, *shared.get("Sources", [])],
        }
        out = derivative_path(output_dir, {**entities, "extension": ".nii.gz"})
        lookup = derivative_path(output_dir, {**entities, "extension": ".tsv"})
        write_if_changed("index\tname\tabbreviation\n" + "".join(f"{i}\t{n}\t{a}\n" for i, n, a in LOOKUP), lookup)
        return [str(publish(Path(record["sides_file"]), out, sidecar)), str(lookup)]


def _defined(value):
    return value if isdefined(value) else None


def _lesion_fields(record: dict, filled_methods: list[str], inputs) -> dict:
    """Sidecar fields saying whether a mask was made on the lesion-filled T1w (and which)."""
    from thalamus_bidsapp.methods.records import made_on_filled_t1w

    if not filled_methods and record["provenance"].get("LesionFilled") is None:
        return {"LesionFilled": False}
    if made_on_filled_t1w(record, filled_methods):
        uri = _defined(inputs.filled_t1w_uri)
        return {"LesionFilled": True, **({"LesionFilledT1w": uri} if uri else {})}
    return {"LesionFilled": False}


class _SkullStripInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, desc="image on the T1w grid (nothing is judged when undefined)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    in_provenance = File(exists=True, desc="provenance JSON of the image, kept in the output")


class _SkullStripOutputSpec(TraitedSpec):
    provenance_file = File(exists=True, desc="the input provenance with SkullStripped and how it was decided")


class SkullStripCheck(SimpleInterface):
    """Whether an image is already skull-stripped, for its sidecar's ``SkullStripped`` (BIDS derivatives).

    The app never strips the images it publishes: an image is skull-stripped
    when its input was, which is measured (almost no signal outside the brain
    mask, :func:`thalamus_bidsapp.image.masks.looks_skull_stripped`).
    """

    input_spec = _SkullStripInputSpec
    output_spec = _SkullStripOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from thalamus_bidsapp.image.masks import SKULL_MARGIN_MM, SKULL_STRIPPED_MAX_FRACTION, looks_skull_stripped

        provenance = json.loads(Path(self.inputs.in_provenance).read_text()) if isdefined(
            self.inputs.in_provenance) else {}
        if isdefined(self.inputs.in_file):
            img, mask = _load(self.inputs.in_file), _load(self.inputs.brain_mask)
            stripped, fraction = looks_skull_stripped(np.asanyarray(img.dataobj), np.asanyarray(mask.dataobj),
                                                      img.header.get_zooms()[:3])
            rule = (f"{SKULL_STRIPPED_MAX_FRACTION:.0%} or less of its signal (above 10% of the brain's 99th "
                    f"percentile) more than {SKULL_MARGIN_MM:g} mm outside the brain mask means skull-stripped")
            if stripped is None:
                provenance.update(SkullStripped=False, SkullStrippedDecision=f"unknown: no signal to judge ({rule})")
            else:
                provenance.update(SkullStripped=stripped, SkullStrippedDecision=(
                    f"measured: {fraction:.1%} of the image's signal lies outside the brain ({rule})"))
        self._results["provenance_file"] = _save_json(provenance, "skullstripped.json")
        return runtime


class _PublishInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, desc="finished file to publish; nothing is published when undefined")
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

        if not isdefined(self.inputs.in_file):
            return runtime  # an optional result that was not produced (e.g. an excluded R1 map)
        entities = dict(self.inputs.entities)
        if "extension" not in entities:
            entities["extension"] = _extension(self.inputs.in_file)
        sidecar = None
        if self.inputs.sidecar or self.inputs.provenance_files:
            sidecar = {}
            for prov in self.inputs.provenance_files or []:
                sidecar.update(json.loads(Path(prov).read_text()))
            sidecar.update(self.inputs.sidecar or {})
        out = derivative_path(Path(self.inputs.output_dir), entities)
        self._results["out_file"] = str(publish(Path(self.inputs.in_file), out, sidecar))
        return runtime

