"""nipype interfaces that copy results into the output dataset, with their sidecars."""

from __future__ import annotations

import json
import logging
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

from thalamus_bidsapp.interfaces.base import (
    defined_or_none,
    nifti_extension,
)

LOGGER = logging.getLogger(__name__)


class _PublishMasksInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="subject and session entities")
    sidecar = traits.Dict(desc="sidecar fields shared by every mask (Sources, SpatialReference)")
    fill_provenance = File(exists=True, desc="the lesion fill's provenance JSON (LesionFilled)")
    filled_methods = traits.List(traits.Str, desc="methods that receive the lesion-filled T1w when it is filled")
    filled_t1w_uri = traits.Str(desc="BIDS URI of the published lesion-filled T1w")


class _PublishMasksOutputSpec(TraitedSpec):
    out_files = traits.List(File(), desc="published masks")


class PublishMasks(SimpleInterface):
    """Publish every recorded thalamus mask as ``space-T1w_label-thalamus_desc-<method>_mask``.

    A mask with sides also gets ``space-T1w_seg-thalamus_desc-<method>_dseg.nii.gz``
    (0 background, 1 left, 2 right) and its lookup table ``..._dseg.tsv``.
    """

    input_spec = _PublishMasksInputSpec
    output_spec = _PublishMasksOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish
        from thalamus_bidsapp.methods.records import filled_methods_of, records_with_masks

        records = records_with_masks(self.inputs.record_files) if isdefined(self.inputs.record_files) else []
        out_files = []
        filled = filled_methods_of(defined_or_none(self.inputs.fill_provenance), self.inputs.filled_methods)
        for record in records:
            record["provenance"] = {**record["provenance"], **_lesion_fields(record, filled, self.inputs)}
            entities = {**self.inputs.entities, "space": "T1w", "label": "thalamus", "desc": record["method"],
                        "suffix": "mask"}
            sidecar = {
                **record["provenance"],
                "Type": "ROI",
                "Description": "Thalamus, left and right merged, binary mask on the T1w grid",
                "Method": record["method"],
                "Contrast": record["contrast"],
                **(self.inputs.sidecar or {}),
            }
            out = derivative_path(Path(self.inputs.output_dir), entities)
            out_files.append(str(publish(Path(record["mask_file"]), out, sidecar)))
            if record.get("sides_file"):
                out_files.extend(self._publish_sides(record, out))
        self._results["out_files"] = out_files
        return runtime

    def _publish_sides(self, record: dict, mask_path: Path) -> list[str]:
        """The mask's side map as ``space-T1w_seg-thalamus_desc-<method>_dseg`` with its lookup table."""
        from thalamus_bidsapp.bidsio.atomic import write_if_changed
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish
        from thalamus_bidsapp.image.sides import LOOKUP

        output_dir = Path(self.inputs.output_dir)
        entities = {**self.inputs.entities, "space": "T1w", "seg": "thalamus", "desc": record["method"],
                    "suffix": "dseg"}
        mask_uri = f"bids::{mask_path.relative_to(output_dir).as_posix()}"
        shared = dict(self.inputs.sidecar or {})
        sidecar = {
            **record["provenance"],
            "Description": "Left and right thalamus of the desc-" + record["method"] + " mask on the T1w grid "
                           "(0 background, 1 left, 2 right; left is the subject's left); its non-zero voxels are "
                           "exactly the mask's",
            "Method": record["method"],
            "Contrast": record["contrast"],
            "SideLabels": record.get("side_labels", {}),
            **shared,
            "Sources": [mask_uri, *shared.get("Sources", [])],
        }
        out = derivative_path(output_dir, {**entities, "extension": ".nii.gz"})
        lookup = derivative_path(output_dir, {**entities, "extension": ".tsv"})
        write_if_changed("index\tname\tabbreviation\n" + "".join(f"{i}\t{n}\t{a}\n" for i, n, a in LOOKUP), lookup)
        return [str(publish(Path(record["sides_file"]), out, sidecar)), str(lookup)]


def _lesion_fields(record: dict, filled_methods: list[str], inputs) -> dict:
    """Sidecar fields saying whether a mask was made on the lesion-filled T1w (and which)."""
    from thalamus_bidsapp.methods.records import made_on_filled_t1w

    if not filled_methods and record["provenance"].get("LesionFilled") is None:
        return {"LesionFilled": False}
    if made_on_filled_t1w(record, filled_methods):
        uri = defined_or_none(inputs.filled_t1w_uri)
        return {"LesionFilled": True, **({"LesionFilledT1w": uri} if uri else {})}
    return {"LesionFilled": False}


class _PublishInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, desc="finished file to publish; nothing is published when undefined")
    output_dir = traits.Directory(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the output name")
    sidecar = traits.Dict(desc="JSON sidecar content")
    provenance_files = InputMultiObject(File(exists=True), desc="JSON files merged into the sidecar")


class _PublishOutputSpec(TraitedSpec):
    out_file = File(desc="published path")


class PublishDerivative(SimpleInterface):
    """Copy a result into the output dataset under its BIDS name, atomically, with a sidecar."""

    input_spec = _PublishInputSpec
    output_spec = _PublishOutputSpec
    # Always checked, but an identical file is not rewritten (see bidsio.derivatives.publish).
    _always_run = True

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish

        if not isdefined(self.inputs.in_file):
            return runtime  # an optional result that was not produced (e.g. an excluded R1 map)
        entities = dict(self.inputs.entities)
        if "extension" not in entities:
            entities["extension"] = nifti_extension(self.inputs.in_file)
        sidecar = None
        if self.inputs.sidecar or self.inputs.provenance_files:
            sidecar = {}
            for prov in self.inputs.provenance_files or []:
                sidecar.update(json.loads(Path(prov).read_text()))
            sidecar.update(self.inputs.sidecar or {})
        out = derivative_path(Path(self.inputs.output_dir), entities)
        self._results["out_file"] = str(publish(Path(self.inputs.in_file), out, sidecar))
        return runtime
