"""Group-level QC: robust z, annualised change, qc_status and --qc-exclude, on small hand-computed tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thalamus_bidsapp.qc.group import flagged, group_checks, with_group_status
from thalamus_bidsapp.qc.thresholds import load_thresholds
from thalamus_bidsapp.stats.qc import annualised_changes, judge, robust_z, worst_status

THRESHOLDS = load_thresholds()


def test_robust_z_by_hand():
    # median 11, |x - 11| = 2, 1, 0, 1, 9 -> MAD 1, scaled 1.4826
    z = robust_z(pd.Series([9.0, 10.0, 11.0, 12.0, 20.0]))
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 9 / 1.4826])
    assert robust_z(pd.Series([5.0, 5.0, 5.0])).isna().all()  # MAD 0: undefined, not infinite


def test_judge_kinds_and_worst_status():
    assert judge(0.8, {"kind": "min", "warn": 0.7, "fail": 0.5})[0] == "pass"
    assert judge(0.6, {"kind": "min", "warn": 0.7, "fail": 0.5})[0] == "warn"
    assert judge(2, {"kind": "max", "warn": 1, "fail": 3})[0] == "warn"
    assert judge(-6.0, {"kind": "abs_max", "warn": 3.5, "fail": 5})[0] == "fail"
    assert judge(0.5, {"kind": "range", "warn": [0.8, 1.25], "fail": [0.65, 1.55]})[0] == "fail"
    assert judge(float("nan"), {"kind": "min", "warn": 0.7, "fail": 0.5})[0] == "skipped"
    assert worst_status(["pass", "skipped", "warn"]) == "warn"
    assert worst_status(["skipped"]) == "skipped" and worst_status([]) == "skipped"


def _cohort(volumes_ml, icv_ml=1500.0, method="m", contrast="T1w"):
    n = len(volumes_ml)
    return pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(n)], "session_id": ["ses-1"] * n,
                         "method": method, "contrast": contrast, "hemisphere": "bilateral",
                         "volume_ml": volumes_ml, "icv_ml": icv_ml})


def test_cohort_outlier_is_flagged_with_its_robust_z():
    # volume / ICV: 0.0060, 0.0062, 0.0064, 0.0066, 0.0068, 0.0120 -> median 0.0065;
    # |deviations| 0.0005, 0.0003, 0.0001, 0.0001, 0.0003, 0.0055 -> MAD 0.0003
    volumes = _cohort([9.0, 9.3, 9.6, 9.9, 10.2, 18.0])
    qc = group_checks(volumes, THRESHOLDS)
    z = qc.set_index("participant_id")["value"]
    assert z["sub-05"] == pytest.approx((0.012 - 0.0065) / (0.0003 * 1.4826))  # 12.37
    assert z["sub-02"] == pytest.approx((0.0064 - 0.0065) / (0.0003 * 1.4826))
    status = qc.set_index("participant_id")["status"]
    assert status["sub-05"] == "fail" and (status.drop("sub-05") == "pass").all()
    assert "outlier among the sessions of this method" in qc.loc[qc["participant_id"] == "sub-05", "reason"].item()


def test_cohort_check_is_skipped_for_a_small_cohort():
    qc = group_checks(_cohort([9.0, 9.5, 30.0]), THRESHOLDS)
    assert (qc["status"] == "skipped").all()
    assert qc["reason"].str.contains("needs 5").all()


def _two_visits(bl, fu, times=("2020-01-01", "2021-01-01")):
    return pd.DataFrame({"participant_id": ["sub-01", "sub-01"], "session_id": ["ses-1", "ses-2"],
                         "method": "m", "contrast": "T1w", "hemisphere": "bilateral", "volume_ml": [bl, fu],
                         "icv_ml": 1500.0, "acq_time": list(times)})


def test_annualised_change_by_hand():
    visits = pd.DataFrame({"participant_id": ["sub-1"] * 3, "session_id": ["a", "b", "c"],
                           "visit_years": [0.0, 0.5, 2.5], "visit_rank": [0, 1, 2], "method": "m",
                           "contrast": "T1w", "volume_ml": [10.0, 9.8, 9.0]})
    changes = annualised_changes(visits)
    # -2% in half a year = -4%/year; then (9.0 - 9.8) / 9.8 = -8.163% in 2 years = -4.082%/year
    assert changes["pct_per_year"].tolist() == pytest.approx([-4.0, -100 * 0.8 / 9.8 / 2])
    assert changes[["session_bl", "session_fu"]].values.tolist() == [["a", "b"], ["b", "c"]]


def test_longitudinal_check_flags_both_sessions():
    # 10 -> 8.8 mL in 366 days (2020 is a leap year): -12% / 1.00205 years
    qc = group_checks(_two_visits(10.0, 8.8), THRESHOLDS, acq_time="acq_time")
    change = qc[qc["check"] == "annual_change"]
    assert change["session_id"].tolist() == ["ses-1", "ses-2"]
    assert change["value"].tolist() == pytest.approx([-12.0 / (366 / 365.25)] * 2)
    assert (change["status"] == "fail").all()
    assert change["reason"].str.contains("from ses-1 to ses-2").all()
    slow = group_checks(_two_visits(10.0, 9.9), THRESHOLDS, acq_time="acq_time")
    assert (slow.loc[slow["check"] == "annual_change", "status"] == "pass").all()


def test_longitudinal_check_without_visit_times_is_skipped():
    qc = group_checks(_two_visits(10.0, 8.0).drop(columns="acq_time"), THRESHOLDS)
    change = qc[qc["check"] == "annual_change"]
    assert (change["status"] == "skipped").all() and change["reason"].str.contains("unknown").all()


def test_group_status_is_the_worst_of_session_and_group_checks():
    volumes = pd.concat([_two_visits(10.0, 8.8)] * 2, ignore_index=True)
    volumes.loc[2:, "hemisphere"] = "left"
    session_qc = pd.DataFrame({"participant_id": ["sub-01"], "session_id": ["ses-1"], "method": ["m"],
                               "contrast": ["T1w"], "check": ["lr_ratio"], "value": [1.0], "threshold": ["x"],
                               "status": ["warn"], "reason": ["r"]})
    qc = pd.concat([session_qc, group_checks(volumes, THRESHOLDS, acq_time="acq_time")], ignore_index=True)
    status = with_group_status(volumes, qc)
    assert (status["qc_status"] == "fail").all()  # the annual change fails both sessions, on every hemisphere row
    assert len(flagged(status, "fail")) == 2 and len(flagged(status, "warn")) == 2
    calm = with_group_status(volumes, session_qc)
    assert calm["qc_status"].tolist() == ["warn", "skipped", "warn", "skipped"]
    assert flagged(calm, "fail").empty and len(flagged(calm, "warn")) == 1
    assert not np.any(calm["qc_status"].isna())


def _config(tmp_path, level):
    from thalamus_bidsapp.config import RunConfig

    return RunConfig(bids_dir=tmp_path, output_dir=tmp_path, analysis_level="group", work_dir=tmp_path,
                     qc_exclude=level)


def _cohort_with_a_fast_changer():
    # Two methods; method "a" of sub-01 loses 12% in a year (fails), method "b" is steady.
    frames = []
    for method, fu in (("a", 8.8), ("b", 9.95)):
        frames.append(_two_visits(10.0, fu).assign(method=method))
    volumes = pd.concat(frames, ignore_index=True)
    masks = volumes[["participant_id", "session_id", "method"]].assign(path="x")
    return volumes, masks


@pytest.mark.parametrize("level, kept", [(None, {"a", "b"}), ("fail", {"b"}), ("warn", {"b"})])
def test_qc_exclude_leaves_flagged_masks_out_and_says_how_many(tmp_path, caplog, level, kept):
    from thalamus_bidsapp.bidsio.atomic import read_tsv
    from thalamus_bidsapp.group.qc_step import run_qc_step

    volumes, masks = _cohort_with_a_fast_changer()
    files = pd.DataFrame(columns=["participant_id", "session_id", "path"])
    with caplog.at_level("INFO"):
        out, out_masks, excluded = run_qc_step(_config(tmp_path, level), files, volumes, masks, tmp_path)
    assert set(out["method"]) == kept and set(out_masks["method"]) == kept
    written = read_tsv(tmp_path / "qc.tsv")
    assert set(written["status"]) == {"fail", "pass", "skipped"}  # one subject: the cohort check is skipped
    assert "2 of 4 masks flagged (2 fail, 0 warn)" in caplog.text
    if level is None:
        assert excluded.empty and "kept in the group statistics" in caplog.text
    else:
        assert excluded["session_id"].tolist() == ["ses-1", "ses-2"]
        assert excluded["reason"].str.startswith("left out by --qc-exclude").all()
        assert excluded["reason"].str.contains("annual_change fail").all()
        assert f"--qc-exclude {level}: 2 of 4 masks (2 session(s)) left out" in caplog.text
