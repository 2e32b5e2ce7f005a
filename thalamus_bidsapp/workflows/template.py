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

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.interfaces.template import (
    SIDES,
    MasksToTemplate,
    PublishTemplateMasks,
    RegisterToTemplate,
    output_uri,
)
from thalamus_bidsapp.tools.templateflow import TemplateFiles
from thalamus_bidsapp.workflows.outputs import publish_node


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
    brain_uri = output_uri(output_dir, {**entities, "space": "T1w", "desc": "brain", "suffix": "mask"})
    xfm = {"forward": {**entities, "from": "T1w", "to": tpl, "mode": "image", "suffix": "xfm", "extension": ".h5"},
           "inverse": {**entities, "from": tpl, "to": "T1w", "mode": "image", "suffix": "xfm", "extension": ".h5"}}

    register = pe.Node(RegisterToTemplate(target=str(template.target), schedule=schedule, prior=str(template.prior),
                                          prior_volumes=template.prior_volumes),
                       name="register_template", n_procs=1, mem_gb=2)  # ITK single-threaded: tools.threads.ITK_THREADS
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
    inverse_uri = output_uri(output_dir, xfm["inverse"])
    _publish_prior(workflow, register, template, entities=entities, output_dir=output_dir,
                   sources=[tf_uri["prior"], inverse_uri, t1w_uri], t1w_uri=t1w_uri)

    return workflow


def add_template_masks(workflow: pe.Workflow, template: TemplateFiles, template_wf: pe.Workflow,
                       records: tuple[pe.Node | pe.Workflow, str], *, entities: dict, output_dir: Path) -> None:
    """Each method's thalamus mask on the template grid, published (``space-<template>``), in ``workflow``.

    ``records``: the (node, field) giving the methods' mask records; ``template_wf``: from :func:`init_template_wf`.
    """
    tpl = template.template
    forward_uri = output_uri(output_dir, {**entities, "from": "T1w", "to": tpl, "mode": "image", "suffix": "xfm",
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
    from thalamus_bidsapp.tools.templateflow import template_settings

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
