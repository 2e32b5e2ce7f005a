"""Nodes that put results into the output dataset."""

from __future__ import annotations

from pathlib import Path

from nipype.pipeline import engine as pe

from thalamus_bidsapp.interfaces.publish import PublishDerivative


def publish_node(name: str, output_dir: Path, entities: dict, sidecar: dict | None = None) -> pe.Node:
    """A :class:`PublishDerivative` node: connect ``in_file`` (and optionally ``provenance_files``)."""
    node = pe.Node(PublishDerivative(output_dir=str(output_dir), entities=entities), name=name,
                   run_without_submitting=True)
    if sidecar is not None:
        node.inputs.sidecar = sidecar
    return node
