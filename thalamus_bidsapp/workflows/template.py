"""Template space: the T1w registered to a TemplateFlow template, the thalamus prior warped back, masks warped in.

Per session, right after the brain mask (before the segmentation methods,
which may use the prior):

1. the brain-masked T1w is registered to the template's 2 mm brain (antspyx
   affine + SyN); both composite transforms are published
   (``from-T1w_to-<template>_mode-image_xfm.h5`` and the inverse);
2. in the same node, the atlas's left and right thalamus probability maps are
   warped onto the T1w grid and published as ``hemi-{L,R}_space-T1w_label-thalamus_desc-prior_probseg``
   (the workflow's ``outputnode.thalamus_prior`` = [left, right]);
3. once the methods are done, every thalamus mask is resampled onto the
   template grid (linear, then >= 0.5) and published as
   ``space-<template>_label-thalamus_desc-<method>_mask``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from nipype.pipeline import engine as pe

from thalamus_bidsapp.interfaces.templateflow import TemplateFiles
from thalamus_bidsapp.workflows.outputs import publish_node

#: Sides of the prior, in the order of ``outputnode.thalamus_prior``.
SIDES = ("L", "R")


def _brain_masked(t1w: str, brain_mask: str, out: Path) -> Path:
    import nibabel as nib
    import numpy as np

    from thalamus_bidsapp.image.nifti import float32_like

    img = nib.load(t1w)
    data = np.asarray(img.dataobj, dtype=np.float32) * (np.asarray(nib.load(brain_mask).dataobj) > 0)
    nib.save(float32_like(data, img), str(out))
    return out


class _RegisterTemplateInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (also the prior's output grid)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    target = File(exists=True, mandatory=True, desc="the template's skull-stripped T1w (TemplateFlow)")
    schedule = traits.Enum("standard", "fast", usedefault=True, desc="registration schedule")
    prior = File(exists=True, mandatory=True, desc="4D probabilistic atlas in template space")
    prior_volumes = traits.Dict(mandatory=True, desc="side (L, R) -> 0-based volume of the atlas")


class _RegisterTemplateOutputSpec(TraitedSpec):
    forward = File(exists=True, desc="T1w -> template composite transform (HDF5)")
    inverse = File(exists=True, desc="template -> T1w composite transform (HDF5)")
    provenance_file = File(exists=True, desc="JSON: registration settings")
    thalamus_prior = traits.List(File(exists=True), desc="[left, right] prior probability maps on the T1w grid")


class RegisterToTemplate(SimpleInterface):
    """Brain-masked T1w to the template brain with antspyx (affine + SyN); the thalamus prior warped back.

    The prior is warped in the same process as the registration because
    loading antspyx in a fresh worker (about 1.5 s) costs more than the warp
    itself (about 0.5 s), and the prior is on the session's critical path
    (the QC and the lesion filling wait for it).
    """

    input_spec = _RegisterTemplateInputSpec
    output_spec = _RegisterTemplateOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.interfaces.ants import ants_to_template

        cwd = Path(runtime.cwd)
        brain = _brain_masked(self.inputs.t1w, self.inputs.brain_mask, cwd / "t1w_brain.nii.gz")
        result = ants_to_template(brain, Path(self.inputs.target), cwd / "forward.h5", cwd / "inverse.h5",
                                  schedule=self.inputs.schedule)
        self._results["forward"] = str(result.forward)
        self._results["inverse"] = str(result.inverse)
        self._results["provenance_file"] = str(cwd / "provenance.json")
        Path(self._results["provenance_file"]).write_text(json.dumps({"Registration": result.settings}, indent=2))
        self._results["thalamus_prior"] = [
            str(path) for path in warp_prior(Path(self.inputs.prior), self.inputs.prior_volumes, Path(self.inputs.t1w),
                                             result.inverse, result.forward, cwd)]
        return runtime


def warp_prior(prior: Path, volumes: dict, t1w: Path, inverse: Path, forward: Path, out_dir: Path) -> list[Path]:
    """The atlas's left and right thalamus maps on the T1w grid (linear), float32 in [0, 1]: [left, right].

    ``prior`` is the 4D atlas in template space, ``volumes`` maps each side
    (L, R) to its 0-based volume; ``inverse`` (template -> T1w) resamples and
    ``forward`` limits the work to the box the prior maps into.
    """
    import nibabel as nib

    from thalamus_bidsapp.image.prior import clip_probability, prior_sides
    from thalamus_bidsapp.interfaces.ants import ants_resample

    sides = prior_sides(nib.load(str(prior)), {side: int(volumes[side]) for side in SIDES})
    out_files = []
    for side in SIDES:
        in_template = out_dir / f"prior_{side}_template.nii.gz"
        nib.save(sides[side], str(in_template))
        warped = ants_resample(in_template, t1w, inverse, opposite_transform=forward)
        out = out_dir / f"prior_{side}.nii.gz"
        nib.save(clip_probability(warped), str(out))
        out_files.append(out)
    return out_files


class _MasksToTemplateInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records (none when no method ran)")
    forward = File(exists=True, mandatory=True, desc="T1w -> template composite transform")
    inverse = File(exists=True, mandatory=True, desc="template -> T1w composite transform (limits the work)")
    target = File(exists=True, mandatory=True, desc="the template grid")


class _MasksToTemplateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="JSON list of the resampled masks: method, contrast, file")


class MasksToTemplate(SimpleInterface):
    """Each thalamus mask onto the template grid: linear interpolation, then >= 0.5 (uint8 0/1)."""

    input_spec = _MasksToTemplateInputSpec
    output_spec = _MasksToTemplateOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.image.prior import binarise
        from thalamus_bidsapp.interfaces.ants import ants_resample
        from thalamus_bidsapp.methods.records import records_with_masks

        cwd = Path(runtime.cwd)
        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        resampled = []
        for record in records:
            method = record["method"]
            warped = ants_resample(Path(record["mask_file"]), Path(self.inputs.target), Path(self.inputs.forward),
                                   opposite_transform=Path(self.inputs.inverse))
            binary = cwd / f"{method}_mask.nii.gz"
            nib.save(binarise(warped, 0.5), str(binary))
            resampled.append({"method": method, "contrast": record["contrast"], "file": str(binary)})
        self._results["out_file"] = str(cwd / "template_masks.json")
        Path(self._results["out_file"]).write_text(json.dumps(resampled, indent=2))
        return runtime


class _PublishTemplateMasksInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="JSON list from MasksToTemplate")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="subject and session entities")
    template = traits.Str(mandatory=True, desc="template name (the space entity)")
    sidecar = traits.Dict(desc="sidecar fields shared by every mask")


class PublishTemplateMasks(SimpleInterface):
    """Publish the resampled masks as ``space-<template>_label-thalamus_desc-<method>_mask``."""

    input_spec = _PublishTemplateMasksInputSpec
    output_spec = _MasksToTemplateOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish

        output_dir = Path(self.inputs.output_dir)
        for item in json.loads(Path(self.inputs.in_file).read_text()):
            method = item["method"]
            entities = {**self.inputs.entities, "space": self.inputs.template, "label": "thalamus",
                        "desc": method, "suffix": "mask"}
            t1w_mask = derivative_path(output_dir, {**entities, "space": "T1w"})
            sidecar = {
                "Type": "ROI",
                "Description": f"The desc-{method} thalamus mask (left and right merged) resampled onto the "
                               f"{self.inputs.template} grid (2 mm): linear interpolation, then >= 0.5",
                "Method": method,
                "Contrast": item["contrast"],
                **(self.inputs.sidecar or {}),
            }
            sidecar["Sources"] = [f"bids::{t1w_mask.relative_to(output_dir).as_posix()}", *sidecar.get("Sources", [])]
            publish(Path(item["file"]), derivative_path(output_dir, entities), sidecar)
        self._results["out_file"] = self.inputs.in_file
        return runtime


def _uri(output_dir: Path, entities: dict) -> str:
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    return f"bids::{derivative_path(output_dir, entities).relative_to(output_dir).as_posix()}"


def init_template_wf(
    template: TemplateFiles,
    *,
    entities: dict,
    output_dir: Path,
    t1w_uri: str,
    schedule: str = "standard",
    omp_nthreads: int = 1,
    name: str = "template_wf",
) -> pe.Workflow:
    """Registration to ``template`` and the prior on the T1w grid; both published.

    inputnode: ``t1w`` (reoriented), ``brain_mask``. The masks in template space are added beside this
    workflow by :func:`add_template_masks` (so the prior, which the lesion filling before the methods
    reads, does not make the workflow wait for the methods: nipype needs a DAG of sub-workflows).
    outputnode: ``thalamus_prior`` ([left, right] probability maps on the T1w grid, before the
    methods run), ``forward`` and ``inverse`` (composite transforms).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["thalamus_prior", "forward", "inverse"]), name="outputnode")
    tpl = template.template
    tf_uri = {"target": f"templateflow:{template.target.name}", "prior": f"templateflow:{template.prior.name}"}
    brain_uri = _uri(output_dir, {**entities, "space": "T1w", "desc": "brain", "suffix": "mask"})
    xfm = {"forward": {**entities, "from": "T1w", "to": tpl, "mode": "image", "suffix": "xfm", "extension": ".h5"},
           "inverse": {**entities, "from": tpl, "to": "T1w", "mode": "image", "suffix": "xfm", "extension": ".h5"}}

    register = pe.Node(RegisterToTemplate(target=str(template.target), schedule=schedule, prior=str(template.prior),
                                          prior_volumes=template.prior_volumes),
                       name="register_template", n_procs=1, mem_gb=2)  # ITK single-threaded: resources.ITK_THREADS
    workflow.connect([
        (inputnode, register, [("t1w", "t1w"), ("brain_mask", "brain_mask")]),
        (register, outputnode, [("thalamus_prior", "thalamus_prior")]),
        (register, outputnode, [("forward", "forward"), ("inverse", "inverse")]),
    ])
    for direction in ("forward", "inverse"):
        source, target = ("T1w", tpl) if direction == "forward" else (tpl, "T1w")
        ds_xfm = publish_node(f"ds_xfm_{direction}", output_dir, xfm[direction], {
            "Description": f"ITK composite transform (affine + SyN displacement field) from {source} to {target}; "
                           f"resample {source} images onto the {target} grid with it (antsApplyTransforms)",
            "FromSpace": source, "ToSpace": target, "Template": tpl,
            "Sources": [t1w_uri, brain_uri, tf_uri["target"]],
        })
        workflow.connect([(register, ds_xfm, [(direction, "in_file"), ("provenance_file", "provenance_files")])])
    inverse_uri = _uri(output_dir, xfm["inverse"])
    _publish_prior(workflow, register, template, entities=entities, output_dir=output_dir,
                   sources=[tf_uri["prior"], inverse_uri, t1w_uri], t1w_uri=t1w_uri)

    return workflow


