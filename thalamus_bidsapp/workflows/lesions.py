"""The lesion steps of a session workflow: mask onto the T1w grid, fill, publish."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nipype.pipeline import engine as pe

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.interfaces.images import SkullStripCheck
from thalamus_bidsapp.interfaces.lesions import LesionFill, LesionMaskToT1w, needs_flair_transform
from thalamus_bidsapp.methods import MethodPlan, get_method, provides_lesions
from thalamus_bidsapp.methods.base import NodeContext, SegmentationMethod
from thalamus_bidsapp.workflows.outputs import publish_node

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionProvider:
    """A method offering the lesion mask, with its planned settings and threads."""

    method: SegmentationMethod
    settings: Mapping[str, Any]
    omp_nthreads: int


def _provider_node(workflow: pe.Workflow, session: SessionInputs, reorient_t1w: pe.Node,
                   flair_out: tuple[pe.Workflow, str] | None, provider: LesionProvider) -> pe.Node:
    """The provider's lesion node, fed the unfilled T1w and the registered FLAIR."""
    from nipype.interfaces import utility as niu

    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "flair"]), name="lesion_inputnode")
    workflow.connect(reorient_t1w, "out_file", inputnode, "t1w")
    if flair_out is not None:
        workflow.connect(flair_out[0], flair_out[1], inputnode, "flair")
    ctx = NodeContext(workflow=workflow, inputnode=inputnode, session=session, settings=provider.settings,
                      omp_nthreads=provider.omp_nthreads)
    return provider.method.init_lesion_nodes(ctx)


@dataclass
class LesionNodes:
    """``mask``: the lesion mask on the T1w grid (``out_file``); ``fill``: the filling node (None when off)."""

    mask: pe.Node
    fill: pe.Node | None
    filled_uri: str


def lesion_provider(source: str, plan: MethodPlan) -> SegmentationMethod | None:
    """The method offering the session's lesion mask (``--lesion-source <method>``), when it runs; else None."""
    if source == "derivatives":
        return None
    method = get_method(source)
    if not provides_lesions(method) or source not in plan.run:
        LOGGER.warning("--lesion-source %s: %s does not run for this session; no lesion mask", source, source)
        return None
    return method


def add_lesion_nodes(workflow: pe.Workflow, session: SessionInputs, reorient_t1w: pe.Node, brain_mask: pe.Node,
                     flair_registration: pe.Workflow | None, *, fill: bool, output_dir: Path, t1w_uri: str,
                     lesion_uri: str, provider: LesionProvider | None = None,
                     with_prior: bool = False) -> LesionNodes:
    """Bring the session's lesion mask onto the T1w grid and publish it; fill the T1w when ``fill``.

    The mask is the session's derivatives lesion mask, or (without one) the
    ``provider``'s (a method offering lesions, with its planned settings).
    Published: ``space-T1w_label-lesion_mask`` (the mask on the T1w grid) and,
    when lesions were filled, ``desc-lesionfilled_T1w`` with a sidecar naming
    the mask and the method. ``with_prior``: the session has a thalamus prior
    (connected by the caller to the filling node's ``thalamus_prior``), named in the sidecar.
    """
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    ents = session.entities
    flair_out = (flair_registration, "outputnode.out_file") if flair_registration is not None else None
    if session.lesion is None and provider is not None:
        mask = _provider_node(workflow, session, reorient_t1w, flair_out, provider)
    else:
        mask = pe.Node(LesionMaskToT1w(lesion_file=str(session.lesion), raw_t1w=str(session.t1w),
                                       lesion_labels=list(session.lesion_labels)), name="lesion_mask")
        # After the brain mask, also for the scheduler: ready beside deepbet, this one-thread step would hold the
        # slot deepbet's two threads need, and the brain mask is on every session's critical path.
        workflow.connect([(reorient_t1w, mask, [("out_file", "t1w")]),
                          (brain_mask, mask, [("out_file", "brain_mask")])])
        if session.flair is not None:
            mask.inputs.raw_flair = str(session.flair)
            if flair_registration is not None and needs_flair_transform(session.lesion, session.t1w, session.flair):
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
    if with_prior:
        filler.inputs.thalamus_prior_uris = [
            "bids::" + derivative_path(output_dir, {**ents, "hemi": side, "space": "T1w", "label": "thalamus",
                                                     "desc": "prior", "suffix": "probseg", "extension": ".nii.gz"}
                                       ).relative_to(output_dir).as_posix() for side in ("L", "R")]
    workflow.connect([
        (reorient_t1w, filler, [("out_file", "t1w")]),
        (brain_mask, filler, [("out_file", "brain_mask")]),
        (mask, filler, [("out_file", "lesion_mask"), ("provenance_file", "lesion_provenance")]),
    ])
    ds_filled = publish_node("ds_lesionfilled_t1w", output_dir, filled_entities,
                             {"Sources": [t1w_uri, mask_uri], "SpatialReference": t1w_uri, "LesionMaskUsed": mask_uri,
                              "Description": "The T1w with its lesions filled: the image every method that segments "
                                             "the T1w received"})
    # The filled T1w is as skull-stripped as the T1w it comes from: measured on it, for its sidecar.
    skullstrip = pe.Node(SkullStripCheck(), name="skullstrip_lesionfilled", mem_gb=1)
    workflow.connect([(filler, skullstrip, [("filled_file", "in_file"), ("provenance_file", "in_provenance")]),
                      (brain_mask, skullstrip, [("out_file", "brain_mask")]),
                      (filler, ds_filled, [("filled_file", "in_file")]),
                      (skullstrip, ds_filled, [("provenance_file", "provenance_files")])])
    return LesionNodes(mask, filler, filled_uri)
