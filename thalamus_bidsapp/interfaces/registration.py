"""The nipype interface registering FLAIR and R1 to the T1w (the strategies are in ``tools/registration.py``)."""

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

from thalamus_bidsapp.config import DEFAULT_ANTS_CUTOFF, DEFAULT_FLIRT_CUTOFF
from thalamus_bidsapp.interfaces.base import (
    load_image_file,
    save_json,
)

LOGGER = logging.getLogger(__name__)


class _RegisterInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="reoriented FLAIR or R1 map")
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (reference grid)")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    modality = traits.Enum("FLAIR", "R1map", mandatory=True, desc="what is registered")
    flirt_cutoff = traits.Float(DEFAULT_FLIRT_CUTOFF, usedefault=True, desc="MI cut-off for FLIRT strategies (nats)")
    ants_cutoff = traits.Float(DEFAULT_ANTS_CUTOFF, usedefault=True, desc="MI cut-off for ANTs rigid (nats)")
    scale_r1 = traits.Bool(False, usedefault=True, desc="scale the registered R1 to 0..1000 in the brain")
    reorient_record = File(exists=True, desc="JSON record of the moving image's reorientation")


class _RegisterOutputSpec(TraitedSpec):
    out_file = File(desc="registered (and, for R1, scaled) image on the T1w grid; undefined when excluded")
    transform = File(desc="selected transform (FSL .mat or ITK .txt); undefined when excluded")
    qc_file = File(exists=True, desc="QC rows: image, strategy, mi, cutoff, passed, selected, reason")
    provenance_file = File(exists=True, desc="JSON provenance for the sidecars")


class RegisterToT1w(SimpleInterface):
    """FLIRT/ANTs candidates scored by mutual information; the QC rule picks one or excludes the image."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.bidsio.atomic import save_nifti
        from thalamus_bidsapp.image.intensity import scale_r1_image
        from thalamus_bidsapp.tools.registration import register_to_t1w

        cwd = Path(runtime.cwd)
        outcome = register_to_t1w(
            Path(self.inputs.moving), Path(self.inputs.t1w), Path(self.inputs.brain_mask), self.inputs.modality,
            cwd / "candidates", flirt_cutoff=self.inputs.flirt_cutoff, ants_cutoff=self.inputs.ants_cutoff,
        )
        self._results["qc_file"] = str(cwd / "registration_qc.tsv")
        outcome.qc.to_csv(self._results["qc_file"], sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        provenance = {}
        if isdefined(self.inputs.reorient_record):
            provenance.update(json.loads(Path(self.inputs.reorient_record).read_text()))
        provenance |= {
            "Registration": {"Modality": self.inputs.modality, "SelectedStrategy": outcome.selected,
                             "MutualInformation": outcome.mi, "Decision": outcome.summary,
                             "TransformFormat": outcome.transform_format, "FSLVersion": outcome.fsl_version,
                             "FlirtCutoff": self.inputs.flirt_cutoff, "AntsCutoff": self.inputs.ants_cutoff},
        }
        if outcome.excluded:
            LOGGER.warning("%s excluded: %s", self.inputs.modality, outcome.summary)
        else:
            registered = outcome.registered_image
            if self.inputs.scale_r1:
                registered = save_nifti(
                    scale_r1_image(load_image_file(str(registered)), load_image_file(self.inputs.brain_mask),
                                   names=(f"registered R1 map {registered}", f"brain mask {self.inputs.brain_mask}")),
                    cwd / "r1_scaled.nii.gz")
                provenance["Scaling"] = ("inside the T1w brain mask, clipped at the 99th percentile and rescaled "
                                         "linearly to 0..1000; 0 outside the mask")
            self._results["out_file"] = str(registered)
            self._results["transform"] = str(outcome.transform)
        self._results["provenance_file"] = save_json(provenance, "provenance.json")
        return runtime