def add_template_masks(workflow: pe.Workflow, template: TemplateFiles, template_wf: pe.Workflow,
                       records: tuple[pe.Node | pe.Workflow, str], *, entities: dict, output_dir: Path) -> None:
    """Each method's thalamus mask on the template grid, published (``space-<template>``), in ``workflow``.

    ``records``: the (node, field) giving the methods' mask records; ``template_wf``: from :func:`init_template_wf`.
    """
    tpl = template.template
    forward_uri = _uri(output_dir, {**entities, "from": "T1w", "to": tpl, "mode": "image", "suffix": "xfm",
                                    "extension": ".h5"})
    masks = pe.Node(MasksToTemplate(target=str(template.target)), name="masks_to_template")
    ds_masks = pe.Node(PublishTemplateMasks(output_dir=str(output_dir), entities=entities, template=tpl,
                                            sidecar={"SpatialReference": f"templateflow:{template.target.name}",
                                                     "Sources": [forward_uri]}),
                       name="ds_template_masks", run_without_submitting=True)
    workflow.connect([
        (records[0], masks, [(records[1], "record_files")]),
        (template_wf, masks, [("outputnode.forward", "forward"), ("outputnode.inverse", "inverse")]),
        (masks, ds_masks, [("out_file", "in_file")]),
    ])


