"""``meshnet``: brainchop's licence-free 18-class MeshNet on the CPU; class "Thalamus" on the T1w grid."""

from __future__ import annotations

import logging
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
    sorted_unique,
    tool_label,
)
from thalamus_bidsapp.methods.capabilities import SIDE_REGIONS, EnvelopeSource, TemplateSegmenter
from thalamus_bidsapp.methods.records import RecordOutputSpec, write_mask_record

NAME = "meshnet"
LOGGER = logging.getLogger(__name__)


class MeshNet(EnvelopeSource, TemplateSegmenter, SegmentationMethod):
    name = NAME
    order = 40
    colors = {NAME: "#CC79A7"}  # Okabe-Ito reddish purple
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
                  "$THALAMUS_MESHNET_SIDES_MODEL, then the user cache, filled on first use and checked by sha256); "
                  "MeshNet does not run without it unless --meshnet-sides off"),
        CliOption("--meshnet-sides", kind="choice", choices=("on", "off"), default=None,
                  help="on (default): split MeshNet's thalamus into left and right with the 104-class model; "
                  "off: bilateral only, without that model (no side volumes; the QC checks of the sides are "
                  "reported as not run)"),
    )
    # The 18-class model has one bilateral class; each of its voxels takes the side of the nearer
    # left or right thalamus class of the 104-class model.
    labels = SideLabels(left=("Left-Thalamus-Proper*",), right=("Right-Thalamus-Proper*",),
                        source="model21_104class classes nearest to each voxel of model30chan18cls 'Thalamus'")
    envelope_rank = 1  # no licence, no GPU, no FSL

    def check_tools(self, config) -> ToolStatus:
        from thalamus_bidsapp.tools.meshnet_models import SIDES_MODEL, model_spec, resolve_and_verify

        sides = config.option("meshnet_sides", "on") != "off"
        try:
            # Downloads the weights on first use (then cached); offline, give the options.
            model_dir = resolve_and_verify(config.option("meshnet_model"), model_spec())[0]
            sides_model_dir = (resolve_and_verify(config.option("meshnet_sides_model"), model_spec(SIDES_MODEL))[0]
                               if sides else None)
        except ThalamusError as err:
            return ToolStatus(f"{err}. {models_needed(sides)}")
        if not sides:
            LOGGER.warning("MeshNet runs bilateral only (--meshnet-sides off): no left and right thalamus, "
                           "and the QC checks of the sides are not run")
            return ToolStatus(None, {"model_dir": model_dir, "sides_model_dir": None, "sides_off": SIDES_OFF})
        return ToolStatus(None, {"model_dir": model_dir, "sides_model_dir": sides_model_dir})

    def template_segmenter(self, settings):
        """MeshNet (with left and right when the sides model is set) on an image in memory."""
        if not settings.get("model_dir"):
            return None
        model_dir, sides_model_dir = Path(settings["model_dir"]), settings.get("sides_model_dir")

        def segment(image, threads: int):
            import numpy as np

            from thalamus_bidsapp.tools.meshnet import segment_thalamus, segment_thalamus_sides

            if sides_model_dir is not None:
                _, sides, provenance = segment_thalamus_sides(image, model_dir, Path(sides_model_dir),
                                                              threads=threads)
                return np.asarray(sides, dtype=np.uint8), dict(SIDE_REGIONS), provenance
            mask, provenance = segment_thalamus(image, model_dir, threads=threads)
            return (np.asarray(mask.dataobj) > 0).astype(np.uint8), {"bilateral": (1,)}, provenance

        return segment

    def check_installation(self, options):
        """MeshNet's weights and its sides model (checked by sha256, never downloaded here) and PyTorch."""
        from thalamus_bidsapp.tools import meshnet_models
        from thalamus_bidsapp.tools.check import CheckReport, python_package

        findings = [python_package("PyTorch", "torch")]
        sources = dict(getattr(options, "option_sources", {}) or {})
        findings += _model_findings(meshnet_models.model_spec(), options.option("meshnet_model"), required=True,
                                    sources=sources)
        # The 104-class model splits the mask into left and right; only --meshnet-sides off does without it.
        sides = options.option("meshnet_sides") != "off"
        findings += _model_findings(meshnet_models.model_spec(meshnet_models.SIDES_MODEL),
                                    options.option("meshnet_sides_model"), required=sides, sources=sources)
        return CheckReport(NAME, "method", tuple(findings))

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(MeshNetThalamus(model_dir=str(ctx.settings["model_dir"]), threads=ctx.omp_nthreads),
                       name=f"{NAME}_thalamus", n_procs=ctx.omp_nthreads, mem_gb=3)
        if ctx.settings.get("sides_model_dir") is not None:
            node.inputs.sides_model_dir = str(ctx.settings["sides_model_dir"])
        elif ctx.settings.get("sides_off"):
            node.inputs.sides_off = str(ctx.settings["sides_off"])
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

