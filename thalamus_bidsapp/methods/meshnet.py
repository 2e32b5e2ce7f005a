"""``meshnet``: brainchop's licence-free 18-class MeshNet on the CPU; class "Thalamus" on the T1w grid."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
import os
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
    sorted_unique,
    tool_label,
)
from thalamus_bidsapp.methods.records import RecordOutputSpec, write_mask_record

NAME = "meshnet"
LOGGER = logging.getLogger(__name__)


class MeshNet(SegmentationMethod):
    name = NAME
    order = 40
    citation = ("Fedorov A, et al. (2017). End-to-end learning of brain tissue segmentation from imperfect "
                "labeling. IJCNN. doi:10.1109/IJCNN.2017.7966333; Masoud M, et al. (2023). Brainchop: in-browser "
                "MRI volumetric segmentation and rendering. J Open Source Softw 8(83):5098. doi:10.21105/joss.05098")
    options = (
        CliOption("--meshnet-model", kind="dir", metavar="DIR", env="THALAMUS_MESHNET_MODEL",
                  help="folder with the MeshNet model.json and model.bin (default: $THALAMUS_MESHNET_MODEL, then "
                  "the user cache, filled on first use from the brainchop repository and checked by sha256)"),
        CliOption("--meshnet-sides-model", kind="dir", metavar="DIR", env="THALAMUS_MESHNET_SIDES_MODEL",
                  help="folder with brainchop's 104-class MeshNet (model21_104class: model.json, "
                  "group1-shard1of1.bin, colormap.json) that splits the thalamus into left and right (default: "
                  "$THALAMUS_MESHNET_SIDES_MODEL, then the user cache, filled on first use and checked by sha256)"),
    )
    # The 18-class model has one bilateral class; each of its voxels takes the side of the nearer
    # left or right thalamus class of the 104-class model.
    labels = SideLabels(left=("Left-Thalamus-Proper*",), right=("Right-Thalamus-Proper*",),
                        source="model21_104class classes nearest to each voxel of model30chan18cls 'Thalamus'")
    envelope_rank = 1  # no licence, no GPU, no FSL

    def check_tools(self, config) -> ToolStatus:
        from thalamus_bidsapp.interfaces.meshnet_models import SIDES_MODEL, resolve_model_dir

        try:
            # Downloads the weights on first use (then cached); offline, give the options.
            model_dir = resolve_model_dir(config.option("meshnet_model"))
        except ThalamusError as err:
            return ToolStatus(str(err))
        try:
            sides_model_dir = resolve_model_dir(config.option("meshnet_sides_model"), model=SIDES_MODEL)
        except ThalamusError as err:
            # The bilateral mask does not need it: MeshNet runs, without left and right.
            LOGGER.warning("MeshNet runs without left and right thalamus: %s", err)
            sides_model_dir = None
        return ToolStatus(None, {"model_dir": model_dir, "sides_model_dir": sides_model_dir})

    def check_installation(self, options):
        """MeshNet's weights and its sides model (checked by sha256, never downloaded here) and PyTorch."""
        from thalamus_bidsapp.interfaces import meshnet_models
        from thalamus_bidsapp.toolcheck import CheckReport, python_package

        findings = [python_package("PyTorch", "torch")]
        findings += _model_findings(meshnet_models.model_spec(), options.option("meshnet_model"), required=True)
        # Without the 104-class model MeshNet still runs, bilateral only: a warning.
        findings += _model_findings(meshnet_models.model_spec(meshnet_models.SIDES_MODEL),
                                    options.option("meshnet_sides_model"),
                                    required=False)
        return CheckReport(NAME, "method", tuple(findings))

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(MeshNetThalamus(model_dir=str(ctx.settings["model_dir"]), threads=ctx.omp_nthreads),
                       name=f"{NAME}_thalamus", n_procs=ctx.omp_nthreads, mem_gb=3)
        if ctx.settings.get("sides_model_dir") is not None:
            node.inputs.sides_model_dir = str(ctx.settings["sides_model_dir"])
        ctx.workflow.connect(ctx.inputnode, "t1w", node, "t1w")
        return MethodNodes(records=[(node, "record_file")], envelope=(node, "record_file"))

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        models = sorted_unique([m.sidecar.get("Model") for m in masks])
        sides = sorted_unique([(m.sidecar.get("Sides") or {}).get("Model") for m in masks])
        text = f"{tool_label(masks, self.name)} {cite(self.name)}" + (f" (model {', '.join(models)})" if models
                                                                       else "")
        if sides:
            text += (f", split into left and right by the nearer thalamus class of model {', '.join(sides)}")
        return text


#: This module's registry entry (methods/registry.py collects every module's METHOD).
METHOD = MeshNet()


def _model_findings(spec, option_value, *, required: bool) -> list:
    """What --check-tools reports of one pinned model: its folder (option, environment, cache) and files."""
    from thalamus_bidsapp.interfaces import meshnet_models
    from thalamus_bidsapp.toolcheck import Finding, data_file, writable_dir

    label = "model folder" if required else f"{spec.name} folder (left/right)"

    def name(fname: str) -> str:
        return fname if required else f"{spec.name}/{fname}"

    env_model = os.environ.get(spec.env_var)
    given = option_value or (Path(env_model) if env_model else None)
    if given is not None:
        source = spec.option if option_value else spec.env_var
        return [Finding(label, Path(given).is_dir(),
                        f"{given} (from {source})" if Path(given).is_dir() else f"not found: {given}", required=required),
                *(data_file(name(fname), Path(given) / fname, sha, required=required) for fname, sha in spec.sha256.items())]
    cache = meshnet_models.default_cache_dir(spec)
    if any((cache / fname).is_file() for fname in spec.sha256):
        return [Finding(label, True, f"{cache} (user cache)", required=required),
                *(data_file(name(fname), cache / fname, sha, required=required) for fname, sha in spec.sha256.items())]
    return [writable_dir("model cache" if required else f"{spec.name} cache", cache, required=required),
            Finding("weights" if required else f"{spec.name} weights", False,
                    f"not in {cache} yet: the first run downloads them from {spec.url_base} (needs network), "
                    f"or give {spec.option} / {spec.env_var}", required=False)]


class _MeshNetInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    model_dir = traits.Str(mandatory=True, desc="folder with the verified model.json and model.bin")
    sides_model_dir = traits.Str(desc="folder with the verified 104-class model (left/right); none: no sides")
    threads = traits.Int(1, usedefault=True, nohash=True, desc="torch CPU threads (not hashed)")


class MeshNetThalamus(SimpleInterface):
    """brainchop's 18-class MeshNet on the conformed T1w; class 'Thalamus' back on the T1w grid, split into sides."""

    input_spec = _MeshNetInputSpec
    output_spec = RecordOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.interfaces.meshnet import segment_thalamus, segment_thalamus_sides

        cwd = Path(runtime.cwd)
        t1w = nib.load(self.inputs.t1w)
        if isdefined(self.inputs.sides_model_dir):
            mask, sides, provenance = segment_thalamus_sides(
                t1w, Path(self.inputs.model_dir), Path(self.inputs.sides_model_dir), threads=self.inputs.threads)
        else:
            (mask, provenance), sides = segment_thalamus(t1w, Path(self.inputs.model_dir),
                                                         threads=self.inputs.threads), None
        self._results["record_file"] = write_mask_record(mask, NAME, "T1w", {"Tool": "MeshNet", **provenance},
                                                         folder=cwd, sides=sides,
                                                         side_labels=METHOD.labels.to_json())
        self._results["out_file"] = str(cwd / f"thalamus_{NAME}.nii.gz")
        return runtime
