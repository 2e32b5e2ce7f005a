"""The participant report's longitudinal section, built from what the longitudinal mode publishes."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.longitudinal.test_longitudinal_outputs import _result, _session
from thalamus_bidsapp.bidsio.acquisition_dates import AcquisitionDate
from thalamus_bidsapp.reports import mask_figures
from thalamus_bidsapp.reports.figure_keys import recorded_key
from thalamus_bidsapp.reports.participant import write_participant_report
from thalamus_bidsapp.workflows import longitudinal_outputs as lo

NO_DATE = "no acq_time in sessions.tsv or scans.tsv and no AcquisitionDateTime in the T1w sidecar"


def _publish_longitudinal(out: Path) -> None:
    """Three sessions (ses-3 without an acquisition date) and a fourth left out, published as the mode does."""
    for label, volumes in (("1", (4.0, 4.2)), ("2", (3.9, 4.1)), ("3", (3.8, 4.0))):
        _session(out, label, volumes=volumes)
    result = _result(out, {"1": 1.0, "2": 0.99, "3": 0.98})
    result.methods["meshnet"].volumes = {label: {"left": 4.0 * scale, "right": 4.2 * scale, "bilateral": 8.2 * scale}
                      for label, scale in (("1", 1.0), ("2", 0.99), ("3", 0.98))}
    dates = {"1": AcquisitionDate(datetime(2020, 1, 1), "sessions.tsv acq_time"),
             "2": AcquisitionDate(datetime(2021, 1, 1), "sessions.tsv acq_time"),
             "3": AcquisitionDate(None, NO_DATE)}
    table = lo.change_table(out, "01", result, ["1", "2", "3"], dates)
    lo._publish(out, "01", result, table, dates, "ordered by session label: no acquisition date for 3", None,
                left_out=["ses-4: no processed T1w (no T1w, or the session failed): left out"])


def _section(page: Path) -> str:
    match = re.search(r'<section id="longitudinal">.*?</section>', page.read_text(), re.S)
    return match.group(0) if match else ""


def _rows(html: str) -> list[list[str]]:
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
    return [row for row in cells if row]


@pytest.fixture
def published(tmp_path) -> Path:
    out = tmp_path / "out"
    _publish_longitudinal(out)
    return out


def test_section_shows_both_modes_side_by_side_with_the_template_figure(published):
    page = write_participant_report(published, "01")
    section = _section(page)
    assert section, "no longitudinal section"
    assert 'href="#longitudinal"' in page.read_text()
    rows = _rows(section)
    # hemisphere, from, to, mode, volume_from, volume_to, change_ml, change_pct, interval, annualized
    bilateral = [r for r in rows if r[0] == "bilateral" and r[1] == "ses-1" and r[2] == "ses-2"]
    modes = [r[3] for r in bilateral]
    # meshnet's longitudinal row right above its cross-sectional row (the first method's table), then first's.
    assert modes[:2] == ["longitudinal", "cross-sectional"]
    long_row, cross_row = bilateral[0], bilateral[1]
    assert long_row[4:8] == ["8.200", "8.118", "-0.082", "-1.00"]
    assert long_row[8] == "1.00" and long_row[9] == "-1.00"
    assert cross_row[4:8] == ["8.200", "8.000", "-0.200", "-2.44"]
    # ses-3 has no date: interval and annualized change n/a, and the page says why.
    later = [r for r in rows if r[0] == "bilateral" and r[1] == "ses-2"]
    assert later and all(r[8] == "n/a" and r[9] == "n/a" for r in later)
    assert f"ses-3 ({NO_DATE})" in section
    assert "ses-4: no processed T1w" in section
    assert "Jacobian integration" in section and "ordered by session label" in section
    assert "<code>first</code>" in section and "<code>meshnet</code>" in section
    figure = published / "sub-01" / "figures" / "sub-01_seg-thalamus_desc-meshnetLongTemplate_dseg.svg"
    assert figure.is_file() and recorded_key(figure) is not None
    assert 'src="sub-01/figures/sub-01_seg-thalamus_desc-meshnetLongTemplate_dseg.svg"' in section
    # Both sides drawn in the report's two side colours.
    svg = figure.read_text()
    assert mask_figures._SIDE_COLORS["left"] in svg and mask_figures._SIDE_COLORS["right"] in svg


def test_unchanged_inputs_do_not_redraw_the_template_figure(published, monkeypatch):
    write_participant_report(published, "01")
    figure = published / "sub-01" / "figures" / "sub-01_seg-thalamus_desc-meshnetLongTemplate_dseg.svg"
    before = figure.stat().st_mtime_ns

    def no_drawing(*args, **kwargs):
        raise AssertionError("figure redrawn")

    with monkeypatch.context() as patch:
        patch.setattr(mask_figures, "plot_mask_mosaic", no_drawing)
        write_participant_report(published, "01")
    assert figure.stat().st_mtime_ns == before
    # New template labels: the figure is redrawn.
    labels = published / "sub-01" / "anat" / "sub-01_seg-thalamus_desc-meshnetLongTemplate_dseg.nii.gz"
    image = nib.load(labels)
    data = np.asarray(image.dataobj).copy()
    data[data == 2] = 0
    nib.save(nib.Nifti1Image(data, image.affine), labels)
    key = recorded_key(figure)
    write_participant_report(published, "01")
    assert recorded_key(figure) != key


def test_no_change_table_no_section(tmp_path):
    out = tmp_path / "out"
    _session(out, "1")
    _session(out, "2")
    page = write_participant_report(out, "01")
    assert _section(page) == "" and 'href="#longitudinal"' not in page.read_text()


def test_a_failed_longitudinal_run_is_one_line(tmp_path, published):
    out = tmp_path / "fresh"
    _session(out, "1")
    _session(out, "2")
    for root in (out, published):
        (root / "logs" / "20260101-000000_a").mkdir(parents=True)
        (root / "logs" / "20260101-000000_a" / "longitudinal.json").write_text(
            json.dumps({"sub-01": "failed: no method segments the template"}))
    section = _section(write_participant_report(out, "01"))
    assert "failed: no method segments the template" in section
    assert "<table" not in section and "Traceback" not in section
    # An earlier run's outputs stay shown, under the failure.
    section = _section(write_participant_report(published, "01"))
    assert "failed: no method segments the template" in section and "from an earlier run" in section
    assert "<table" in section


def test_runner_records_each_subjects_outcome(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from thalamus_bidsapp.participant import runner
    from thalamus_bidsapp.participant.timings import RunTimings
    from thalamus_bidsapp.reports.longitudinal import latest_outcome

    monkeypatch.setattr(lo, "longitudinal_step", lambda *args: {"01": "failed: boom", "02": "ok: 2 sessions"})
    log_dir = tmp_path / "logs" / "20260101-000000_a"
    runner._run_longitudinal(SimpleNamespace(longitudinal="off"), [], None, 1, RunTimings(), log_dir)
    assert not (log_dir / "longitudinal.json").exists()
    runner._run_longitudinal(SimpleNamespace(longitudinal="auto"), [], None, 1, RunTimings(), log_dir)
    assert latest_outcome(tmp_path, "sub-01") == ("20260101-000000_a", "failed: boom")
    assert latest_outcome(tmp_path, "sub-03") is None


def test_an_unreadable_template_is_a_warning_not_a_lost_report(published):
    template = published / "sub-01" / "anat" / "sub-01_desc-longitudinaltemplate_T1w.nii.gz"
    template.write_bytes(b"not a nifti")
    section = _section(write_participant_report(published, "01"))
    assert "Template figure not drawn" in section and "<img" not in section
    assert "<table" in section
