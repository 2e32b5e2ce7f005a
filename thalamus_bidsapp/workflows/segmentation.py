"""The thalamus segmentation methods of one session, as a nipype workflow.

Every registered method that the session's plan runs adds its own nodes
(:meth:`thalamus_bidsapp.methods.base.SegmentationMethod.init_nodes`); this
module only wires their mask records together, and names no method.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.methods import MethodPlan, all_methods
from thalamus_bidsapp.methods.base import NodeContext

#: The workflow's output: mask records of every method (see methods/records.py).
OUTPUT_FIELDS = ["record_files", "icv_provenance"]


def init_segmentation_wf(
    session: SessionInputs,
    plan: MethodPlan,
    *,
    omp_nthreads: int,
    name: str = "segmentation_wf",
) -> pe.Workflow:
    """Run each planned method on the reoriented T1w (and the registered FLAIR/R1 where a method uses them).

    Inputs (``inputnode``): ``t1w`` (reoriented T1w, the reference grid),
    ``brain_mask``, ``flair`` and ``r1`` (registered onto the T1w grid;
    optional). Outputs (``outputnode``): ``record_files``, one mask record per
    mask, and ``icv_provenance`` (a method's ICV record, FreeSurfer's eTIV).
    Methods that need an envelope are built after the others, whatever the
    registry order, so the envelope's node exists.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "brain_mask", "flair", "r1"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    producers: list[tuple[pe.Node, str]] = []
    envelopes: dict[str, tuple[pe.Node, str]] = {}
    planned = [m for m in all_methods() if m.name in plan.run]
    for method in sorted(planned, key=lambda m: m.needs_envelope):
        ctx = NodeContext(workflow=workflow, inputnode=inputnode, session=session,
                          settings=plan.settings_of(method.name), omp_nthreads=omp_nthreads,
                          envelope=envelopes.get(plan.envelope) if method.needs_envelope else None)
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
