"""``dbsegment``: DBSegment 0.2.2 (nnU-Net, 5 folds, test-time augmentation); thalamic labels merged."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, isdefined, traits

from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.methods.base import (
    CliOption,
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

NAME = "dbsegment"


class DBSegment(EnvelopeSource, TemplateSegmenter, SegmentationMethod):
    name = NAME
    order = 30
    colors = {NAME: "#009E73"}  # Okabe-Ito bluish green
    citation = ("Baniasadi M, et al. (2023). DBSegment: fast and robust segmentation of deep brain structures "
                "considering domain generalization. Hum Brain Mapp 44(2):762-778. doi:10.1002/hbm.26097")
    options = (
        CliOption("--dbsegment-model", kind="dir", metavar="DIR", env="DBSEGMENT_MODEL_PATH",
                  help="DBSegment model folder (default: $DBSEGMENT_MODEL_PATH); DBSegment must be on PATH"),
    )
    labels = SideLabels(left=(24, 26, 30), right=(25, 27, 31), source="DBSegment labels (THAL, VPL, VIM)")
    envelope_rank = 3

    def check_tools(self, config) -> ToolStatus:
        from thalamus_bidsapp.tools import dbsegment

        try:
            dbsegment.find_dbsegment(None)
            model = dbsegment.find_model_folder(config.option("dbsegment_model"))
        except ThalamusError as err:
            return ToolStatus(str(err))
        return ToolStatus(None, {"model_folder": model})

    def template_segmenter(self, settings):
        """DBSegment on the within-subject template, in a temp folder; its thalamic labels as left and right."""
        model_folder = settings.get("model_folder")

        def segment(image, threads: int):
            import nibabel as nib
            import numpy as np

            from thalamus_bidsapp.image.sides import sides_from_labels
            from thalamus_bidsapp.tools import dbsegment

            with tempfile.TemporaryDirectory(prefix="dbsegment_template_") as folder:
                template_file = Path(folder) / "template_T1w.nii.gz"
                nib.save(image, str(template_file))
                seg_path, cmd = dbsegment.run_dbsegment(template_file, Path(folder) / NAME,
                                                        model_folder=model_folder)
                labels = np.asarray(dbsegment.dbsegment_labels_on_grid(nib.load(str(seg_path)), image))
            sides = sides_from_labels(labels, self.labels.left, self.labels.right)
            provenance = dbsegment.provenance(cmd, dbsegment.find_dbsegment(None),
                                              dbsegment.find_model_folder(model_folder), dbsegment.DEFAULT_FOLDS,
                                              tta=True, checksums=True)
            return sides, dict(SIDE_REGIONS), {**provenance, "SideLabels": self.labels.to_json()}

        return segment

    def check_installation(self, options):
        """DBSegment's executable and version, its model folder, fold checksums and nnU-Net folders."""
        from thalamus_bidsapp.tools import dbsegment
        from thalamus_bidsapp.tools.check import CheckReport, Finding, data_file, executable

        findings: list = []
        try:
            exe = dbsegment.find_dbsegment(None)
        except ThalamusError as err:
            findings.append(Finding("DBSegment", False, str(err)))
        else:
            findings += executable("DBSegment", exe, dbsegment.dbsegment_version(exe))
        folds = dbsegment.DEFAULT_FOLDS
        value = options.option("dbsegment_model")
        if not value:
            findings.append(Finding("model folder", False, f"not given (--dbsegment-model or {dbsegment.MODEL_ENV})"))
            return CheckReport(NAME, "method", tuple(findings))
        trainer = dbsegment.model_bundle(value, folds)
        plans = trainer / "plans.pkl"
        findings.append(Finding("model folder", trainer.is_dir(),
                                f"{value} ({trainer.relative_to(value)})" if trainer.is_dir()
                                else f"{trainer} missing: unpack {dbsegment.MODEL_BUNDLE_ALL_FOLDS}.zip into {value}"))
        findings.append(Finding("plans.pkl", plans.is_file(), str(plans) if plans.is_file() else f"missing: {plans}"))
        for fold in folds:
            checkpoint = trainer / f"fold_{fold}" / "model_final_checkpoint.model"
            findings.append(data_file(f"fold_{fold} checkpoint", checkpoint))
            pickle = checkpoint.with_name(checkpoint.name + ".pkl")
            findings.append(Finding(f"fold_{fold} checkpoint .pkl", pickle.is_file(),
                                    str(pickle) if pickle.is_file() else f"missing: {pickle}"))
        problem = dbsegment.nnunet_folders_problem(value, folds)
        findings.append(Finding("nnU-Net folders", problem is None,
                                problem or f"present or creatable in {Path(value) / dbsegment.MODEL_BUNDLE_ALL_FOLDS}"))
        return CheckReport(NAME, "method", tuple(findings))

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(DBSegmentThalamus(), name=f"{NAME}_thalamus", n_procs=ctx.omp_nthreads, mem_gb=6)
        if ctx.settings.get("model_folder") is not None:
            node.inputs.model_folder = str(ctx.settings["model_folder"])
        ctx.workflow.connect(ctx.inputnode, "t1w", node, "t1w")
        return MethodNodes(records=[(node, "record_file")], envelope=(node, "record_file"))

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        return f"{tool_label(masks, self.name)} {cite(self.name)} (thalamic nuclei labels, merged and as left and right)"


#: This module's registry entry (methods/registry.py collects every module's METHOD).
METHOD = DBSegment()


class _DBSegmentInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    executable = traits.Str(desc="DBSegment executable (default: on PATH)")
    model_folder = traits.Str(desc="DBSegment model folder (from the tool check)")


class DBSegmentThalamus(SimpleInterface):
    """DBSegment (5 folds, test-time augmentation); thalamic labels merged, back on the T1w grid."""

    input_spec = _DBSegmentInputSpec
    output_spec = RecordOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np

        from thalamus_bidsapp.image.ensembles import mask_like
        from thalamus_bidsapp.image.sides import sides_from_labels
        from thalamus_bidsapp.tools import dbsegment

        cwd = Path(runtime.cwd)
        executable = self.inputs.executable if isdefined(self.inputs.executable) else None
        model_folder = self.inputs.model_folder if isdefined(self.inputs.model_folder) else None
        seg_path, cmd = dbsegment.run_dbsegment(Path(self.inputs.t1w), cwd / NAME, executable=executable,
                                                model_folder=model_folder)
        t1w = nib.load(self.inputs.t1w)
        labels = dbsegment.dbsegment_labels_on_grid(nib.load(str(seg_path)), t1w)
        mask = mask_like(np.isin(labels, dbsegment.THALAMUS_LABELS), t1w)
        sides = sides_from_labels(labels, METHOD.labels.left, METHOD.labels.right)
        found_exe = dbsegment.find_dbsegment(executable)
        provenance = dbsegment.provenance(cmd, found_exe, dbsegment.find_model_folder(model_folder),
                                          dbsegment.DEFAULT_FOLDS, tta=True, checksums=True)
        self._results["record_file"] = write_mask_record(mask, NAME, "T1w", provenance, folder=cwd, sides=sides,
                                                         side_labels=METHOD.labels.to_json())
        self._results["out_file"] = str(cwd / f"thalamus_{NAME}.nii.gz")
        return runtime