#: Why a MeshNet mask has no sides when the user asked for bilateral only.
SIDES_OFF = "left and right not measured: bilateral only was asked for (--meshnet-sides off)"


def models_needed(sides: bool = True) -> str:
    """What MeshNet needs, naming both models (the bilateral one and, unless off, the left/right one)."""
    from thalamus_bidsapp.tools.meshnet_models import SIDES_MODEL, model_spec

    main, side = model_spec(), model_spec(SIDES_MODEL)
    if not sides:
        return (f"MeshNet needs its model {main.name} ({main.option} DIR or ${main.env_var}, or network access "
                "once to fill the user cache)")
    return (f"MeshNet needs two models: {main.name} (bilateral; {main.option} DIR or ${main.env_var}) and "
            f"{side.name} (left/right; {side.option} DIR or ${side.env_var}), or network access once to fill the "
            "user cache; --meshnet-sides off runs it without the left/right model (bilateral only)")


def _model_findings(spec, option_value, *, required: bool, sources: dict[str, str] | None = None) -> list:
    """What --check-tools reports of one pinned model: its folder (option, environment, cache) and files."""
    from thalamus_bidsapp.tools import meshnet_models
    from thalamus_bidsapp.tools.check import Finding, data_file, writable_dir

    label = "model folder" if spec.env_var == meshnet_models.MODEL_ENV_VAR else f"{spec.name} folder (left/right)"
    sources = sources or {}

    def name(fname: str) -> str:
        return fname if spec.env_var == meshnet_models.MODEL_ENV_VAR else f"{spec.name}/{fname}"

    given = option_value
    if given is not None:
        source = sources.get(spec.option.lstrip("-").replace("-", "_"), spec.option)
        return [Finding(label, Path(given).is_dir(),
                        f"{given} (from {source})" if Path(given).is_dir() else f"not found: {given}", required=required),
                *(data_file(name(fname), Path(given) / fname, sha, required=required) for fname, sha in spec.sha256.items())]
    cache = meshnet_models.default_cache_dir(spec)
    if any((cache / fname).is_file() for fname in spec.sha256):
        return [Finding(label, True, f"{cache} (user cache)", required=required),
                *(data_file(name(fname), cache / fname, sha, required=required) for fname, sha in spec.sha256.items())]
    main = spec.env_var == meshnet_models.MODEL_ENV_VAR
    return [writable_dir("model cache" if main else f"{spec.name} cache", cache, required=required),
            Finding("weights" if main else f"{spec.name} weights", False,
                    f"not in {cache} yet: the first run downloads them from {spec.url_base} (needs network), "
                    f"or give {spec.option} / {spec.env_var}", required=False)]


class _MeshNetInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    model_dir = traits.Str(mandatory=True, desc="folder with the verified model.json and model.bin")
    sides_model_dir = traits.Str(desc="folder with the verified 104-class model (left/right); none: no sides")
    sides_off = traits.Str(desc="why there are no sides (bilateral only was asked for), recorded in the sidecar")
    threads = traits.Int(1, usedefault=True, nohash=True, desc="torch CPU threads (not hashed)")


class MeshNetThalamus(SimpleInterface):
    """brainchop's 18-class MeshNet on the conformed T1w; class 'Thalamus' back on the T1w grid, split into sides."""

    input_spec = _MeshNetInputSpec
    output_spec = RecordOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.tools.meshnet import segment_thalamus, segment_thalamus_sides

        cwd = Path(runtime.cwd)
        t1w = nib.load(self.inputs.t1w)
        if isdefined(self.inputs.sides_model_dir):
            mask, sides, provenance = segment_thalamus_sides(
                t1w, Path(self.inputs.model_dir), Path(self.inputs.sides_model_dir), threads=self.inputs.threads)
        else:
            (mask, provenance), sides = segment_thalamus(t1w, Path(self.inputs.model_dir),
                                                         threads=self.inputs.threads), None
            if isdefined(self.inputs.sides_off):
                provenance = {**provenance, "Sides": {"Run": False, "Reason": self.inputs.sides_off}}
        self._results["record_file"] = write_mask_record(mask, NAME, "T1w", {"Tool": "MeshNet", **provenance},
                                                         folder=cwd, sides=sides,
                                                         side_labels=METHOD.labels.to_json())
        self._results["out_file"] = str(cwd / f"thalamus_{NAME}.nii.gz")
        return runtime
