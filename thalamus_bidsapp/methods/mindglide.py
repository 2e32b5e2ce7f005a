"""``mindglide``: MindGlide on T1w, FLAIR and R1; its deep grey matter label within an envelope mask; ensembles."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

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
from thalamus_bidsapp.methods.capabilities import SIDE_REGIONS, EnvelopeUser, LesionSource, TemplateSegmenter
from thalamus_bidsapp.methods.records import read_mask_record, write_mask_record

#: MindGlide's contrast names -> the BIDS suffix recorded as the mask's contrast.
_BIDS_CONTRAST = {"T1w": "T1w", "FLAIR": "FLAIR", "R1": "R1map"}


def _envelope_choices() -> tuple[str, ...]:
    from thalamus_bidsapp.methods.registry import envelope_names

    return envelope_names()


class MindGlide(EnvelopeUser, LesionSource, TemplateSegmenter, SegmentationMethod):
    name = "mindglide"
    order = 50
    # Okabe-Ito vermillion, sky blue and yellow for the single contrasts; Paul Tol's muted colours for the ensembles.
    colors = {"mindglide": "#D55E00", "mindglideT1w": "#D55E00", "mindglideFLAIR": "#56B4E9", "mindglideR1": "#F0E442",
              "ensembleT1wFLAIR": "#332288", "ensembleT1wR1": "#117733", "ensembleR1FLAIR": "#CC6677",
              "ensembleT1wFLAIRR1": "#882255"}
    citation = ("Goebl P, et al. (2024). Repurposing clinical MRI archives for multiple sclerosis research with a "
                "flexible, single-modality approach: new insights from the MindGlide model. medRxiv. "
                "doi:10.1101/2024.03.22.24304705")
    options = (
        CliOption("--mindglide-model", kind="file", metavar="FILE", env="MODEL_PATH",
                  help="MindGlide checkpoint (default: $MODEL_PATH, then the mindglide package's cache; "
                  "weights are never downloaded during a run)"),
        CliOption("--mindglide-envelope", kind="choice", choices=_envelope_choices,
                  help="thalamus mask that bounds MindGlide's deep grey matter label (default: the first of "
                  "the choices that runs, in this order; FIRST as in the paper)"),
        CliOption("--mindglide-device", kind="choice", choices=("cpu", "cuda", "auto"), default="cpu",
                  help="where MindGlide runs (default: cpu; 'auto' uses a GPU when one works)"),
    )
    # MindGlide has no thalamus label: each voxel of its masks (and ensembles) takes the envelope's side.
    labels = SideLabels(source="deep grey matter label x envelope mask; sides from the envelope's")
    optional_inputs = {"flair": "MindGlide on FLAIR",
                       "r1map": "MindGlide on R1"}

    def init_lesion_nodes(self, ctx: NodeContext):
        """MindGlide's "Lesion" class on the registered FLAIR (else the T1w), before the lesion filling."""
        from nipype.pipeline import engine as pe

        node = pe.Node(MindGlideLesions(model_path=str(ctx.settings["model_path"]),
                                        device=ctx.settings.get("device", "cpu")),
                       name="mindglide_lesions", n_procs=ctx.omp_nthreads, mem_gb=6)
        ctx.workflow.connect([(ctx.inputnode, node, [("t1w", "t1w"), ("flair", "flair")])])
        return node

    def owns(self, desc: str) -> bool:
        return desc.startswith(("mindglide", "ensemble"))

    def envelope_choice(self, config) -> str | None:
        return config.option("mindglide_envelope")

    def check_tools(self, config) -> ToolStatus:
        from thalamus_bidsapp.tools.mindglide import resolve_weights

        try:
            model = resolve_weights(config.option("mindglide_model"), allow_download=False,
                                    offline=config.environment.hf_hub_offline)
        except ThalamusError as err:
            return ToolStatus(str(err))
        return ToolStatus(None, {"model_path": model, "device": config.option("mindglide_device", "cpu")})

    def template_segmenter(self, settings):
        """MindGlide on the within-subject template (a T1w), its deep grey matter label x the envelope's template mask.

        Its masks and rows are named ``mindglideT1w``, like the session masks of the T1w, so that the two modes
        pair up in the change table; its sides are the envelope's, as for the session masks.
        """
        if not settings.get("model_path"):
            return None
        model_path, device = settings["model_path"], settings.get("device", "cpu")

        def segment(image, threads: int, *, envelope):
            import nibabel as nib

            from thalamus_bidsapp.image.ensembles import mask_like
            from thalamus_bidsapp.image.sides import sides_within
            from thalamus_bidsapp.tools import mindglide

            model = mindglide.load_model(model_path, device, allow_download=False)
            with tempfile.TemporaryDirectory(prefix="mindglide_template_") as folder:
                template_file = Path(folder) / "template_T1w.nii.gz"
                nib.save(image, str(template_file))
                seg = mindglide.segment_image(template_file, model)
                seg = nib.Nifti1Image(np.asarray(seg.dataobj), seg.affine)
            envelope_img = mask_like(np.asarray(envelope.labels) > 0, image)
            mask = np.asarray(mindglide.mindglide_thalamus(seg, envelope_img).dataobj) > 0
            provenance = mindglide.provenance(model, envelope=envelope.method, contrast="T1w")
            if not envelope.has_sides:
                return mask.astype(np.uint8), {"bilateral": (1,)}, provenance
            sides = sides_within(mask, np.asarray(envelope.labels), image.affine, image.header.get_zooms()[:3])
            return sides, dict(SIDE_REGIONS), {**provenance, "SideLabels": f"sides of the {envelope.method} "
                                                                             "envelope on the template"}

        return segment

    @property
    def template_mask_name(self) -> str:
        return "mindglideT1w"

    def check_installation(self, options):
        from thalamus_bidsapp.tools.mindglide import check_installation

        return check_installation(options)

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        node = pe.Node(
            MindGlideThalamus(model_path=str(ctx.settings["model_path"]), device=ctx.settings.get("device", "cpu")),
            name="mindglide_thalamus", n_procs=ctx.omp_nthreads, mem_gb=6,
        )
        ctx.workflow.connect([(ctx.inputnode, node, [("t1w", "t1w"), ("flair", "flair"), ("r1", "r1")])])
        envelope_node, field = ctx.envelope
        ctx.workflow.connect(envelope_node, field, node, "envelope_record")
        return MethodNodes(records=[(node, "record_files")])

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        contrasts = sorted_unique([m.sidecar.get("Contrast") for m in masks if m.desc.startswith(self.name)])
        envelopes = sorted_unique([m.sidecar.get("Envelope") for m in masks])
        text = (f"{tool_label(masks, self.name)} {cite(self.name)} on {', '.join(contrasts) or 'T1w'}, its deep "
                f"grey matter label intersected with the {', '.join(envelopes) or 'FIRST'} thalamus mask")
        if any(m.desc.startswith("ensemble") for m in masks):
            text += "; ensembles of these masks by voxel-wise mean binarised at 0.5"
        return text


