"""The thalamus segmentation methods of one session, as a nipype workflow.

Every registered method that the session's plan runs adds its own nodes
(:meth:`thalamus_bidsapp.methods.base.SegmentationMethod.init_nodes`); this
module only wires their mask records together, and names no method.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.methods import MethodPlan, all_methods, get_method, needs_envelope
from thalamus_bidsapp.methods.base import NodeContext

#: The workflow's output: mask records of every method (see methods/records.py).
OUTPUT_FIELDS = ["record_files", "icv_provenance"]


INPUT_FIELDS = ["t1w", "unfilled_t1w", "brain_mask", "flair", "r1"]


def init_segmentation_wf(
    session: SessionInputs,
    plan: MethodPlan,
    *,
    omp_nthreads: int,
    lesion_filled: bool = False,
    name: str = "segmentation_wf",
) -> pe.Workflow:
    """Run each planned method on the reoriented T1w (and the registered FLAIR/R1 where a method uses them).

    Inputs (``inputnode``): ``t1w`` (the T1w the methods segment: the
    lesion-filled T1w when ``lesion_filled``, else the reoriented T1w),
    ``unfilled_t1w`` (the reoriented T1w, the reference grid; only read when
    ``lesion_filled``, by methods that do not consume the T1w), ``brain_mask``,
    ``flair`` and ``r1`` (registered onto the T1w grid; optional). Outputs
    (``outputnode``): ``record_files``, one mask record per mask, and
    ``icv_provenance`` (a method's ICV record, FreeSurfer's eTIV). Methods that
    need an envelope are built after the others, whatever the registry order,
    so the envelope's node exists.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=INPUT_FIELDS), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    reference_inputnode = inputnode
    if lesion_filled:  # methods that do not segment the T1w get the unfilled one as their grid
        reference_inputnode = pe.Node(niu.IdentityInterface(fields=INPUT_FIELDS), name="reference_inputnode")
        workflow.connect(inputnode, "unfilled_t1w", reference_inputnode, "t1w")
        for field in ("brain_mask", "flair", "r1"):
            workflow.connect(inputnode, field, reference_inputnode, field)
    producers: list[tuple[pe.Node, str]] = []
    envelopes: dict[str, tuple[pe.Node, str]] = {}
    planned = [m for m in all_methods() if m.name in plan.run]
    for method in sorted(planned, key=needs_envelope):
        ctx = NodeContext(workflow=workflow, inputnode=inputnode if method.consumes_t1w else reference_inputnode,
                          session=session, settings=plan.settings_of(method.name), omp_nthreads=omp_nthreads,
                          envelope=envelopes.get(plan.envelope) if needs_envelope(method) else None,
                          lesion_filled=lesion_filled and method.consumes_t1w)
        nodes = method.init_nodes(ctx)
        producers.extend(nodes.records)
        if nodes.envelope is not None:
            envelopes[method.name] = nodes.envelope
        if nodes.icv is not None:
            workflow.connect(*nodes.icv, outputnode, "icv_provenance")

    merge = pe.Node(niu.Merge(max(len(producers), 1), ravel_inputs=True), name="merge_records",
                    run_without_submitting=True)
    for index, (node, field) in enumerate(producers, start=1):
        workflow.connect(node, field, merge, f"in{index}")
    workflow.connect(merge, "out", outputnode, "record_files")
    return workflow


def filled_methods(plan: MethodPlan) -> tuple[str, ...]:
    """The planned methods that segment this session's T1w here: they receive the lesion-filled T1w."""
    return tuple(m.name for m in all_methods() if m.name in plan.run and m.segments_t1w(plan.settings_of(m.name)))


def unfilled_plan(plan: MethodPlan) -> MethodPlan:
    """The plan of the extra run on the unfilled T1w: the methods that segment the T1w, with their envelope."""
    run = [name for name in plan.run if name in filled_methods(plan)]
    needing = [m.name for m in all_methods() if m.name in run and needs_envelope(m)]
    if plan.envelope not in run:  # a method whose envelope does not run again cannot run again
        run = [name for name in run if name not in needing]
    return MethodPlan(run=tuple(run), settings={name: get_method(name).unfilled_settings(plan.settings_of(name))
                                                for name in run},
                      envelope=plan.envelope if plan.envelope in run else None)
