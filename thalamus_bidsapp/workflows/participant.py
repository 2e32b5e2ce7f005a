"""Participant-level nipype workflows: one sub-workflow per subject and session."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.checksums import files_digest
from thalamus_bidsapp.bidsio.derivatives import bids_uri
from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.bidsio.tables import volumes_columns
from thalamus_bidsapp.interfaces.images import BrainMask, Reorient, SkullStripCheck
from thalamus_bidsapp.interfaces.lesions import SuffixRecords
from thalamus_bidsapp.interfaces.publish import PublishMasks
from thalamus_bidsapp.interfaces.qc import SessionQC
from thalamus_bidsapp.interfaces.volumes import ConcatTables, SessionVolumes
from thalamus_bidsapp.methods import MethodPlan
from thalamus_bidsapp.methods.records import ReadsOutsideFiles
from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX
from thalamus_bidsapp.qc.session import QC_COLUMN_DESCRIPTIONS as SEGMENTATION_QC_COLUMNS
from thalamus_bidsapp.tools.registration import QC_COLUMN_DESCRIPTIONS
from thalamus_bidsapp.workflows.context import RunContext, SessionContext
from thalamus_bidsapp.workflows.lesions import LesionProvider, add_lesion_nodes, lesion_provider
from thalamus_bidsapp.workflows.outputs import publish_node
from thalamus_bidsapp.workflows.registration import init_registration_wf
from thalamus_bidsapp.workflows.segmentation import filled_methods, init_segmentation_wf, unfilled_plan
from thalamus_bidsapp.workflows.template import add_template_masks, init_template_wf

LOGGER = logging.getLogger(__name__)


def workflow_name(session: SessionInputs) -> str:
    """A valid nipype name for a session's workflow, e.g. ``sub_01_ses_1_wf``."""
    return re.sub(r"[^0-9a-zA-Z_]", "_", session.name) + "_wf"


def init_participant_wf(
    sessions: list[SessionInputs],
    plans: dict[str, MethodPlan],
    run: RunContext,
    *,
    session_contexts: Mapping[str, SessionContext] | None = None,
    name: str = "thalamus_bidsapp_wf",
) -> pe.Workflow:
    """The top workflow: independent session workflows, run side by side.

    Workflow Graph
        One ``<session>_wf`` per session (:func:`init_session_wf`), not connected to each other.

    Parameters
    ----------
    sessions
        The sessions' input files.
    plans
        Which methods run for each session (by session name).
    run
        The run's settings (:class:`~thalamus_bidsapp.workflows.context.RunContext`).
    session_contexts
        Each session's staging folder and input record, by session name
        (default: published into ``run.output_dir``, no record).

    Each session's nodes write crash reports into ``run.crash_root/<session name>``
    so a failure is traced to its session after the run.
    """
    workflow = pe.Workflow(name=name, base_dir=str(run.work_dir))
    for session in sessions:
        context = (session_contexts or {}).get(session.name, SessionContext())
        session_wf = init_session_wf(session, plans[session.name], run, context, name=workflow_name(session))
        crash_dir = str(Path(run.crash_root) / session.name)
        for node_name in session_wf.list_node_names():
            node = session_wf.get_node(node_name)
            node.config = {"execution": {"crashdump_dir": crash_dir, "crashfile_format": "txt"}}
            if isinstance(node.interface, ReadsOutsideFiles):
                node.inputs.content_digest = files_digest(node.interface.outside_files(),
                                                          Path(run.work_dir) / "digests")
        workflow.add_nodes([session_wf])
    return workflow


