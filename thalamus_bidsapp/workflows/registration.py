"""FLAIR or R1 map into T1w space for one session, as a nipype workflow."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.interfaces.images import Reorient, SkullStripCheck
from thalamus_bidsapp.interfaces.registration import RegisterToT1w
from thalamus_bidsapp.workflows.outputs import publish_node

#: What each modality becomes on the T1w grid (the desc entity of the published image).
OUTPUT_DESC = {"FLAIR": "preproc", "R1map": "scaled"}
#: The images whose sidecar says whether they are skull-stripped (the R1 map is rescaled within the brain).
SKULL_STRIPPED_KNOWN = ("FLAIR",)


def init_registration_wf(
    moving: Path,
    modality: str,
    *,
    entities: dict,
    output_dir: Path,
    sources: list[str],
    t1w_uri: str,
    flirt_cutoff: float,
    ants_cutoff: float,
    omp_nthreads: int,
    name: str,
) -> pe.Workflow:
    """Reorient ``moving``, register it to the T1w, publish the image and transform (the QC figure is drawn by the report).

    Inputs (``inputnode``): ``t1w`` (reoriented T1w) and ``brain_mask``.
    Outputs (``outputnode``): ``out_file``, the registered image on the T1w
    grid (for R1 maps, scaled to 0..1000 in the brain; undefined when the QC
    rule excludes it), ``qc_file``, the QC rows of every strategy, ``transform``
    (the selected transform; undefined when excluded) and ``moving`` (the
    reoriented image the transform applies to).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "qc_file", "transform", "moving"]),
                         name="outputnode")
    reorient = pe.Node(Reorient(in_file=str(moving)), name="reorient")
    register = pe.Node(
        RegisterToT1w(modality=modality, flirt_cutoff=flirt_cutoff, ants_cutoff=ants_cutoff,
                      scale_r1=modality == "R1map"),
        name="register", n_procs=1, mem_gb=4,  # FLIRT and ITK run single-threaded (tools.threads.ITK_THREADS)
    )
    workflow.connect([
        (reorient, register, [("out_file", "moving")]),
        (inputnode, register, [("t1w", "t1w"), ("brain_mask", "brain_mask")]),
        (register, outputnode, [("out_file", "out_file"), ("qc_file", "qc_file"), ("transform", "transform")]),
        (reorient, outputnode, [("out_file", "moving")]),
    ])
    shared = {"Sources": sources, "SpatialReference": t1w_uri}
    ds_image = publish_node("ds_image", output_dir,
                        {**entities, "space": "T1w", "desc": OUTPUT_DESC[modality], "suffix": modality}, shared)
    ds_transform = publish_node("ds_transform", output_dir,
                            {**entities, "from": modality, "to": "T1w", "mode": "image", "suffix": "xfm"},
                            {"Sources": sources})
    workflow.connect([
        (reorient, register, [("record_file", "reorient_record")]),
        (register, ds_image, [("out_file", "in_file")]),
        (register, ds_transform, [("transform", "in_file"), ("provenance_file", "provenance_files")]),
    ])
    if modality in SKULL_STRIPPED_KNOWN:
        # A preprocessed anatomical image states whether it is skull-stripped: as its input was (measured).
        skullstrip = pe.Node(SkullStripCheck(), name="skullstrip", mem_gb=1)
        workflow.connect([
            (register, skullstrip, [("out_file", "in_file"), ("provenance_file", "in_provenance")]),
            (inputnode, skullstrip, [("brain_mask", "brain_mask")]),
            (skullstrip, ds_image, [("provenance_file", "provenance_files")]),
        ])
    else:
        workflow.connect(register, "provenance_file", ds_image, "provenance_files")
    return workflow

