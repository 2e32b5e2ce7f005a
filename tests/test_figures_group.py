"""Every group figure, drawn from the tables of a simulated cohort: readable, no overlapping text, not a strip.

The cohort (tests/simulate_cohort.py) has 30 subjects with two sessions,
five methods named as in real outputs, manual masks for 20 baseline sessions
and the clinical tables; the agreement and clinical steps run on it and the
figures are drawn from the TSVs they publish, as the group report does.
"""

from __future__ import annotations

import itertools

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from tests.simulate_cohort import REPORT_METHODS, simulate_cohort, write_group_outputs
from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.reports import figures_group, figures_group_agreement, figures_group_clinical
from thalamus_bidsapp.reports.figures_group import FIGURE_TITLES, build_group_figures, write_group_figures
from thalamus_bidsapp.reports.palette import MIN_FONT_PT, PNG_DPI, STYLE, method_colors

#: The template-space maps read the template from the tests' TemplateFlow home (built on first use).
pytestmark = pytest.mark.templateflow


@pytest.fixture(scope="module")
def cohort_group(tmp_path_factory):
    cohort = simulate_cohort(n_subjects=30, seed=3, methods=REPORT_METHODS)
    return write_group_outputs(cohort, tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def figures(cohort_group):
    built, notes = build_group_figures(cohort_group)
    return built, notes


def _texts(fig: Figure) -> list[Text]:
    """Text elements a draw of the figure shows: titles, labels, annotations, legends, and the tick labels drawn.

    An axis keeps Tick objects (with labels) outside its view limits that are
    not drawn; only the ticks the axis draws (``Axis._update_ticks``) count.
    """
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                tick_labels |= {id(tick.label1), id(tick.label2)}
            if ax.get_visible() and axis.get_visible():
                for tick in axis._update_ticks():
                    drawn += [label for label in (tick.label1, tick.label2) if label.get_visible()]
    out = []
    for text in [*fig.findobj(Text), *drawn]:
        if id(text) in tick_labels and text not in drawn:
            continue
        if not text.get_visible() or not text.get_text().strip():
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        if text not in out:
            out.append(text)
    return out


def text_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of text elements whose bounding boxes overlap (by more than half a pixel) once drawn."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    for text in _texts(fig):
        box = text.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            boxes.append((text.get_text(), box.expanded(1, 1).padded(-0.5)))
    overlaps = []
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        if box_a.overlaps(box_b):
            overlaps.append((a, b))
    return overlaps


def check_figure(fig: Figure) -> list[str]:
    """Problems of a figure: overlapping text, too wide, fonts too small at the saved size."""
    problems = []
    with mpl.rc_context(STYLE):
        overlaps = text_overlaps(fig)
        texts = _texts(fig)
    problems += [f"text {a!r} overlaps {b!r}" for a, b in overlaps]
    width, height = fig.get_size_inches()
    if width / height > 3:
        problems.append(f"{width:.1f} x {height:.1f} in is a strip (width/height {width / height:.1f} > 3)")
    problems += [f"{t.get_text()!r} is {t.get_fontsize():.1f} pt" for t in texts if t.get_fontsize() < MIN_FONT_PT]
    return problems


#: Figures of tables the simulated cohort lacks (lesion filling, lesions, left/right rows, change between sessions);
#: tests/test_reports_volumes.py and tests/test_reports_change.py draw and check them.
NOT_IN_COHORT = {"filling_blandaltman", "lesion_load", "asymmetry", "session_change"}
COHORT_FIGURES = sorted(set(FIGURE_TITLES) - NOT_IN_COHORT)


def test_every_figure_is_drawn_from_the_cohort(figures):
    built, notes = figures
    assert set(built) == set(COHORT_FIGURES), notes
    assert notes == {}


@pytest.mark.parametrize("stem", COHORT_FIGURES)
def test_figure_is_readable(figures, stem):
    fig = figures[0][stem]
    assert check_figure(fig) == []


def test_checker_catches_overlap_strip_and_small_font():
    # The checks are only worth something if they fail on a bad figure.
    fig = Figure(figsize=(12, 2))
    ax = fig.subplots()
    ax.text(0.5, 0.5, "one label", fontsize=9)
    ax.text(0.5, 0.5, "another label", fontsize=6)
    problems = check_figure(fig)
    assert any("overlaps" in p for p in problems)
    assert any("strip" in p for p in problems)
    assert any("6.0 pt" in p for p in problems)


def test_one_colour_per_method_in_every_figure(figures):
    colors = method_colors(m for m, *_ in REPORT_METHODS)
    assert len(set(colors.values())) == len(colors)
    for stem in ("volumes_distribution", "agreement_scatter", "crosssectional_forest", "power_sample_size"):
        fig = figures[0][stem]
        used = set()
        for artist in fig.findobj(lambda a: hasattr(a, "get_facecolor") or hasattr(a, "get_color")):
            for getter in ("get_facecolor", "get_color", "get_edgecolor"):
                value = getattr(artist, getter, None)
                if value is None:
                    continue
                try:
                    rgba = np.atleast_2d(mpl.colors.to_rgba_array(value()))
                except (ValueError, TypeError):
                    continue
                used |= {mpl.colors.to_hex(c[:3]) for c in rgba if c[3] > 0}
        assert {c.lower() for c in colors.values()} <= used, stem


def test_files_are_svg_and_300_dpi_png(cohort_group):
    result = write_group_figures(cohort_group)
    assert set(result.files) == set(COHORT_FIGURES)
    for stem, (svg, png) in result.files.items():
        assert svg.suffix == ".svg" and svg.read_text().lstrip().startswith("<?xml")
        with Image.open(png) as image:
            dpi = image.info.get("dpi", (0, 0))
            assert round(dpi[0]) == PNG_DPI, stem
            width, height = image.size
        assert width / height <= 3, stem
    # Redrawing the same tables leaves the files alone.
    before = {p: p.stat().st_mtime_ns for paths in result.files.values() for p in paths}
    write_group_figures(cohort_group)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_one_method_makes_sentences_not_broken_figures(tmp_path):
    group = tmp_path / "group"
    volumes = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "session_id": ["ses-1", "ses-1"],
                            "method": ["first", "first"], "contrast": ["T1w", "T1w"], "volume_ml": [9.1, 8.7]})
    write_tsv(volumes, group / "volumes.tsv")
    write_tsv(pd.DataFrame({"method_a": ["first"], "method_b": ["first"], "containment_mean": [1.0],
                            "containment_sd": [0.0], "n_sessions": [2]}), group / "containment.tsv")
    # A heatmap left over from a run with more methods goes: the folder shows what the tables say.
    (group / "figures").mkdir()
    (group / "figures" / "containment_heatmap.svg").write_text("<svg/>")
    result = write_group_figures(group)
    assert set(result.files) == {"volumes_distribution"}
    assert "Only one method (first)" in result.notes["containment_heatmap"]
    assert "Only one method" in result.notes["volumes_scatter_matrix"]
    assert not (group / "figures" / "containment_heatmap.svg").exists()
    assert check_figure(build_group_figures(group)[0]["volumes_distribution"]) == []


