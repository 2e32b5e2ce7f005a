"""``first``: FSL FIRST ``run_first_all -s L_Thal,R_Thal -b`` on the brain-masked T1w; labels 10 and 49."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface

from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.methods.base import (
    MethodNodes,
    NodeContext,
    PublishedMask,
    SegmentationMethod,
    SideLabels,
    ToolStatus,
    tool_label,
)
from thalamus_bidsapp.methods.capabilities import SIDE_REGIONS, EnvelopeSource, TemplateSegmenter
from thalamus_bidsapp.methods.records import RecordOutputSpec, write_mask_record


class First(EnvelopeSource, TemplateSegmenter, SegmentationMethod):
    name = "first"
    order = 20
    colors = {"first": "#E69F00"}  # Okabe-Ito orange
    citation = ("Patenaude B, et al. (2011). A Bayesian model of shape and appearance for subcortical brain "
                "segmentation. NeuroImage 56(3):907-922. doi:10.1016/j.neuroimage.2011.02.046")
    labels = SideLabels(left=(10,), right=(49,), source="firstseg (L_Thal, R_Thal)")
    envelope_rank = 0  # the paper's envelope

    def check_tools(self, config) -> ToolStatus:
        from thalamus_bidsapp.tools import first

        try:
            first.run_first_all_path()
        except ThalamusError as err:
            return ToolStatus(str(err))
        return ToolStatus()

    def template_segmenter(self, settings):
        """run_first_all on the within-subject template (already brain-extracted, hence ``-b``), in a temp folder."""

        def segment(image, threads: int):
            import nibabel as nib

            from thalamus_bidsapp.image.sides import sides_from_labels
            from thalamus_bidsapp.tools import first

            with tempfile.TemporaryDirectory(prefix="first_template_") as folder:
                brain_file = Path(folder) / "template_brain.nii.gz"
                nib.save(image, str(brain_file))
                prefix = Path(folder) / "first"
                firstseg = first.run_first(brain_file, prefix)
                sides = sides_from_labels(first.firstseg_labels(firstseg, image), self.labels.left,
                                          self.labels.right)
                provenance = first.provenance(cmd=first.first_command(brain_file, prefix))
            return sides, dict(SIDE_REGIONS), {**provenance, "SideLabels": self.labels.to_json()}

        return segment

    def check_installation(self, options):
        from thalamus_bidsapp.tools.first import check_installation

        return check_installation(options)

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(FirstThalamus(), name="first_thalamus", mem_gb=2)
        ctx.workflow.connect([(ctx.inputnode, node, [("t1w", "t1w"), ("brain_mask", "brain_mask")])])
        return MethodNodes(records=[(node, "record_file")], envelope=(node, "record_file"))

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        return f"{tool_label(masks, self.name)} {cite(self.name)} (L_Thal and R_Thal, merged and as left and right)"


#: This module's registry entry (methods/registry.py collects every module's METHOD).
METHOD = First()


class _FirstInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")


class FirstThalamus(SimpleInterface):
    """FSL FIRST ``run_first_all -s L_Thal,R_Thal -b`` on the brain-masked T1w; labels 10 + 49."""

    input_spec = _FirstInputSpec
    output_spec = RecordOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.image.sides import sides_from_labels
        from thalamus_bidsapp.tools import first

        cwd = Path(runtime.cwd)
        t1w = nib.load(self.inputs.t1w)
        brain = first.brain_masked_t1w(t1w, nib.load(self.inputs.brain_mask))
        brain_file = cwd / "t1w_brain.nii.gz"
        nib.save(brain, str(brain_file))
        prefix = cwd / "first"
        firstseg = first.run_first(brain_file, prefix)
        mask = first.first_thalamus_mask(firstseg, t1w)
        sides = sides_from_labels(first.firstseg_labels(firstseg, t1w), METHOD.labels.left, METHOD.labels.right)
        provenance = first.provenance(cmd=first.first_command(brain_file, prefix))
        self._results["record_file"] = write_mask_record(mask, "first", "T1w", provenance, folder=cwd,
                                                         sides=sides, side_labels=METHOD.labels.to_json())
        self._results["out_file"] = str(cwd / "thalamus_first.nii.gz")
        return runtime
