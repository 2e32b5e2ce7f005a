"""Thalamic lesions on real anatomy (bert): filled from normal thalamus, or, when a lesion covers the whole
thalamus, from the documented fallback, flagged in the sidecar and in the session's QC.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests.lesions.conftest import stand_in_prior
from tests.lesions.planting import plant_lesions
from tests.qc.anatomy import save_mask, volumes_of
from thalamus_bidsapp.image.lesion_fill import FALLBACK, NORMAL_THALAMUS, fill_lesions
from thalamus_bidsapp.image.tissue_classes import tissue_classes
from thalamus_bidsapp.interfaces.lesions import LesionFill
from thalamus_bidsapp.qc.session import session_checks
from thalamus_bidsapp.qc.thresholds import load_thresholds

ZOOMS = (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def whole(bert_crop):
    """A lesion over the whole thalamus (both sides, one voxel beyond) and a registered-like, wider prior."""
    lesion = ndimage.binary_dilation(bert_crop.thalamus)
    image = bert_crop.t1w.copy()
    image[lesion] *= 0.55
    return image, lesion, stand_in_prior(bert_crop, dilate=2) >= 0.5


def test_a_lesion_over_the_whole_thalamus_is_filled_from_grey_matter_not_ventricle(bert_crop, whole):
    image, lesion, prior = whole
    result = fill_lesions(image, lesion, bert_crop.brain, ZOOMS, thalamus=prior, seed=1)
    assert result.fallback and result.thalamus_fill == FALLBACK
    assert "too little normal thalamus" in result.thalamus_fill_reason
    assert any("too little normal thalamus" in note for note in result.notes)
    classes = tissue_classes(image, bert_crop.brain, exclude=ndimage.binary_dilation(lesion))
    csf_border, low_white = classes.csf_border, classes.white_range[0]
    filled = result.image[lesion & prior]
    # Grey-matter intensities: never ventricle or background (darker than the CSF/grey border), never white matter.
    assert result.thalamus_range[0] > csf_border and filled.min() > csf_border
    assert filled.max() < low_white
    grey_centre = classes.centres[1]
    assert grey_centre - 10 < np.median(filled) < low_white
    provenance = result.provenance()
    assert provenance["ThalamusFillFallback"] is True and provenance["ThalamusFill"] == FALLBACK
    assert "too little normal thalamus" in provenance["ThalamusFillReason"]


def test_normal_thalamus_is_sampled_without_csf(bert_crop):
    intra = plant_lesions(bert_crop.t1w, bert_crop.aseg, seed=2, kinds=("intra",))
    prior = stand_in_prior(bert_crop, dilate=2) >= 0.5  # wide: reaches the ventricles
    result = fill_lesions(intra.image, intra.lesion, bert_crop.brain, ZOOMS, thalamus=prior)
    assert result.thalamus_fill == NORMAL_THALAMUS and not result.fallback
    classes = tissue_classes(intra.image, bert_crop.brain, exclude=ndimage.binary_dilation(intra.lesion))
    assert result.thalamus_range[0] > classes.csf_border
    thalamic = bert_crop.t1w[bert_crop.thalamus & ~intra.lesion]
    assert abs(np.median(result.image[intra.lesion]) - np.median(thalamic)) < 0.06 * np.median(thalamic)


def _save(data: np.ndarray, affine: np.ndarray, path) -> str:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return str(path)


def _fill_node(tmp_path, bert_crop, image, lesion) -> dict:
    """Run the workflow's lesion-fill node on files; returns the sidecar fields it wrote."""
    affine = bert_crop.affine
    priors = [_save(ndimage.gaussian_filter(ndimage.binary_dilation(bert_crop.aseg == label, iterations=2)
                                            .astype(np.float32), 2.0), affine, tmp_path / f"prior_{side}.nii.gz")
              for side, label in (("L", 10), ("R", 49))]
    node = LesionFill(t1w=_save(image, affine, tmp_path / "t1w.nii.gz"),
                      lesion_mask=_save(lesion, affine, tmp_path / "lesion.nii.gz"),
                      brain_mask=_save(bert_crop.brain, affine, tmp_path / "brain.nii.gz"), thalamus_prior=priors)
    work = tmp_path / "node"
    work.mkdir()
    result = node.run(cwd=str(work))
    return json.loads(open(result.outputs.provenance_file).read())


def _qc(tmp_path, bert_crop, provenance: dict):
    from thalamus_bidsapp.image.sides import sides_from_labels

    sides = nib.Nifti1Image(sides_from_labels(bert_crop.aseg, [10], [49]).astype(np.uint8), bert_crop.affine)
    masks = [save_mask(tmp_path, "meshnet", "T1w", sides)]
    volumes = volumes_of(masks)
    volumes["lesion_filled"] = True
    return session_checks(masks, volumes, load_thresholds(), lesion_fill=provenance)


def test_the_fallback_is_recorded_in_the_sidecar_and_fails_the_session_qc(tmp_path, bert_crop, whole):
    image, lesion, _ = whole
    provenance = _fill_node(tmp_path, bert_crop, image, lesion)
    assert provenance["LesionFilled"] is True and provenance["ThalamusFillFallback"] is True
    assert provenance["ThalamusFill"] == FALLBACK and "too little normal thalamus" in provenance["ThalamusFillReason"]
    row = _qc(tmp_path, bert_crop, provenance).set_index("check").loc["lesion_fill"]
    assert row["status"] == "fail" and row["value"] == 1.0
    assert "too little normal thalamus" in row["reason"] and "not a measurement" in row["reason"]


def test_a_normal_fill_passes_the_lesion_fill_check(tmp_path, bert_crop):
    intra = plant_lesions(bert_crop.t1w, bert_crop.aseg, seed=2, kinds=("intra",))
    provenance = _fill_node(tmp_path, bert_crop, intra.image, intra.lesion)
    assert provenance["ThalamusFillFallback"] is False and provenance["ThalamusFill"] == NORMAL_THALAMUS
    qc = _qc(tmp_path, bert_crop, provenance)
    row = qc.set_index("check").loc["lesion_fill"]
    assert row["status"] == "pass" and row["value"] == 0.0
    # A session without filled lesions gets no lesion_fill row.
    assert "lesion_fill" not in set(_qc(tmp_path, bert_crop, None)["check"])
