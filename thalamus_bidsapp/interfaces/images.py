"""nipype interfaces on the T1w: reorientation, the brain mask and its skull-stripping check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.interfaces.base import (
    load_image_file,
    save_image,
    save_json,
)
from thalamus_bidsapp.methods.records import CONTENT_DIGEST_DESC, ReadsOutsideFiles

LOGGER = logging.getLogger(__name__)


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to reorient")
    content_digest = traits.Str(desc=CONTENT_DIGEST_DESC)


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image in RAS+ storage order")
    record_file = File(exists=True, desc="JSON record of the reorientation")


class Reorient(ReadsOutsideFiles, SimpleInterface):
    """Reorient an image to RAS+ (world geometry unchanged) and record how."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec
    outside_inputs = ("in_file",)

    def _run_interface(self, runtime):
        from thalamus_bidsapp.image.reorient import reorient_to_ras

        img = load_image_file(self.inputs.in_file)
        if img.ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if img.ndim != 3:
            raise ThalamusError(f"{self.inputs.in_file} is not a 3D image (shape {img.shape})", EXIT_DATAERR)
        out, record = reorient_to_ras(img)
        self._results["out_file"] = save_image(out, "reoriented.nii.gz")
        self._results["record_file"] = save_json(record, "reorientation.json")
        return runtime


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reoriented T1w")
    threads = traits.Int(1, usedefault=True, nohash=True, desc="CPU threads for the network (not hashed)")


class _MaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary mask on the T1w grid")
    provenance_file = File(exists=True, desc="JSON provenance for the sidecar")


class BrainMask(SimpleInterface):
    """T1w brain mask with deepbet."""

    input_spec = _BrainMaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.tools.deepbet import brain_mask

        mask, provenance = brain_mask(load_image_file(self.inputs.in_file), threads=self.inputs.threads)
        self._results["out_file"] = save_image(mask, "brain_mask.nii.gz")
        self._results["provenance_file"] = save_json(provenance, "provenance.json")
        return runtime


class _SkullStripInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, desc="image on the T1w grid (nothing is judged when undefined)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    in_provenance = File(exists=True, desc="provenance JSON of the image, kept in the output")


class _SkullStripOutputSpec(TraitedSpec):
    provenance_file = File(exists=True, desc="the input provenance with SkullStripped and how it was decided")


class SkullStripCheck(SimpleInterface):
    """Whether an image is already skull-stripped, for its sidecar's ``SkullStripped`` (BIDS derivatives).

    The app never strips the images it publishes: an image is skull-stripped
    when its input was, which is measured (almost no signal outside the brain
    mask, :func:`thalamus_bidsapp.image.masks.looks_skull_stripped`).
    """

    input_spec = _SkullStripInputSpec
    output_spec = _SkullStripOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from thalamus_bidsapp.image.masks import SKULL_MARGIN_MM, SKULL_STRIPPED_MAX_FRACTION, looks_skull_stripped

        provenance = json.loads(Path(self.inputs.in_provenance).read_text()) if isdefined(
            self.inputs.in_provenance) else {}
        if isdefined(self.inputs.in_file):
            img, mask = load_image_file(self.inputs.in_file), load_image_file(self.inputs.brain_mask)
            stripped, fraction = looks_skull_stripped(np.asanyarray(img.dataobj), np.asanyarray(mask.dataobj),
                                                      img.header.get_zooms()[:3])
            rule = (f"{SKULL_STRIPPED_MAX_FRACTION:.0%} or less of its signal (above 10% of the brain's 99th "
                    f"percentile) more than {SKULL_MARGIN_MM:g} mm outside the brain mask means skull-stripped")
            if stripped is None:
                provenance.update(SkullStripped=False, SkullStrippedDecision=f"unknown: no signal to judge ({rule})")
            else:
                provenance.update(SkullStripped=stripped, SkullStrippedDecision=(
                    f"measured: {fraction:.1%} of the image's signal lies outside the brain ({rule})"))
        self._results["provenance_file"] = save_json(provenance, "skullstripped.json")
        return runtime