#: This module's registry entry (methods/registry.py collects every module's METHOD).
METHOD = MindGlide()


class _MindGlideInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    flair = File(exists=True, desc="FLAIR registered onto the T1w grid")
    r1 = File(exists=True, desc="scaled R1 map registered onto the T1w grid")
    envelope_record = File(exists=True, mandatory=True, desc="mask record of the envelope method")
    model_path = traits.Str(mandatory=True, desc="MindGlide checkpoint")
    device = traits.Str("cpu", usedefault=True, desc="cpu, cuda or auto")


class _MindGlideOutputSpec(TraitedSpec):
    record_files = OutputMultiObject(File(exists=True), desc="mask records: per contrast, then ensembles")


class MindGlideThalamus(SimpleInterface):
    """MindGlide on T1w, FLAIR and R1 with one loaded network; DGM x envelope; ensembles."""

    input_spec = _MindGlideInputSpec
    output_spec = _MindGlideOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.image.ensembles import build_ensembles
        from thalamus_bidsapp.tools import mindglide

        envelope = read_mask_record(self.inputs.envelope_record)
        envelope_img = nib.load(envelope["mask_file"])
        images = {
            "T1w": self.inputs.t1w,
            "FLAIR": self.inputs.flair if isdefined(self.inputs.flair) else None,
            "R1": self.inputs.r1 if isdefined(self.inputs.r1) else None,
        }
        segmentations = mindglide.segment_contrasts(images, model_path=self.inputs.model_path,
                                                    device=self.inputs.device, allow_download=False)
        model = mindglide.load_model(self.inputs.model_path, self.inputs.device, allow_download=False)
        cwd = Path(runtime.cwd)
        sides_of = _EnvelopeSides(envelope)
        records, masks = [], {}
        for contrast, seg in segmentations.items():
            mask = mindglide.mindglide_thalamus(seg, envelope_img)
            masks[contrast] = mask
            provenance = mindglide.provenance(model, envelope=envelope["method"], contrast=contrast)
            records.append(write_mask_record(mask, f"mindglide{contrast}", _BIDS_CONTRAST[contrast],
                                             provenance, folder=cwd, **sides_of(mask)))
        for name, result in build_ensembles({c: masks.get(c) for c in ("T1w", "FLAIR", "R1")}).items():
            contrast = "+".join(_BIDS_CONTRAST[c] for c in result.contrasts)
            records.append(write_mask_record(result.mask, f"ensemble{name}", contrast,
                                             {"Tool": "thalamus_bidsapp ensemble of MindGlide masks",
                                              **result.provenance()},
                                             folder=cwd, missing=list(result.missing), **sides_of(result.mask)))
        self._results["record_files"] = records
        return runtime


