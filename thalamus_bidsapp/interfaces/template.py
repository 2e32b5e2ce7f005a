"""nipype interfaces of template space: the T1w registered to the template, the prior warped back, masks warped in."""


from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

#: Sides of the prior, in the order of ``outputnode.thalamus_prior``.
SIDES = ("L", "R")


def _brain_masked(t1w: str, brain_mask: str, out: Path) -> Path:
    import nibabel as nib
    import numpy as np

    from thalamus_bidsapp.image.nifti import float32_like

    img = nib.load(t1w)
    data = np.asarray(img.dataobj, dtype=np.float32) * (np.asarray(nib.load(brain_mask).dataobj) > 0)
    nib.save(float32_like(data, img), str(out))
    return out


class _RegisterTemplateInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (also the prior's output grid)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    target = File(exists=True, mandatory=True, desc="the template's skull-stripped T1w (TemplateFlow)")
    schedule = traits.Enum("standard", "fast", usedefault=True, desc="registration schedule")
    prior = File(exists=True, mandatory=True, desc="4D probabilistic atlas in template space")
    prior_volumes = traits.Dict(mandatory=True, desc="side (L, R) -> 0-based volume of the atlas")


class _RegisterTemplateOutputSpec(TraitedSpec):
    forward = File(exists=True, desc="T1w -> template composite transform (HDF5)")
    inverse = File(exists=True, desc="template -> T1w composite transform (HDF5)")
    provenance_file = File(exists=True, desc="JSON: registration settings")
    thalamus_prior = traits.List(File(exists=True), desc="[left, right] prior probability maps on the T1w grid")


class RegisterToTemplate(SimpleInterface):
    """Brain-masked T1w to the template brain with antspyx (affine + SyN); the thalamus prior warped back.

    The prior is warped in the same process as the registration because
    loading antspyx in a fresh worker (about 1.5 s) costs more than the warp
    itself (about 0.5 s), and the prior is on the session's critical path
    (the QC and the lesion filling wait for it).
    """

    input_spec = _RegisterTemplateInputSpec
    output_spec = _RegisterTemplateOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.tools.ants import ants_to_template

        cwd = Path(runtime.cwd)
        brain = _brain_masked(self.inputs.t1w, self.inputs.brain_mask, cwd / "t1w_brain.nii.gz")
        result = ants_to_template(brain, Path(self.inputs.target), cwd / "forward.h5", cwd / "inverse.h5",
                                  schedule=self.inputs.schedule)
        self._results["forward"] = str(result.forward)
        self._results["inverse"] = str(result.inverse)
        self._results["provenance_file"] = str(cwd / "provenance.json")
        Path(self._results["provenance_file"]).write_text(json.dumps({"Registration": result.settings}, indent=2))
        self._results["thalamus_prior"] = [
            str(path) for path in warp_prior(Path(self.inputs.prior), self.inputs.prior_volumes, Path(self.inputs.t1w),
                                             result.inverse, result.forward, cwd)]
        return runtime


def warp_prior(prior: Path, volumes: dict, t1w: Path, inverse: Path, forward: Path, out_dir: Path) -> list[Path]:
    """The atlas's left and right thalamus maps on the T1w grid (linear), float32 in [0, 1]: [left, right].

    ``prior`` is the 4D atlas in template space, ``volumes`` maps each side
    (L, R) to its 0-based volume; ``inverse`` (template -> T1w) resamples and
    ``forward`` limits the work to the box the prior maps into.
    """
    import nibabel as nib

    from thalamus_bidsapp.image.prior import clip_probability, prior_sides
    from thalamus_bidsapp.tools.ants import ants_resample

    sides = prior_sides(nib.load(str(prior)), {side: int(volumes[side]) for side in SIDES})
    out_files = []
    for side in SIDES:
        in_template = out_dir / f"prior_{side}_template.nii.gz"
        nib.save(sides[side], str(in_template))
        warped = ants_resample(in_template, t1w, inverse, opposite_transform=forward)
        out = out_dir / f"prior_{side}.nii.gz"
        nib.save(clip_probability(warped), str(out))
        out_files.append(out)
    return out_files


class _MasksToTemplateInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records (none when no method ran)")
    forward = File(exists=True, mandatory=True, desc="T1w -> template composite transform")
    inverse = File(exists=True, mandatory=True, desc="template -> T1w composite transform (limits the work)")
    target = File(exists=True, mandatory=True, desc="the template grid")


class _MasksToTemplateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="JSON list of the resampled masks: method, contrast, file")


class MasksToTemplate(SimpleInterface):
    """Each thalamus mask onto the template grid: linear interpolation, then >= 0.5 (uint8 0/1)."""

    input_spec = _MasksToTemplateInputSpec
    output_spec = _MasksToTemplateOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from thalamus_bidsapp.image.prior import binarise
        from thalamus_bidsapp.methods.records import records_with_masks
        from thalamus_bidsapp.tools.ants import ants_resample

        cwd = Path(runtime.cwd)
        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        resampled = []
        for record in records:
            method = record["method"]
            warped = ants_resample(Path(record["mask_file"]), Path(self.inputs.target), Path(self.inputs.forward),
                                   opposite_transform=Path(self.inputs.inverse))
            binary = cwd / f"{method}_mask.nii.gz"
            nib.save(binarise(warped, 0.5), str(binary))
            resampled.append({"method": method, "contrast": record["contrast"], "file": str(binary)})
        self._results["out_file"] = str(cwd / "template_masks.json")
        Path(self._results["out_file"]).write_text(json.dumps(resampled, indent=2))
        return runtime


class _PublishTemplateMasksInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="JSON list from MasksToTemplate")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="subject and session entities")
    template = traits.Str(mandatory=True, desc="template name (the space entity)")
    sidecar = traits.Dict(desc="sidecar fields shared by every mask")


class PublishTemplateMasks(SimpleInterface):
    """Publish the resampled masks as ``space-<template>_label-thalamus_desc-<method>_mask``."""

    input_spec = _PublishTemplateMasksInputSpec
    output_spec = _MasksToTemplateOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish

        output_dir = Path(self.inputs.output_dir)
        for item in json.loads(Path(self.inputs.in_file).read_text()):
            method = item["method"]
            entities = {**self.inputs.entities, "space": self.inputs.template, "label": "thalamus",
                        "desc": method, "suffix": "mask"}
            t1w_mask = derivative_path(output_dir, {**entities, "space": "T1w"})
            sidecar = {
                "Type": "ROI",
                "Description": f"The desc-{method} thalamus mask (left and right merged) resampled onto the "
                               f"{self.inputs.template} grid (2 mm): linear interpolation, then >= 0.5",
                "Method": method,
                "Contrast": item["contrast"],
                **(self.inputs.sidecar or {}),
            }
            sidecar["Sources"] = [f"bids::{t1w_mask.relative_to(output_dir).as_posix()}", *sidecar.get("Sources", [])]
            publish(Path(item["file"]), derivative_path(output_dir, entities), sidecar)
        self._results["out_file"] = self.inputs.in_file
        return runtime


def output_uri(output_dir: Path, entities: dict) -> str:
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    return f"bids::{derivative_path(output_dir, entities).relative_to(output_dir).as_posix()}"
