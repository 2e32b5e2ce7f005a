"""Per-session QC checks on real anatomy (bert and subject2 from ../shared/data)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.qc.anatomy import bert_sides, save_mask, stand_in_prior, subject2_sides_on_bert_grid, volumes_of
from thalamus_bidsapp.image.sides import LEFT
from thalamus_bidsapp.methods.registry import method_names
from thalamus_bidsapp.qc.session import session_checks, with_qc_status
from thalamus_bidsapp.qc.thresholds import load_thresholds

THRESHOLDS = load_thresholds()
#: Two registered method names (which ones does not matter to the checks).
FIRST_METHOD, SECOND_METHOD = method_names()[:2]


def _checks(masks, prior=None, registration_qc=None) -> pd.DataFrame:
    return session_checks(masks, volumes_of(masks), THRESHOLDS, prior=prior, registration_qc=registration_qc)


def _status(qc: pd.DataFrame, method: str, check: str) -> str:
    return qc.loc[(qc["method"] == method) & (qc["check"] == check), "status"].item()


@pytest.fixture
def clean(tmp_path):
    masks = [save_mask(tmp_path, FIRST_METHOD, "T1w", bert_sides("7.2")),
             save_mask(tmp_path, SECOND_METHOD, "T1w", bert_sides("6.0"))]
    return masks, stand_in_prior(tmp_path)


def test_clean_session_passes_every_check(clean):
    masks, prior = clean
    qc = _checks(masks, prior)
    computed = qc[qc["status"] != "skipped"]
    assert set(qc.loc[qc["status"] == "skipped", "check"]) == {"registration_mi"}  # T1w: no registration
    assert (computed["status"] == "pass").all(), computed[computed["status"] != "pass"].to_string()
    assert len(computed) == 2 * 9
    dice = qc.loc[qc["check"] == "dice_methods", "value"]
    assert dice.between(0.95, 0.97).all()  # FreeSurfer 7.2 vs 6.0 on bert: 0.96
    assert qc.loc[qc["check"].str.startswith("centroid"), "value"].max() < 1.0
    assert qc["reason"].str.len().min() > 20


def test_prior_checks_are_skipped_with_a_reason_without_a_prior(clean):
    masks, _ = clean
    qc = _checks(masks)
    prior_checks = qc[qc["check"].isin(["dice_prior", "centroid_left", "centroid_right", "side_swap"])]
    assert len(prior_checks) == 8 and (prior_checks["status"] == "skipped").all()
    assert prior_checks["reason"].str.contains("no thalamus prior", case=False).all()
    assert (qc.loc[qc["check"] == "dice_methods", "status"] == "pass").all()


def test_another_persons_freesurfer_subject_fails(tmp_path):
    # bert's T1w grid with subject2's aseg: the "FreeSurfer subject" belongs to someone else.
    masks = [save_mask(tmp_path, FIRST_METHOD, "T1w", subject2_sides_on_bert_grid()),
             save_mask(tmp_path, SECOND_METHOD, "T1w", bert_sides("6.0"))]
    qc = _checks(masks, stand_in_prior(tmp_path))
    for check in ("dice_prior", "centroid_left", "centroid_right"):
        assert _status(qc, FIRST_METHOD, check) == "fail", qc.to_string()
    assert _status(qc, FIRST_METHOD, "dice_methods") == "fail"
    reason = qc.loc[(qc["method"] == FIRST_METHOD) & (qc["check"] == "dice_prior"), "reason"].item()
    assert "another person's segmentation" in reason
    # The right mask is flagged only for disagreeing with the wrong one, not against the prior.
    assert _status(qc, SECOND_METHOD, "dice_prior") == "pass"
    status = with_qc_status(volumes_of(masks), qc)
    assert set(status.loc[status["method"] == FIRST_METHOD, "qc_status"]) == {"fail"}


def test_a_mask_that_lost_half_of_one_thalamus_fails_the_ratio(tmp_path):
    sides = bert_sides("7.2")
    data = np.array(sides.dataobj)
    left = np.argwhere(data == LEFT)
    cut = np.median(left[:, 1])  # half of the left thalamus along the second voxel axis
    data[(data == LEFT) & (np.indices(data.shape)[1] > cut)] = 0
    masks = [save_mask(tmp_path, FIRST_METHOD, "T1w", nib.Nifti1Image(data, sides.affine)),
             save_mask(tmp_path, SECOND_METHOD, "T1w", bert_sides("6.0"))]
    qc = _checks(masks, stand_in_prior(tmp_path))
    row = qc[(qc["method"] == FIRST_METHOD) & (qc["check"] == "lr_ratio")].iloc[0]
    assert row["status"] == "fail" and 0.4 < row["value"] < 0.6
    assert "one thalamus is much smaller than the other" in row["reason"]
    assert _status(qc, SECOND_METHOD, "lr_ratio") == "pass"


def test_a_left_right_swapped_header_is_caught_by_the_prior(tmp_path):
    sides = bert_sides("7.2")
    # The data mirrored along the left-right voxel axis under the same header: the header's left is now wrong.
    swapped = nib.Nifti1Image(np.asanyarray(sides.dataobj)[::-1].copy(), sides.affine)
    masks = [save_mask(tmp_path, FIRST_METHOD, "T1w", swapped),
             save_mask(tmp_path, SECOND_METHOD, "T1w", bert_sides("6.0"))]
    qc = _checks(masks, stand_in_prior(tmp_path))
    row = qc[(qc["method"] == FIRST_METHOD) & (qc["check"] == "side_swap")].iloc[0]
    assert row["status"] == "fail" and row["value"] == 2
    assert "left and right seem swapped" in row["reason"]
    assert _status(qc, SECOND_METHOD, "side_swap") == "pass"


def test_registration_mi_is_folded_in(clean, tmp_path):
    masks, prior = clean
    flair = save_mask(tmp_path, "flairmethod", "FLAIR", bert_sides("7.2"))
    registration = pd.DataFrame({"image": ["FLAIR"], "strategy": ["flirt_normcorr"], "mi": [0.27],
                                 "cutoff": [0.25], "passed": [True], "selected": [True], "reason": ["ok"]})
    qc = _checks([*masks, flair], prior, registration)
    row = qc[(qc["method"] == "flairmethod") & (qc["check"] == "registration_mi")].iloc[0]
    assert row["status"] == "warn" and row["value"] == pytest.approx(0.02)
    assert "close to or below its QC cut-off" in row["reason"]
    registration["mi"] = 0.6
    qc = _checks([*masks, flair], prior, registration)
    assert _status(qc, "flairmethod", "registration_mi") == "pass"


def test_the_masks_of_one_method_count_once_in_the_agreement(tmp_path):
    from dataclasses import replace

    masks = [save_mask(tmp_path, "one", "T1w", bert_sides("7.2")),
             save_mask(tmp_path, "two", "T1w", bert_sides("6.0")),
             replace(save_mask(tmp_path, "three", "T1w", bert_sides("6.0")), family="three")]
    # One method with three masks on other contrasts, all of another person's thalamus.
    wrong = [replace(save_mask(tmp_path, f"many{c}", c, subject2_sides_on_bert_grid()), family="many")
             for c in ("T1w", "FLAIR", "R1map")]
    qc = _checks([*masks, *wrong])
    row = qc[(qc["method"] == "one") & (qc["check"] == "dice_methods")].iloc[0]
    assert row["status"] == "pass" and row["value"] > 0.9  # median of 0.96, 0.96 and 0.20
    assert "3 other method(s)" in row["reason"]
    # Each of the method's own masks is compared with the other methods only, never with its siblings.
    assert (qc.loc[(qc["method"].str.startswith("many")) & (qc["check"] == "dice_methods"), "status"] == "fail").all()
    alone = _checks([replace(m, family=None) for m in [*masks, *wrong]])
    assert _status(alone, "one", "dice_methods") == "fail"  # without families the three outvote the rest