def init_session_wf(
    session: SessionInputs,
    plan: MethodPlan,
    run: RunContext,
    context: SessionContext | None = None,
    *,
    name: str,
) -> pe.Workflow:
    """One session: reorient, brain mask, template space and prior, thalamus masks, volumes, all published.

    Workflow Graph
        ``reorient_t1w`` -> ``brain_mask`` -> [``template_wf``: registration to the template, prior] ->
        ``register_{flair,r1map}_wf`` -> [lesion mask, ``lesion_fill``] -> ``segmentation_wf`` (one node per
        method; ``segmentation_unfilled_wf`` with ``--lesion-filling both``) -> ``volumes`` ->
        ``segmentation_qc`` -> ``ds_*`` (published into ``context.publish_dir``).

    Parameters
    ----------
    session
        The session's input files (a T1w is required).
    plan
        Which methods run for this session, and their inputs.
    run
        The run's settings: threads, registration cut-offs, lesion filling
        (``auto``: fill the T1w's lesions, when the session has a lesion mask,
        before the methods that segment the T1w; ``off``: never; ``both``: also
        run those methods on the unfilled T1w, masks ``desc-<mask>Unfilled``),
        lesion source, template, QC thresholds, dataset roots.
    context
        Where the session publishes (default: ``run.output_dir``) and its
        inputs' preflight record, for the sidecars.

    Outputs
    -------
    outputnode.thalamus_prior
        [left, right]: the prior's probability maps on the T1w grid, ready
        after the brain mask and the template registration, before the
        segmentation methods (empty without a template). The QC node
        ``segmentation_qc`` takes it; without a template the prior checks are
        recorded as skipped.
    outputnode.template_forward, outputnode.template_inverse
        The T1w <-> template transforms (empty without a template).
    """
    context = context or SessionContext()
    output_dir = context.publish_dir or run.output_dir
    input_record = dict(context.input_record) if context.input_record else None
    omp_nthreads = run.omp_nthreads
    dataset_roots = dict(run.dataset_roots)
    workflow = pe.Workflow(name=name)
    ents = session.entities
    originals = dict(run.original_files)
    raw_t1w = source_uri(originals.get(session.t1w, session.t1w), dataset_roots)
    geometry = {"InputGeometry": input_record} if input_record else {}

    reorient_t1w = pe.Node(Reorient(in_file=str(session.t1w)), name="reorient_t1w")
    brain_mask = pe.Node(BrainMask(threads=omp_nthreads), name="brain_mask", n_procs=omp_nthreads, mem_gb=3)
    workflow.connect(reorient_t1w, "out_file", brain_mask, "in_file")

    t1w_uri = _publish_t1w(workflow, reorient_t1w, brain_mask, output_dir, ents,
                           {"Sources": [raw_t1w], **geometry})
    ds_brain_mask = publish_node(
        "ds_brain_mask", output_dir, {**ents, "space": "T1w", "desc": "brain", "suffix": "mask"},
        {"Type": "Brain", "Sources": [t1w_uri], "SpatialReference": t1w_uri,
         "Description": "T1w brain mask"},
    )
    workflow.connect(brain_mask, "out_file", ds_brain_mask, "in_file")
    workflow.connect(brain_mask, "provenance_file", ds_brain_mask, "provenance_files")

    provider = _lesion_provider(session, plan, run.lesion_source, omp_nthreads)
    filling = run.lesion_filling != "off" and (session.lesion is not None or provider is not None)
    segmentations = _add_segmentations(workflow, session, plan, reorient_t1w, brain_mask, filling=filling,
                                       both=run.lesion_filling == "both", omp_nthreads=omp_nthreads)
    segmentation = segmentations[0]
    template_wf = _add_template_space(workflow, run, reorient_t1w, brain_mask, entities=ents,
                                      output_dir=output_dir, t1w_uri=t1w_uri)

    registrations, registration_qc = _add_registrations(
        workflow, session, run, reorient_t1w, brain_mask, segmentations, output_dir=output_dir, t1w_uri=t1w_uri)
    lesions = None
    if session.lesion is not None or provider is not None:
        lesions = add_lesion_nodes(workflow, session, reorient_t1w, brain_mask, registrations.get("flair"),
                                   fill=filling, output_dir=output_dir, t1w_uri=t1w_uri, provider=provider,
                                   with_prior=template_wf is not None,
                                   lesion_uri=source_uri(session.lesion or session.t1w, dataset_roots))
        if filling:
            workflow.connect(lesions.fill, "out_file", segmentation, "inputnode.t1w")
            if template_wf is not None:
                workflow.connect(template_wf, "outputnode.thalamus_prior", lesions.fill, "thalamus_prior")
    records, volumes = _add_volumes_and_masks(
        workflow, segmentations, brain_mask, lesions, filled=filled_methods(plan), output_dir=output_dir,
        entities=ents, sidecar={"Sources": [t1w_uri], "SpatialReference": t1w_uri, **geometry})
    if template_wf is not None:
        # Every published mask, the desc-<mask>Unfilled ones of --lesion-filling both included.
        add_template_masks(workflow, run.template, template_wf, (records, "out"), entities=ents, output_dir=output_dir)
    segmentation_qc = _add_segmentation_qc(workflow, (records, "out"), volumes, registration_qc,
                                           output_dir=output_dir, entities=ents, thresholds=run.qc_thresholds,
                                           template_wf=template_wf)
    if lesions is not None and lesions.fill is not None:
        workflow.connect(lesions.fill, "provenance_file", segmentation_qc, "fill_provenance")
    ds_volumes = publish_node(
        "ds_volumes", output_dir, {**ents, "label": "thalamus", "suffix": "volumes", "extension": ".tsv"},
        {**volumes_columns(), **geometry},
    )
    workflow.connect(segmentation_qc, "volumes_file", ds_volumes, "in_file")
    return workflow


