"""The QC parts of the reports: traffic lights with reasons, and the flagged sessions of the group."""

from __future__ import annotations

import pandas as pd

from thalamus_bidsapp.reports.qc import flagged_sessions, qc_excluded_count, traffic_lights


def _qc() -> pd.DataFrame:
    rows = [("sub-01", "ses-1", "a", "T1w", "dice_methods", 0.9, "pass", "Median Dice is 0.90."),
            ("sub-01", "ses-1", "a", "T1w", "lr_ratio", 0.5, "fail", "Left/right ratio is 0.50: <one side> missing."),
            ("sub-01", "ses-1", "b", "T1w", "dice_prior", float("nan"), "skipped", "No thalamus prior."),
            ("sub-02", None, "a", "T1w", "icv_fraction", 1.5, "warn", "Thalamus is 1.50% of the ICV.")]
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "method", "contrast", "check", "value",
                                       "status", "reason"]).assign(threshold="t")


def test_traffic_lights_give_the_worst_status_and_the_reasons_escaped():
    html = traffic_lights(_qc()[_qc()["participant_id"] == "sub-01"])
    assert html.count("<tr") == 3  # header and one row per mask
    assert 'class="qc-light fail"' in html and 'class="qc-light skipped"' in html
    assert "<strong>lr_ratio</strong> (fail)" in html and "&lt;one side&gt;" in html
    assert "1 pass, 1 fail" in html and "No check could be computed." in html


def test_flagged_sessions_lists_fails_first_with_links(tmp_path):
    links = {"sub-01": '<a href="../sub-01.html">sub-01</a>'}
    n_flagged, n_masks, html = flagged_sessions(_qc(), tmp_path, links)
    assert (n_flagged, n_masks) == (2, 3)
    assert html.index("lr_ratio") < html.index("icv_fraction")
    assert '<a href="../sub-01.html">sub-01</a>' in html and ">sub-02<" in html
    assert 'href="qc.tsv"' in html
    excluded = pd.DataFrame({"reason": ["left out by --qc-exclude fail: a (T1w)", "latest participant status"]})
    assert qc_excluded_count(excluded) == 1 and qc_excluded_count(None) == 0