def _publish_prior(workflow: pe.Workflow, register: pe.Node, template: TemplateFiles, *, entities: dict,
                   output_dir: Path, sources: list[str], t1w_uri: str) -> None:
    """``hemi-{L,R}_space-T1w_label-thalamus_desc-prior_probseg`` with their sidecars."""
    from thalamus_bidsapp.interfaces.templateflow import template_settings

    labels = template_settings()["prior"]["labels"]
    for index, side in enumerate(SIDES):
        ds_prior = publish_node(f"ds_prior_{side}", output_dir, {
            **entities, "hemi": side, "space": "T1w", "label": "thalamus", "desc": "prior", "suffix": "probseg",
            "extension": ".nii.gz"}, {
            "Description": f"Thalamus prior ({'left' if side == 'L' else 'right'}): the probability (0..1) of "
                           f"{template.prior_atlas} '{labels[side]}', warped from {template.template} onto the "
                           "T1w grid (linear interpolation)",
            "Atlas": template.prior_atlas, "AtlasDescription": template.prior_description,
            "AtlasLabel": labels[side], "AtlasVolume": template.prior_volumes[side],
            "Template": template.template, "TemplateFile": template.prior.name,
            "Transform": sources[1], "Hemisphere": side, "Units": "probability",
            "Sources": sources, "SpatialReference": t1w_uri,
        })
        pick = pe.Node(niu.Select(index=[index]), name=f"select_prior_{side}", run_without_submitting=True)
        workflow.connect([(register, pick, [("thalamus_prior", "inlist")]), (pick, ds_prior, [("out", "in_file")])])
