"""The group report's change section, from ``group/longitudinal_change.tsv`` as the longitudinal mode writes it.

Four subjects with three sessions each (the last subject without acquisition
dates), MeshNet in both modes (longitudinal and cross-sectional) and FIRST
cross-sectional only: the section gives each method's median change, the
modes compared on the same pairs only, and a figure with a line per subject.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tests.test_reports import browser  # noqa: F401  (the headless Chromium fixture)
from tests.test_reports_volumes import _outside, _section, lesion_filling_both_volumes
from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.reports.figures_group import build_group_figures
from thalamus_bidsapp.reports.group import write_group_report
from thalamus_bidsapp.reports.group_change import bilateral_changes, session_volumes, shown_mode
from thalamus_bidsapp.stats.change import CHANGE_COLUMNS

SUBJECTS = ("sub-01", "sub-02", "sub-03", "sub-04")


def change_table(seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for subject in SUBJECTS:
        dated = subject != "sub-04"
        base = rng.normal(15.0, 0.8)
        for method, modes in (("meshnet", ("longitudinal", "cross-sectional")), ("first", ("cross-sectional",))):
            for mode in modes:
                noise = 0.1 if mode == "longitudinal" else 0.4
                volumes = base * np.cumprod([1.0, 1 + rng.normal(-0.01, 0.004), 1 + rng.normal(-0.01, 0.004)])
                volumes = volumes * (1 + rng.normal(0, noise / 100, 3))
                for i in range(2):
                    for hemisphere, share in (("bilateral", 1.0), ("left", 0.5), ("right", 0.5)):
                        start, end = volumes[i] * share, volumes[i + 1] * share
                        pct = 100 * (end - start) / start
                        interval = 1.5 if dated else np.nan
                        rows.append({"participant_id": subject, "method": method, "hemisphere": hemisphere,
                                     "session_from": f"ses-{i + 1}", "session_to": f"ses-{i + 2}",
                                     "volume_from_ml": round(start, 3), "volume_to_ml": round(end, 3),
                                     "change_ml": round(end - start, 4), "change_pct": pct,
                                     "interval_years": interval, "annualized_change_pct": pct / interval,
                                     "mode": mode})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


@pytest.fixture(scope="module")
def change_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("change") / "out"
    write_tsv(lesion_filling_both_volumes(), out / "group" / "volumes.tsv")
    write_tsv(change_table(), out / "group" / "longitudinal_change.tsv")
    return write_group_report(out)


def test_change_section_compares_like_with_like(change_report):
    section = _section(change_report.read_text(), "change")
    assert 'src="figures/session_change.svg"' in section and 'href="longitudinal_change.tsv"' in section
    changes = bilateral_changes(change_table())
    shown = shown_mode(changes)
    assert set(shown.loc[shown["method"] == "meshnet", "mode"]) == {"longitudinal"}
    assert set(shown.loc[shown["method"] == "first", "mode"]) == {"cross-sectional"}
    for method, mode in (("meshnet", "longitudinal"), ("first", "cross-sectional")):
        rows = shown[shown["method"] == method]
        expected = (f"{method} ({mode}) {rows['change_pct'].median():+.2f}%, "
                    f"{rows['annualized_change_pct'].median():+.2f}%/year (n = 8 pair(s))")
        assert expected in section, expected
    assert "4 pair(s) have no interval" in section  # sub-04: two pairs, two methods
    # The two modes only on the pairs both measured: MeshNet's eight, never FIRST's.
    paired = re.search(r"longitudinal minus cross-sectional change: (.*?)\.</p>", section, flags=re.S).group(1)
    assert paired.startswith("meshnet ") and "(n = 8)" in paired and "first" not in paired


def test_change_figure_draws_a_line_per_subject_and_fits(change_report):
    figures, _ = build_group_figures(change_report.parent)
    fig = figures["session_change"]
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    assert _outside(fig) == []
    lines, boxes = fig.axes[:2]
    drawn = [line for line in lines.get_lines() if len(line.get_xdata()) == 3]
    assert len(drawn) == len(SUBJECTS) * 2  # a line of three sessions per subject and method
    assert boxes.get_xlabel() == "annualized change (%/year)"
    volumes = session_volumes(bilateral_changes(change_table()))
    assert set(volumes.loc[volumes["participant_id"] == "sub-04", "dated"]) == {False}
    from tests.test_figures_group import check_figure

    assert check_figure(fig) == []


def test_no_change_table_says_why(tmp_path):
    write_tsv(lesion_filling_both_volumes(), tmp_path / "group" / "volumes.tsv")
    section = _section(write_group_report(tmp_path).read_text(), "change")
    assert "Not run: no longitudinal change table" in section and "<img" not in section


def test_change_report_in_headless_chromium(request, browser, change_report):  # noqa: F811
    from tests.test_reports import ARTIFACTS, _report_artifact

    screenshot = ARTIFACTS / "report_group_change.png"
    result = browser.load(change_report, screenshot)
    _report_artifact(request, screenshot)
    assert result["console"] == [] and result["broken"] == [] and result["anchors"] == []
    assert result["scrollWidth"] <= 1280 and result["overflowingTables"] == []