class _EnvelopeSides:
    """The sides of a mask inside the envelope: the envelope's side of each voxel (its nearer side outside it)."""

    def __init__(self, envelope: dict) -> None:
        import nibabel as nib

        self.method = envelope["method"]
        self.sides = (np.asarray(nib.load(envelope["sides_file"]).dataobj) if envelope.get("sides_file")
                      else None)
        self.labels = envelope.get("side_labels", {})

    def __call__(self, mask) -> dict:
        """``sides`` and ``side_labels`` for :func:`write_mask_record` (nothing when the envelope has none)."""
        if mask is None or self.sides is None:
            return {}
        from thalamus_bidsapp.image.sides import sides_within

        sides = sides_within(np.asanyarray(mask.dataobj), self.sides, mask.affine, mask.header.get_zooms()[:3])
        return {"sides": sides, "side_labels": {"Left": ["envelope left"], "Right": ["envelope right"],
                                                "Source": f"sides of the {self.method} envelope mask",
                                                "Envelope": self.labels}}


class _MindGlideLesionsInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (unfilled)")
    flair = File(exists=True, desc="FLAIR registered onto the T1w grid (preferred: lesions show best on it)")
    model_path = traits.Str(mandatory=True, desc="MindGlide checkpoint")
    device = traits.Str("cpu", usedefault=True, desc="cpu, cuda or auto")


class _MindGlideLesionsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary lesion mask on the T1w grid")
    provenance_file = File(exists=True, desc="JSON provenance: tool, model, lesion class, contrast, volume")


class MindGlideLesions(SimpleInterface):
    """MindGlide's lesion class (from the package's label table) as the session's lesion mask."""

    input_spec = _MindGlideLesionsInputSpec
    output_spec = _MindGlideLesionsOutputSpec

    def _run_interface(self, runtime):
        import json

        import nibabel as nib

        from thalamus_bidsapp.image.lesion_load import lesion_volume_ml
        from thalamus_bidsapp.tools import mindglide

        contrast, image = ("FLAIR", self.inputs.flair) if isdefined(self.inputs.flair) else ("T1w", self.inputs.t1w)
        model = mindglide.load_model(self.inputs.model_path, self.inputs.device, allow_download=False)
        seg = mindglide.segment_image(image, model)
        mask = mindglide.lesion_mask(seg)
        cwd = Path(runtime.cwd)
        nib.save(mask, str(cwd / "lesion_mask.nii.gz"))
        code = mindglide.lesion_label()
        provenance = {
            **mindglide.provenance(model, contrast=contrast),
            "LesionSource": f"MindGlide class {code} ({mindglide.label_table()[code]}) on the {contrast}",
            "LesionMaskGrid": "T1w",
            "LabelsTaken": {str(code): mindglide.label_table()[code]},
            "LesionVolume_mL": lesion_volume_ml(np.asanyarray(mask.dataobj) > 0, mask.affine),
        }
        for key in ("Envelope", "EnvelopeRule"):
            provenance.pop(key, None)
        (cwd / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
        self._results["out_file"] = str(cwd / "lesion_mask.nii.gz")
        self._results["provenance_file"] = str(cwd / "provenance.json")
        return runtime