def _publish_t1w(workflow: pe.Workflow, reorient_t1w: pe.Node, brain_mask: pe.Node, output_dir: Path,
                 entities: dict, sidecar: dict) -> str:
    """Publish ``desc-preproc_T1w``, its ``SkullStripped`` measured (the app never strips it); return its URI."""
    ds_t1w = publish_node(
        "ds_t1w", output_dir, {**entities, "desc": "preproc", "suffix": "T1w"},
        {**sidecar, "Description": "The input T1w reoriented to RAS+: the reference grid of every space-T1w output"},
    )
    skullstrip_t1w = pe.Node(SkullStripCheck(), name="skullstrip_t1w", mem_gb=1)
    workflow.connect([
        (reorient_t1w, skullstrip_t1w, [("out_file", "in_file"), ("record_file", "in_provenance")]),
        (brain_mask, skullstrip_t1w, [("out_file", "brain_mask")]),
        (reorient_t1w, ds_t1w, [("out_file", "in_file")]),
        (skullstrip_t1w, ds_t1w, [("provenance_file", "provenance_files")]),
    ])
    return _uri(output_dir, entities, desc="preproc", suffix="T1w")


def _lesion_provider(session: SessionInputs, plan: MethodPlan, source: str, omp_nthreads: int):
    """The method offering the lesion mask of a session without a derivatives mask (``--lesion-source``), or None."""
    if session.lesion is not None:
        return None
    method = lesion_provider(source, plan)
    return LesionProvider(method, plan.settings_of(method.name), omp_nthreads) if method is not None else None


def _add_segmentations(workflow: pe.Workflow, session: SessionInputs, plan: MethodPlan, reorient_t1w: pe.Node,
                       brain_mask: pe.Node, *, filling: bool, both: bool, omp_nthreads: int) -> list[pe.Workflow]:
    """The segmentation workflow (on the filled T1w when ``filling``) and, with ``both``, the one on the unfilled T1w.

    The filled T1w is connected by the caller (the lesion nodes); every other T1w input here.
    """
    segmentations = [init_segmentation_wf(session, plan, omp_nthreads=omp_nthreads, lesion_filled=filling)]
    if filling and both and not unfilled_plan(plan).run:
        LOGGER.info("%s: --lesion-filling both: no planned method segments the T1w here (%s), so there is no "
                    "unfilled run", session.name, ", ".join(plan.run))
    elif filling and both:
        segmentations.append(init_segmentation_wf(session, unfilled_plan(plan), omp_nthreads=omp_nthreads,
                                                  name="segmentation_unfilled_wf"))
    for seg in segmentations:
        workflow.connect([
            (reorient_t1w, seg, [("out_file", "inputnode.unfilled_t1w")]),
            (brain_mask, seg, [("out_file", "inputnode.brain_mask")]),
        ])
    if not filling or len(segmentations) > 1:
        workflow.connect(reorient_t1w, "out_file", segmentations[-1], "inputnode.t1w")
    return segmentations