def test_many_methods_still_readable(tmp_path):
    # All the method names a full run can produce, in one forest plot and one heatmap.
    names = [*figures_group.method_order(["freesurfer", "first", "dbsegment", "meshnet", "mindglideT1w",
                                          "mindglideFLAIR", "mindglideR1", "ensembleT1wFLAIR", "ensembleT1wR1",
                                          "ensembleR1FLAIR", "ensembleT1wFLAIRR1"])]
    colors = method_colors(names)
    assert len(set(colors.values())) == len(names)
    rng = np.random.default_rng(0)
    forest = pd.DataFrame([{"outcome": o, "transform": "none", "method": m, "contrast": "T1w",
                            "beta": b, "ci_low": b - 0.3, "ci_high": b + 0.3, "p_fdr": 0.2}
                           for o in ("edss", "sdmt") for m in names for b in [rng.normal()]])
    with mpl.rc_context(STYLE):
        fig = figures_group_clinical.plot_forest(forest, colors, xlabel="β per mL")
    assert check_figure(fig) == []
    containment = pd.DataFrame([{"method_a": a, "method_b": b, "containment_mean": rng.uniform(0.6, 1)}
                                for a in names for b in names])
    with mpl.rc_context(STYLE):
        fig = figures_group_agreement.plot_containment(containment, colors)
    assert check_figure(fig) == []
    volumes = pd.DataFrame([{"participant_id": f"sub-{i}", "session_id": session, "method": m, "contrast": "T1w",
                             "volume_ml": 9 + rng.normal()} for i in range(20) for session in ("ses-1", "ses-2")
                            for m in names])
    for plot in (figures_group.plot_volume_matrix, figures_group.plot_volume_distribution):
        with mpl.rc_context(STYLE):
            fig = plot(volumes, colors)
        assert check_figure(fig) == [], plot.__name__


def test_scatter_matrix_of_a_dataset_without_sessions(tmp_path):
    group = tmp_path / "group"
    rng = np.random.default_rng(3)
    volumes = pd.DataFrame([{"participant_id": f"sub-{i:02d}", "session_id": np.nan, "method": m, "contrast": "T1w",
                             "volume_ml": 9 + rng.normal()} for i in range(6) for m in ("first", "meshnet")])
    write_tsv(volumes, group / "volumes.tsv")  # session_id is n/a on every row
    result = write_group_figures(group)
    assert "volumes_scatter_matrix" in result.files, result.notes.get("volumes_scatter_matrix")
    assert len(figures_group._wide_volumes(volumes)) == 6


def test_each_method_declares_the_colours_of_its_masks():
    """The palette is the methods' own colours, in report order; a mask colour is claimed once."""
    from thalamus_bidsapp.methods.registry import all_methods
    from thalamus_bidsapp.reports.palette import METHOD_COLORS

    declared = [desc for method in all_methods() for desc in method.colors]
    assert list(METHOD_COLORS) == declared and len(set(declared)) == len(declared)
    for method in all_methods():
        assert method.name in method.colors, f"{method.name} gives its own mask no colour"
