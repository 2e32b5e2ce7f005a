"""The group report's reading of the volumes: like with like, lesion filling paired, lesions, left/right.

The group table is that of a ``--lesion-filling both`` run over a cohort like
the one the report was judged on: six healthy subjects without sessions (as
ds002748) and two MS patients with lesion masks. FreeSurfer and MeshNet ran
on every session; on the patients they also ran on the unfilled T1w
(``desc-<mask>Unfilled``), so the filled masks exist on eight sessions and
the unfilled ones on two: their medians must never be set side by side.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from tests.test_reports import browser  # noqa: F401  (the headless Chromium fixture)
from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.reports.figures_group import build_group_figures
from thalamus_bidsapp.reports.group import write_group_report
from thalamus_bidsapp.reports.group_volumes import asymmetry_table, filling_pairs

#: The template-space maps read the template from the tests' TemplateFlow home (built on first use).
pytestmark = pytest.mark.templateflow

HEALTHY = ("sub-01", "sub-02", "sub-03", "sub-52", "sub-53", "sub-54")
PATIENTS = {"sub-ms1": (14.2, 0.35, 0.6), "sub-ms2": (5.1, 0.0, 0.2)}  # lesion, inside, near the thalamus (mL)


def _rows(subject: str, method: str, left: float, right: float, lesion: tuple | None) -> list[dict]:
    rows = []
    for hemisphere, volume in (("bilateral", left + right), ("left", left), ("right", right)):
        rows.append({"participant_id": subject, "session_id": "n/a", "method": method, "contrast": "T1w",
                     "hemisphere": hemisphere, "volume_ml": round(volume, 3), "icv_ml": 1500.0,
                     "lesion_volume_ml": lesion[0] if lesion else "n/a",
                     "lesion_in_thalamus_ml": (lesion[1] if hemisphere == "bilateral" else lesion[1] / 2)
                     if lesion else "n/a",
                     "lesion_near_thalamus_ml": (lesion[2] if hemisphere == "bilateral" else lesion[2] / 2)
                     if lesion else "n/a",
                     "lesion_filled": bool(lesion) and not method.endswith("Unfilled"), "qc_status": "pass"})
    return rows


def lesion_filling_both_volumes(seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for subject in HEALTHY:
        left = rng.normal(7.6, 0.5)
        for method, bias in (("freesurfer", 0.4), ("meshnet", 0.0)):
            rows += _rows(subject, method, left + bias, left * rng.normal(0.97, 0.01) + bias, None)
    for subject, lesion in PATIENTS.items():
        left = rng.normal(6.4, 0.3)
        for method, bias in (("freesurfer", 0.4), ("meshnet", 0.0)):
            filled_left, filled_right = left + bias, left * 0.98 + bias
            rows += _rows(subject, method, filled_left, filled_right, lesion)
            # Unfilled lesions pull the boundary in a little: the paired difference is small and positive.
            rows += _rows(subject, f"{method}Unfilled", filled_left - rng.normal(0.04, 0.03),
                          filled_right - rng.normal(0.03, 0.03), lesion)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def both_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lesion_filling_both") / "out"
    write_tsv(lesion_filling_both_volumes(), out / "group" / "volumes.tsv")
    return write_group_report(out)


def _section(text: str, name: str) -> str:
    return text.split(f'<section id="{name}"', 1)[1].split("</section>", 1)[0]


def _lead_sentences(html: str) -> list[str]:
    leads = re.findall(r'<p class="lead">(.*?)</p>', html, flags=re.S)
    return [s for lead in leads for s in re.split(r"(?<=[.;])\s+", lead)]


def test_no_sentence_compares_unpaired_filled_and_unfilled(both_report):
    text = both_report.read_text()
    outside = text.replace(_section(text, "lesion-filling"), "")
    for sentence in _lead_sentences(outside):
        for method in ("freesurfer", "meshnet"):
            unfilled = f"{method}Unfilled" in sentence
            filled = re.search(rf"\b{method}\b(?!Unfilled)", sentence.replace(f"{method}Unfilled", ""))
            assert not (unfilled and filled), sentence
    volumes = _section(text, "volumes")
    assert "Over the 8 session(s) that every method measured" in volumes


def test_paired_filling_section(both_report):
    text = both_report.read_text()
    section = _section(text, "lesion-filling").replace("<wbr>", "")
    assert "<img" in section and 'src="figures/filling_blandaltman.svg"' in section
    pairs = filling_pairs(lesion_filling_both_volumes())
    assert set(pairs["participant_id"]) == set(PATIENTS) and len(pairs) == 4  # two methods x two patients
    for method in ("freesurfer", "meshnet"):
        median = pairs.loc[pairs["method"] == method, "difference_ml"].median()
        assert f"{method} {median:+.2f} mL" in section
    assert "mean_difference_ml" in section and "loa_low_ml" in section


def test_lesion_and_asymmetry_sections(both_report):
    text = both_report.read_text()
    lesions = _section(text, "lesions")
    assert 'src="figures/lesion_load.svg"' in lesions
    assert "2 session(s) of 2 subject(s) have a lesion mask" in lesions
    assert "lesions inside the thalamus in 1 and within 3 mm of it in 2 of 2 session(s)" in lesions
    asymmetry = _section(text, "asymmetry")
    assert 'src="figures/asymmetry.svg"' in asymmetry
    table = asymmetry_table(lesion_filling_both_volumes())
    median = table.loc[table["method"] == "meshnet", "asymmetry_pct"].median()
    assert f"meshnet {median:+.1f}%" in asymmetry


def test_sections_say_why_they_did_not_run(tmp_path):
    volumes = lesion_filling_both_volumes()
    plain = volumes[~volumes["method"].str.endswith("Unfilled")
                    & (volumes["hemisphere"] == "bilateral")].drop(columns=["hemisphere"])
    plain = plain.assign(lesion_volume_ml="n/a", lesion_in_thalamus_ml="n/a", lesion_near_thalamus_ml="n/a")
    write_tsv(plain, tmp_path / "group" / "volumes.tsv")
    text = write_group_report(tmp_path).read_text()
    assert "--lesion-filling both" in _section(text, "lesion-filling")
    assert '<p class="skipped">Not run: no session has a lesion mask' in _section(text, "lesions")
    assert '<p class="skipped">Not run: group/volumes.tsv has no left and right rows' in _section(text, "asymmetry")


def test_volume_plot_names_each_session(both_report):
    figures, _ = build_group_figures(both_report.parent)
    fig = figures["volumes_distribution"]
    (legend,) = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == set(HEALTHY) | set(PATIENTS)
    # Each session has one marker, the same in every method's row.
    markers = {h.get_marker() for h in legend.legend_handles}
    assert len(markers) == len(HEALTHY) + len(PATIENTS)


def _undrawn_tick_labels(fig) -> set[int]:
    """ids of the tick labels matplotlib keeps but does not draw (ticks outside the view limits)."""
    axes = [a for ax in fig.axes for a in (ax, *ax.child_axes)]
    every, drawn = set(), set()
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                every |= {id(tick.label1), id(tick.label2)}
            for tick in axis._update_ticks():
                drawn |= {id(tick.label1), id(tick.label2)}
    return every - drawn


def _outside(fig) -> list[str]:
    """Visible texts of a drawn figure that reach outside the figure (more than half a pixel)."""
    renderer = fig.canvas.get_renderer()
    bounds = fig.bbox
    undrawn = _undrawn_tick_labels(fig)
    undrawn |= {id(t) for ax in fig.axes if not ax.get_visible() for t in ax.findobj(Text)}  # spare grid panels
    problems = []
    for text in fig.findobj(Text):
        if id(text) in undrawn or not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < bounds.x0 - 0.5 or box.x1 > bounds.x1 + 0.5 or box.y0 < bounds.y0 - 0.5 or \
                box.y1 > bounds.y1 + 0.5:
            problems.append(f"{text.get_text()!r} at {box.extents.round(1)} outside {bounds.extents.round(1)}")
    return problems


def test_every_group_figure_text_fits(both_report, tmp_path_factory):
    # The figures of the lesion-filling run, and of a simulated cohort with template maps and clinical tables.
    from tests.simulate_cohort import REPORT_METHODS, simulate_cohort, write_group_outputs
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cohort = tmp_path_factory.mktemp("cohort_fit") / "out"
    group = write_group_outputs(simulate_cohort(n_subjects=12, seed=3, methods=REPORT_METHODS[:1]), cohort)
    checked = []
    for group_dir in (both_report.parent, group):
        figures, _ = build_group_figures(group_dir)
        for stem, fig in figures.items():
            FigureCanvasAgg(fig)
            fig.canvas.draw()
            assert _outside(fig) == [], stem
            checked.append(stem)
    assert {"template_maps", "filling_blandaltman", "lesion_load", "asymmetry", "volumes_distribution"} <= \
        set(checked)


def test_lesion_filling_report_in_headless_chromium(request, browser, both_report):
    from tests.test_reports import ARTIFACTS, _report_artifact

    screenshot = ARTIFACTS / "report_group_lesion_filling_both.png"
    result = browser.load(both_report, screenshot)
    _report_artifact(request, screenshot)
    assert result["console"] == [] and result["broken"] == [] and result["anchors"] == []
    assert result["scrollWidth"] <= 1280 and result["overflowingTables"] == []


def test_volume_figures_are_readable(both_report):
    # No overlapping text, no strip, no font under 8 pt (the checks of every group figure).
    from tests.test_figures_group import check_figure

    figures, _ = build_group_figures(both_report.parent)
    for stem in ("volumes_distribution", "filling_blandaltman", "lesion_load", "asymmetry"):
        assert check_figure(figures[stem]) == [], stem


def test_template_sentence_keeps_the_unfilled_maps_apart():
    from thalamus_bidsapp.reports.group_leads import template_lead

    maps = pd.DataFrame([
        {"map": "probability", "method": "freesurfer", "template": "MNI152NLin2009cAsym", "n_sessions": 8,
         "volume_ml_at_half": 14.1},
        {"map": "probability", "method": "freesurferUnfilled", "template": "MNI152NLin2009cAsym", "n_sessions": 2,
         "volume_ml_at_half": 13.0},
        {"map": "disagreement", "method": "n/a", "template": "MNI152NLin2009cAsym", "n_sessions": 8,
         "volume_ml_at_half": 2.5}])
    (lead,) = template_lead(maps)
    assert "freesurfer 14.1 mL at probability >= 0.5 (n = 8)" in lead and "13.0" not in lead
    for sentence in _lead_sentences(f'<p class="lead">{lead}</p>'):
        assert not ("freesurferUnfilled" in sentence and re.search(r"\bfreesurfer\b(?!Unfilled)", sentence)), sentence
