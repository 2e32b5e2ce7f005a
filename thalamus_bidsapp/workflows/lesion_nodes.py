"""The lesion steps of a session workflow: mask onto the T1w grid, fill, publish."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.workflows.lesions import LesionFill, LesionMaskToT1w
from thalamus_bidsapp.workflows.outputs import publish_node


@dataclass
class LesionNodes:
    """``mask``: the lesion mask on the T1w grid (``out_file``); ``fill``: the filling node (None when off)."""

    mask: pe.Node
    fill: pe.Node | None
    filled_uri: str


def add_lesion_nodes(workflow: pe.Workflow, session: SessionInputs, reorient_t1w: pe.Node, brain_mask: pe.Node,
                     flair_registration: pe.Workflow | None, *, fill: bool, output_dir: Path, t1w_uri: str,
                     lesion_uri: str) -> LesionNodes:
    """Bring the session's lesion mask onto the T1w grid and publish it; fill the T1w when ``fill``.

    Published: ``space-T1w_label-lesion_mask`` (the mask on the T1w grid) and,
    when lesions were filled, ``desc-lesionfilled_T1w`` with a sidecar naming
    the mask and the method.
    """
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    ents = session.entities
    mask = pe.Node(LesionMaskToT1w(lesion_file=str(session.lesion)), name="lesion_mask")
    workflow.connect(reorient_t1w, "out_file", mask, "t1w")
    if session.flair is not None:
        mask.inputs.raw_flair = str(session.flair)
        if flair_registration is not None:
            workflow.connect([(flair_registration, mask, [("outputnode.transform", "flair_transform"),
                                                          ("outputnode.moving", "flair_moving")])])
    mask_entities = {**ents, "space": "T1w", "label": "lesion", "suffix": "mask"}
    mask_uri = "bids::" + derivative_path(output_dir, mask_entities).relative_to(output_dir).as_posix()
    ds_mask = publish_node("ds_lesion_mask", output_dir, mask_entities,
                           {"Type": "Lesion", "Sources": [lesion_uri, t1w_uri], "SpatialReference": t1w_uri,
                            "Description": "Lesion mask on the T1w grid (nearest neighbour from its own grid)"})
    workflow.connect([(mask, ds_mask, [("out_file", "in_file"), ("provenance_file", "provenance_files")])])
    filled_entities = {**ents, "desc": "lesionfilled", "suffix": "T1w"}
    filled_uri = "bids::" + derivative_path(output_dir, filled_entities).relative_to(output_dir).as_posix()
    if not fill:
        return LesionNodes(mask, None, filled_uri)
    filler = pe.Node(LesionFill(), name="lesion_fill", mem_gb=2)
    workflow.connect([
        (reorient_t1w, filler, [("out_file", "t1w")]),
        (brain_mask, filler, [("out_file", "brain_mask")]),
        (mask, filler, [("out_file", "lesion_mask"), ("provenance_file", "lesion_provenance")]),
    ])
    ds_filled = publish_node("ds_lesionfilled_t1w", output_dir, filled_entities,
                             {"Sources": [t1w_uri, mask_uri], "SpatialReference": t1w_uri, "LesionMaskUsed": mask_uri,
                              "Description": "The T1w with its lesions filled: the image every method that segments "
                                             "the T1w received"})
    workflow.connect([(filler, ds_filled, [("filled_file", "in_file"), ("provenance_file", "provenance_files")])])
    return LesionNodes(mask, filler, filled_uri)
