"""A method defined here, in the test suite alone, is planned, run, published, tabled and reported.

Nothing outside this file names it: the registry entry below declares its
option, its check, its node, its labels and its methods sentence, and the
parser, planner, workflow, volumes table, reports, citations and group table
pick it up from the registry.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface

from tests.conftest import shared_file
from tests.foundation.datasets import BERT_THALAMUS_VOXELS, make_bert_dataset
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.parser import build_parser
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.methods import CliOption, SegmentationMethod, SideLabels, ToolStatus, register
from thalamus_bidsapp.methods.base import MethodNodes, NodeContext
from thalamus_bidsapp.methods.records import RecordOutputSpec, write_mask_record

CITATION = "Doe J (2030). Copying the thalamus out of an aseg. J Test Methods 1:1."


class _AsegCopyInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    aseg = File(exists=True, mandatory=True, desc="aseg on the T1w's world grid")


class AsegCopyThalamus(SimpleInterface):
    """Labels 10 and 49 of a given aseg, taken onto the T1w grid by nearest neighbour."""

    input_spec = _AsegCopyInputSpec
    output_spec = RecordOutputSpec

    def _run_interface(self, runtime):
        from nibabel.processing import resample_from_to

        t1w = nib.load(self.inputs.t1w)
        aseg = resample_from_to(nib.load(self.inputs.aseg), t1w, order=0)
        data = np.isin(np.asanyarray(aseg.dataobj), (10, 49)).astype(np.uint8)
        mask = nib.Nifti1Image(data, t1w.affine)
        self._results["record_file"] = write_mask_record(
            mask, "asegcopy", "T1w", {"Tool": "asegcopy", "Version": "1.0", "Aseg": self.inputs.aseg},
            folder=Path(runtime.cwd))
        self._results["out_file"] = str(Path(runtime.cwd) / "thalamus_asegcopy.nii.gz")
        return runtime


class AsegCopy(SegmentationMethod):
    name = "asegcopy"
    citation = CITATION
    options = (CliOption("--asegcopy-file", kind="file", env="ASEGCOPY_FILE", metavar="FILE",
                         help="an aseg whose thalamus labels are copied"),)
    labels = SideLabels(left=(10,), right=(49,), source="aseg")

    def check_tools(self, config) -> ToolStatus:
        aseg = config.option("asegcopy_file")
        return ToolStatus(None, {"aseg": aseg}) if aseg else ToolStatus("no aseg given (--asegcopy-file)")

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(AsegCopyThalamus(aseg=str(ctx.settings["aseg"])), name="asegcopy_thalamus")
        ctx.workflow.connect(ctx.inputnode, "t1w", node, "t1w")
        return MethodNodes(records=[(node, "record_file")], envelope=(node, "record_file"))

    def methods_sentence(self, masks, cite) -> str:
        return f"the asegcopy test method {cite(self.name)} (aseg labels 10 and 49)"


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    bids, _ = make_bert_dataset(root)
    aseg = root / "aseg.nii.gz"
    src = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    nib.save(nib.Nifti1Image(np.asanyarray(src.dataobj).astype(np.int16), src.affine), str(aseg))
    out = root / "out"
    with register(AsegCopy()):
        help_text = build_parser().format_help()
        participant = main([str(bids), str(out), "participant", "--methods", "asegcopy", "--asegcopy-file", str(aseg),
                            "-w", str(root / "work"), "--nprocs", "1", "--skip-bids-validation"])
        group = main([str(bids), str(out), "group", "-w", str(root / "work")])
    return {"out": out, "help": help_text, "codes": (participant, group)}


@pytest.mark.slow
def test_plugin_method_is_in_help_and_runs(plugin_run):
    assert plugin_run["codes"] == (0, 0)
    assert "--asegcopy-file" in plugin_run["help"] and "$ASEGCOPY_FILE" in plugin_run["help"]
    assert "asegcopy" in plugin_run["help"].split("--methods", 1)[1].split("\n\n")[0]


@pytest.mark.slow
def test_plugin_method_is_published_and_tabled(plugin_run):
    anat = plugin_run["out"] / "sub-01" / "anat"
    mask = nib.load(str(anat / "sub-01_space-T1w_label-thalamus_desc-asegcopy_mask.nii.gz"))
    assert int(np.asanyarray(mask.dataobj).sum()) == BERT_THALAMUS_VOXELS
    volumes = read_tsv(anat / "sub-01_label-thalamus_volumes.tsv")
    row = volumes.set_index("method").loc["asegcopy"]
    assert row["n_voxels"] == BERT_THALAMUS_VOXELS
    group = read_tsv(plugin_run["out"] / "group" / "volumes.tsv")
    assert set(group["method"]) == {"asegcopy"}


@pytest.mark.slow
def test_plugin_method_is_reported_and_cited(plugin_run):
    out = plugin_run["out"]
    report = (out / "sub-01.html").read_text()
    assert "the asegcopy test method" in report and "Copying the thalamus out of an aseg" in report
    assert (out / "sub-01" / "figures" / "sub-01_space-T1w_label-thalamus_desc-asegcopy_mask.svg").is_file()
    assert CITATION in (out / "logs" / "CITATION.md").read_text()
    methods_json = next((out / "logs").glob("*/methods.json")).read_text()
    assert '"asegcopy"' in methods_json


def test_a_method_without_nodes_cannot_be_declared():
    class NoNodes(SegmentationMethod):
        name = "nonodes"
        citation = "none"

    with pytest.raises(TypeError, match="init_nodes"):
        NoNodes()


def test_capabilities_are_declared_by_mixins():
    """A capability is a mixin: a lesion source without its lesion nodes cannot be declared, and the envelope
    choices, the lesion sources and the envelope users follow the declarations, not the method names."""
    from thalamus_bidsapp.cli.parser import build_parser as parser
    from thalamus_bidsapp.methods import (
        EnvelopeSource,
        EnvelopeUser,
        LesionSource,
        envelope_names,
        needs_envelope,
        provides_lesions,
    )

    class HalfLesions(LesionSource, AsegCopy):
        name = "halflesions"

    with pytest.raises(TypeError, match="init_lesion_nodes"):
        HalfLesions()

    class RankedCopy(EnvelopeSource, AsegCopy):
        name = "rankedcopy"
        options = ()
        envelope_rank = -1

    class BoundedCopy(EnvelopeUser, AsegCopy):
        name = "boundedcopy"
        options = ()

    class LesionCopy(LesionSource, AsegCopy):
        name = "lesioncopy"
        options = ()

        def init_lesion_nodes(self, ctx):
            raise AssertionError("not built here")

    assert not needs_envelope(AsegCopy()) and not provides_lesions(AsegCopy())
    with register(RankedCopy()), register(BoundedCopy()) as bounded, register(LesionCopy()) as lesions:
        assert envelope_names()[0] == "rankedcopy"
        assert needs_envelope(bounded) and provides_lesions(lesions)
        choices = next(a for a in parser()._actions if a.dest == "lesion_source").choices
        assert "lesioncopy" in choices and "rankedcopy" not in choices
    assert "rankedcopy" not in envelope_names()
