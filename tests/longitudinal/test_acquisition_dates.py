"""Session dates: sessions.tsv, then the T1w sidecar, then scans.tsv; none -> unknown with the reason."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from thalamus_bidsapp.bidsio.acquisition_dates import parse_time, session_dates


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    for ses in ("1", "2", "3", "4"):
        anat = root / "sub-01" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-01_ses-{ses}_T1w.nii.gz").write_bytes(b"")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-1\t2019-03-01T10:00:00\n"
                                                          "ses-2\tn/a\nses-3\t\nses-4\tnot a date\n")
    (root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.json").write_text(
        json.dumps({"AcquisitionDateTime": "2020-03-01T10:00:00.000000"}))
    (root / "sub-01" / "ses-3" / "sub-01_ses-3_scans.tsv").write_text(
        "filename\tacq_time\nanat/sub-01_ses-3_T1w.nii.gz\t2021-03-01T10:00:00Z\n")
    return root


def test_sources_in_order_of_preference(tmp_path):
    root = _dataset(tmp_path)
    t1w = {s: root / "sub-01" / f"ses-{s}" / "anat" / f"sub-01_ses-{s}_T1w.nii.gz" for s in "1234"}
    dates = session_dates(root, "01", ["1", "2", "3", "4"], t1w)
    assert dates["1"].when == datetime(2019, 3, 1, 10) and dates["1"].source == "sessions.tsv acq_time"
    assert dates["2"].when == datetime(2020, 3, 1, 10) and "sidecar" in dates["2"].source
    assert dates["3"].when == datetime(2021, 3, 1, 10) and dates["3"].source == "scans.tsv acq_time"
    assert dates["4"].when is None and "no acq_time" in dates["4"].source


def test_sessions_table_wins_over_the_sidecar(tmp_path):
    root = _dataset(tmp_path)
    (root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.json").write_text(
        json.dumps({"AcquisitionDateTime": "2000-01-01T00:00:00"}))
    t1w = {"1": root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.nii.gz"}
    assert session_dates(root, "01", ["1"], t1w)["1"].when.year == 2019


def test_parse_time():
    assert parse_time("2020-01-02") == datetime(2020, 1, 2)
    assert parse_time("n/a") is None and parse_time("") is None and parse_time(None) is None
    assert parse_time(float("nan")) is None and parse_time("yesterday") is None