def _add_volumes_and_masks(workflow: pe.Workflow, segmentations: list[pe.Workflow], brain_mask: pe.Node,
                           lesions, *, filled: tuple[str, ...], output_dir: Path, entities: dict,
                           sidecar: dict) -> tuple[pe.Node, pe.Node]:
    """The session's volumes table and published masks, from every segmentation's records.

    Returns the node merging the records (``out``) and the volumes table node.
    """
    records = _session_records(workflow, segmentations)
    segmentation = segmentations[0]
    # Small bookkeeping steps run in the main process: no hand-over to a worker, no wait for the next poll.
    volumes = pe.Node(SessionVolumes(filled_methods=list(filled)), name="volumes", run_without_submitting=True)
    workflow.connect([
        (brain_mask, volumes, [("out_file", "brain_mask")]),
        (records, volumes, [("out", "record_files")]),
        (segmentation, volumes, [("outputnode.icv_provenance", "icv_provenance")]),
    ])
    ds_masks = pe.Node(PublishMasks(output_dir=str(output_dir), entities=entities, filled_methods=list(filled),
                                    sidecar=sidecar), name="ds_masks", run_without_submitting=True)
    workflow.connect(records, "out", ds_masks, "record_files")
    if lesions is not None:
        workflow.connect(lesions.mask, "out_file", volumes, "lesion_mask")
        if lesions.fill is not None:
            ds_masks.inputs.filled_t1w_uri = lesions.filled_uri
            workflow.connect([(lesions.fill, volumes, [("provenance_file", "fill_provenance")]),
                              (lesions.fill, ds_masks, [("provenance_file", "fill_provenance")])])
    return records, volumes


def _session_records(workflow: pe.Workflow, segmentations: list[pe.Workflow]) -> pe.Node:
    """One list of the mask records of every segmentation (the unfilled run's renamed ``desc-<mask>Unfilled``)."""
    merge = pe.Node(niu.Merge(len(segmentations), ravel_inputs=True), name="merge_session_records",
                    run_without_submitting=True)
    workflow.connect(segmentations[0], "outputnode.record_files", merge, "in1")
    if len(segmentations) > 1:
        rename = pe.Node(SuffixRecords(suffix=UNFILLED_SUFFIX), name="rename_unfilled_records",
                         run_without_submitting=True)
        workflow.connect([(segmentations[1], rename, [("outputnode.record_files", "record_files")]),
                          (rename, merge, [("record_files", "in2")])])
    return merge


def _add_segmentation_qc(workflow: pe.Workflow, records: tuple[pe.Node | pe.Workflow, str], volumes: pe.Node,
                         registration_qc: pe.Node | None, *, output_dir: Path, entities: dict,
                         thresholds: Mapping, template_wf: pe.Workflow | None = None) -> pe.Node:
    """The QC checks of every mask, published as ``*_label-thalamus_desc-segmentation_qc.tsv``.

    ``records``: the (node, field) giving every mask record of the session.

    Returns the ``segmentation_qc`` node: its ``volumes_file`` is the volumes
    table with ``qc_status``; the thalamus prior goes to its ``thalamus_prior``
    input ([left, right], from the template workflow's ``outputnode.thalamus_prior``).
    """
    ents = entities
    # A worker's step, not the main process's: it reads every mask of the session (seconds on a large grid).
    segmentation_qc = pe.Node(SessionQC(thresholds=dict(thresholds)),
                              name="segmentation_qc", mem_gb=1)
    workflow.connect([
        (records[0], segmentation_qc, [(records[1], "record_files")]),
        (volumes, segmentation_qc, [("out_file", "volumes_file")]),
    ])
    if registration_qc is not None:
        workflow.connect(registration_qc, "out_file", segmentation_qc, "registration_qc")
    if template_wf is not None:
        workflow.connect(template_wf, "outputnode.thalamus_prior", segmentation_qc, "thalamus_prior")
    ds_segmentation_qc = publish_node(
        "ds_segmentation_qc", output_dir,
        {**ents, "label": "thalamus", "desc": "segmentation", "suffix": "qc", "extension": ".tsv"},
        SEGMENTATION_QC_COLUMNS,
    )
    workflow.connect(segmentation_qc, "qc_file", ds_segmentation_qc, "in_file")
    return segmentation_qc


