"""Participant-level nipype workflows: one sub-workflow per subject and session."""

from __future__ import annotations

import re
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.derivatives import bids_uri
from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.bidsio.tables import volumes_columns
from thalamus_bidsapp.interfaces.steps import (
    BrainMask,
    FreeSurferThalamus,
    PublishDerivative,
    ReconAll,
    Reorient,
    SessionVolumes,
)
from thalamus_bidsapp.methods import MethodPlan

THALAMUS_SIDECAR = {"Type": "ROI", "Description": "Thalamus, left and right merged, binary mask on the T1w grid"}


def workflow_name(session: SessionInputs) -> str:
    """A valid nipype name for a session's workflow, e.g. ``sub_01_ses_1_wf``."""
    return re.sub(r"[^0-9a-zA-Z_]", "_", session.name) + "_wf"


def init_participant_wf(
    sessions: list[SessionInputs],
    plans: dict[str, MethodPlan],
    *,
    bids_dir: Path,
    output_dir: Path,
    work_dir: Path,
    crash_root: Path,
    omp_nthreads: int,
    name: str = "thalamus_bidsapp_wf",
) -> pe.Workflow:
    """The top workflow: independent session workflows, run side by side.

    Each session's nodes write crash reports into ``crash_root/<session name>``
    so a failure is traced to its session after the run.
    """
    workflow = pe.Workflow(name=name, base_dir=str(work_dir))
    for session in sessions:
        session_wf = init_session_wf(
            session,
            plans[session.name],
            bids_dir=bids_dir,
            output_dir=output_dir,
            omp_nthreads=omp_nthreads,
            name=workflow_name(session),
        )
        crash_dir = str(Path(crash_root) / session.name)
        for node_name in session_wf.list_node_names():
            node = session_wf.get_node(node_name)
            node.config = {"execution": {"crashdump_dir": crash_dir, "crashfile_format": "txt"}}
        workflow.add_nodes([session_wf])
    return workflow


def init_session_wf(
    session: SessionInputs,
    plan: MethodPlan,
    *,
    bids_dir: Path,
    output_dir: Path,
    omp_nthreads: int,
    name: str,
) -> pe.Workflow:
    """One session: reorient, brain mask, thalamus masks, volumes, all published.

    Parameters
    ----------
    session
        The session's input files (a T1w is required).
    plan
        Which methods run for this session, and their inputs.
    bids_dir, output_dir
        The raw dataset (for provenance URIs) and the output dataset.
    omp_nthreads
        Threads for multithreaded steps (the networks).
    """
    workflow = pe.Workflow(name=name)
    ents = session.entities
    raw_t1w = bids_uri(session.t1w, bids_dir, "raw")

    reorient_t1w = pe.Node(Reorient(in_file=str(session.t1w)), name="reorient_t1w")
    brain_mask = pe.Node(BrainMask(threads=omp_nthreads), name="brain_mask", n_procs=omp_nthreads, mem_gb=3)
    workflow.connect(reorient_t1w, "out_file", brain_mask, "in_file")

    t1w_uri = _uri(output_dir, ents, desc="preproc", suffix="T1w")
    ds_t1w = _publish(
        "ds_t1w", output_dir, {**ents, "desc": "preproc", "suffix": "T1w"},
        {"Sources": [raw_t1w], "SkullStripped": False,
         "Description": "The input T1w reoriented to RAS+: the reference grid of every space-T1w output"},
    )
    workflow.connect([
        (reorient_t1w, ds_t1w, [("out_file", "in_file"), ("record_file", "provenance_files")]),
    ])
    ds_brain_mask = _publish(
        "ds_brain_mask", output_dir, {**ents, "space": "T1w", "desc": "brain", "suffix": "mask"},
        {"Type": "Brain", "Sources": [t1w_uri], "SpatialReference": t1w_uri,
         "Description": "T1w brain mask"},
    )
    workflow.connect(brain_mask, "out_file", ds_brain_mask, "in_file")
    workflow.connect(brain_mask, "provenance_file", ds_brain_mask, "provenance_files")

    masks: list[tuple[pe.Node, str, str, str]] = []  # (node, field, method, contrast)

    if "freesurfer" in plan.run:
        fs_thalamus = pe.Node(FreeSurferThalamus(), name="fs_thalamus")
        workflow.connect(reorient_t1w, "out_file", fs_thalamus, "reference")
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
        masks.append((fs_thalamus, "out_file", "freesurfer", "T1w"))

    volumes = pe.Node(
        SessionVolumes(methods=[m[2] for m in masks], contrasts=[m[3] for m in masks]), name="volumes"
    )
    workflow.connect(brain_mask, "out_file", volumes, "brain_mask")
    if "freesurfer" in plan.run:
        workflow.connect(fs_thalamus, "provenance_file", volumes, "icv_provenance")

    if masks:
        merge = pe.Node(niu.Merge(len(masks)), name="merge_masks")
        for index, (node, field, method, contrast) in enumerate(masks, start=1):
            workflow.connect(node, field, merge, f"in{index}")
            ds_mask = _publish(
                f"ds_mask_{method}", output_dir,
                {**ents, "space": "T1w", "label": "thalamus", "desc": method, "suffix": "mask"},
                {**THALAMUS_SIDECAR, "Method": method, "Contrast": contrast, "Sources": [t1w_uri],
                 "SpatialReference": t1w_uri},
            )
            workflow.connect(node, field, ds_mask, "in_file")
            workflow.connect(node, "provenance_file", ds_mask, "provenance_files")
        workflow.connect(merge, "out", volumes, "mask_files")

    ds_volumes = _publish(
        "ds_volumes", output_dir, {**ents, "label": "thalamus", "suffix": "volumes", "extension": ".tsv"},
        volumes_columns(),
    )
    workflow.connect(volumes, "out_file", ds_volumes, "in_file")
    return workflow


def _publish(name: str, output_dir: Path, entities: dict, sidecar: dict) -> pe.Node:
    return pe.Node(
        PublishDerivative(output_dir=str(output_dir), entities=entities, sidecar=sidecar),
        name=name,
        run_without_submitting=True,
    )


def _uri(output_dir: Path, ents: dict, **more) -> str:
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    path = derivative_path(output_dir, {**ents, **more})
    return f"bids::{path.relative_to(output_dir).as_posix()}"
