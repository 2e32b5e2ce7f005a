"""The thalamus segmentation methods of one session, as a nipype workflow."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.interfaces.segment import (
    DBSegmentThalamus,
    FirstThalamus,
    MeshNetThalamus,
    MindGlideThalamus,
)
from thalamus_bidsapp.interfaces.steps import FreeSurferThalamus, ReconAll
from thalamus_bidsapp.methods import MethodPlan

#: The workflow's output: mask records of every method (see interfaces/segment.py).
OUTPUT_FIELDS = ["record_files", "icv_provenance"]


def init_segmentation_wf(
    session: SessionInputs,
    plan: MethodPlan,
    *,
    omp_nthreads: int,
    name: str = "segmentation_wf",
) -> pe.Workflow:
    """Run each planned method on the reoriented T1w (and registered FLAIR/R1 for MindGlide).

    Inputs (``inputnode``): ``t1w`` (reoriented T1w, the reference grid),
    ``brain_mask``, ``flair`` and ``r1`` (registered onto the T1w grid;
    optional). Outputs (``outputnode``): ``record_files``, one mask record per
    mask, and ``icv_provenance`` (FreeSurfer's eTIV when FreeSurfer ran).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "brain_mask", "flair", "r1"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    # (node, output field) of each record producer, merged at the end.
    producers: list[tuple[pe.Node, str]] = []
    envelopes: dict[str, pe.Node] = {}

    if "freesurfer" in plan.run:
        fs_thalamus = pe.Node(FreeSurferThalamus(), name="fs_thalamus")
        workflow.connect(inputnode, "t1w", fs_thalamus, "reference")
        if plan.recon_all is None:
            fs_thalamus.inputs.subject_dir = str(plan.fs_subject_dir)
        else:
            recon_all = pe.Node(
                ReconAll(t1w=str(session.t1w), subject_id=plan.recon_all.subject_id,
                         subjects_dir=str(plan.recon_all.subjects_dir),
                         license_file=str(plan.recon_all.license_file), nthreads=omp_nthreads),
                name="recon_all", n_procs=omp_nthreads, mem_gb=8,
            )
            if session.t2w is not None:
                recon_all.inputs.t2w = str(session.t2w)
            workflow.connect(recon_all, "subject_dir", fs_thalamus, "subject_dir")
        workflow.connect(fs_thalamus, "provenance_file", outputnode, "icv_provenance")
        producers.append((fs_thalamus, "record_file"))
        envelopes["freesurfer"] = fs_thalamus

    if "first" in plan.run:
        first = pe.Node(FirstThalamus(), name="first_thalamus", mem_gb=2)
        workflow.connect([(inputnode, first, [("t1w", "t1w"), ("brain_mask", "brain_mask")])])
        producers.append((first, "record_file"))
        envelopes["first"] = first

    if "dbsegment" in plan.run:
        dbsegment = pe.Node(DBSegmentThalamus(), name="dbsegment_thalamus", n_procs=omp_nthreads, mem_gb=6)
        if plan.dbsegment_model is not None:
            dbsegment.inputs.model_folder = str(plan.dbsegment_model)
        workflow.connect(inputnode, "t1w", dbsegment, "t1w")
        producers.append((dbsegment, "record_file"))
        envelopes["dbsegment"] = dbsegment

    if "meshnet" in plan.run:
        meshnet = pe.Node(MeshNetThalamus(model_dir=str(plan.meshnet_model), threads=omp_nthreads),
                          name="meshnet_thalamus", n_procs=omp_nthreads, mem_gb=2)
        workflow.connect(inputnode, "t1w", meshnet, "t1w")
        producers.append((meshnet, "record_file"))
        envelopes["meshnet"] = meshnet

    if "mindglide" in plan.run:
        mindglide = pe.Node(
            MindGlideThalamus(model_path=str(plan.mindglide_model), device=plan.mindglide_device),
            name="mindglide_thalamus", n_procs=omp_nthreads, mem_gb=6,
        )
        workflow.connect([(inputnode, mindglide, [("t1w", "t1w"), ("flair", "flair"), ("r1", "r1")])])
        workflow.connect(envelopes[plan.envelope], "record_file", mindglide, "envelope_record")
        producers.append((mindglide, "record_files"))

    merge = pe.Node(niu.Merge(max(len(producers), 1), ravel_inputs=True), name="merge_records",
                    run_without_submitting=True)
    for index, (node, field) in enumerate(producers, start=1):
        workflow.connect(node, field, merge, f"in{index}")
    workflow.connect(merge, "out", outputnode, "record_files")
    return workflow