def _add_template_space(workflow: pe.Workflow, run: RunContext, reorient_t1w: pe.Node,
                        brain_mask: pe.Node, *, entities: dict, output_dir: Path, t1w_uri: str) -> pe.Workflow | None:
    """The session's ``outputnode`` (the prior, the template transforms) and, with a template, what fills it.

    Returns the template workflow (None without a template).
    """
    outputnode = pe.Node(niu.IdentityInterface(fields=["thalamus_prior", "template_forward", "template_inverse"]),
                         name="outputnode")
    if run.template is None:
        workflow.add_nodes([outputnode])
        return None
    template_wf = init_template_wf(run.template, entities=entities, output_dir=output_dir, t1w_uri=t1w_uri,
                                   schedule=run.template_schedule, omp_nthreads=run.omp_nthreads)
    workflow.connect([
        (reorient_t1w, template_wf, [("out_file", "inputnode.t1w")]),
        (brain_mask, template_wf, [("out_file", "inputnode.brain_mask")]),
        (template_wf, outputnode, [("outputnode.thalamus_prior", "thalamus_prior"),
                                   ("outputnode.forward", "template_forward"),
                                   ("outputnode.inverse", "template_inverse")]),
    ])
    return template_wf


def _add_registrations(workflow: pe.Workflow, session: SessionInputs, run: RunContext, reorient_t1w: pe.Node,
                       brain_mask: pe.Node, segmentations: list[pe.Workflow], *, output_dir: Path,
                       t1w_uri: str) -> tuple[dict[str, pe.Workflow], pe.Node | None]:
    """FLAIR and R1 onto the T1w (each present one), into the segmentations, and the session's QC table.

    Returns the registration workflow of each present role (``flair``, ``r1map``) and the node of the
    registration QC table (None when no image is registered).
    """
    ents = session.entities
    originals = run.original_files
    qc_sources = []
    registrations: dict[str, pe.Workflow] = {}
    for role, modality in (("flair", "FLAIR"), ("r1map", "R1map")):
        moving = getattr(session, role)
        if moving is None:
            continue
        registration = init_registration_wf(
            moving, modality, entities=ents, output_dir=output_dir,
            sources=[source_uri(originals.get(moving, moving), run.dataset_roots), t1w_uri], t1w_uri=t1w_uri,
            flirt_cutoff=run.flirt_cutoff, ants_cutoff=run.ants_cutoff, omp_nthreads=run.omp_nthreads,
            name=f"register_{role}_wf",
        )
        workflow.connect([
            (reorient_t1w, registration, [("out_file", "inputnode.t1w")]),
            (brain_mask, registration, [("out_file", "inputnode.brain_mask")]),
        ])
        for segmentation in segmentations:
            workflow.connect(registration, "outputnode.out_file", segmentation,
                             f"inputnode.{'r1' if role == 'r1map' else role}")
        qc_sources.append(registration)
        registrations[role] = registration
    if qc_sources:
        merge_qc = pe.Node(niu.Merge(len(qc_sources)), name="merge_registration_qc", run_without_submitting=True)
        for index, registration in enumerate(qc_sources, start=1):
            workflow.connect(registration, "outputnode.qc_file", merge_qc, f"in{index}")
        qc_table = pe.Node(ConcatTables(), name="registration_qc", run_without_submitting=True)
        ds_qc = publish_node("ds_registration_qc", output_dir,
                             {**ents, "desc": "registration", "suffix": "qc", "extension": ".tsv"},
                             QC_COLUMN_DESCRIPTIONS)
        workflow.connect([(merge_qc, qc_table, [("out", "in_files")]), (qc_table, ds_qc, [("out_file", "in_file")])])
        return registrations, qc_table
    return registrations, None


def _uri(output_dir: Path, ents: dict, **more) -> str:
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    path = derivative_path(output_dir, {**ents, **more})
    return f"bids::{path.relative_to(output_dir).as_posix()}"


def source_uri(path: Path, dataset_roots: Mapping[str, Path]) -> str:
    """BIDS URI of an input file: ``bids:<dataset>:<relative path>`` for the dataset holding it."""
    resolved = Path(path).resolve()
    # The innermost dataset holding the file: a derivatives dataset the user named may lie inside the raw one
    # (<bids>/derivatives/<name>), and the file is then that dataset's, not raw's.
    holders = [(name, root) for name, root in dataset_roots.items() if Path(root).resolve() in resolved.parents]
    if holders:
        name, root = max(holders, key=lambda item: len(Path(item[1]).resolve().parts))
        return bids_uri(resolved, root, name)
    return resolved.as_uri()
