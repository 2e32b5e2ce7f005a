"""The figures of the group report, drawn from the published group tables (``group/*.tsv``).

Everything here reads the TSVs the group level wrote, never in-memory
results, so ``--reports-only`` redraws every figure from the derivatives
alone. One figure per analysis, in the order of the paper:

========================  ===============================================================
stem                      what it shows (source table)
========================  ===============================================================
volumes_distribution      thalamus volume per method, each session traceable (figures_group_volumes)
volumes_scatter_matrix    every method against every other, one point (marker) per session (volumes)
agreement_overlap         Dice, precision, sensitivity per method (agreement_voxelwise)
agreement_scatter         method vs manual volume, identity line, OLS fit, CCC (agreement_*)
agreement_blandaltman     difference vs mean, bias, limits of agreement, proportional bias
containment_heatmap       mean directed containment between methods (containment)
crosssectional_forest     beta with 95% CI per outcome and method (clinical_crosssectional)
longitudinal_forest       the same for the change models (clinical_longitudinal_regression)
longitudinal_change       % thalamic change per method, overall and by diagnosis
progression_change        % thalamic change by EDSS course (clinical_progression_subjects)
power_sample_size         subjects per arm per method (clinical_power)
filling_blandaltman,      lesion filling (paired), lesion load and left/right asymmetry
lesion_load, asymmetry    (volumes; figures_group_volumes)
session_change            volume across sessions per subject, annualized change (longitudinal_change;
                          figures_group_change)
========================  ===============================================================

Colours and fonts come from :mod:`thalamus_bidsapp.reports.palette` (one
colour per method everywhere). Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot state), drawn at print
size, and saved as SVG and 300 dpi PNG; a file is rewritten only when its
bytes change. A figure that would say nothing (a heatmap of one method, a
scatter matrix of one method) is not drawn; :func:`build_group_figures`
returns the reason instead, for the report to say in a sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from thalamus_bidsapp.reports.figures_common import (
    FigureSet,
    bilateral_volumes,
    draw_boxes,
    finish,
    method_axis,
    new_figure,
    read_group_table,
    save_figure,
)
from thalamus_bidsapp.reports import group_change
from thalamus_bidsapp.reports.figures_group_change import add_change_figure
from thalamus_bidsapp.reports.figures_group_agreement import plot_bland_altman, plot_containment, plot_manual_scatter
from thalamus_bidsapp.reports.figures_group_clinical import (
    CROSSSECTIONAL_XLABEL,
    LONGITUDINAL_XLABEL,
    plot_change,
    plot_forest,
    plot_power,
    plot_progression,
)
from thalamus_bidsapp.reports.figures_group_template import plot_template_maps
from thalamus_bidsapp.reports.figures_group_volumes import add_volume_figures, plot_volume_distribution
from thalamus_bidsapp.reports.palette import PRINT_WIDTH_IN, STYLE, method_colors, method_order

LOGGER = logging.getLogger(__name__)

#: Every figure this module draws: stem -> title (the report's caption).
FIGURE_TITLES: dict[str, str] = {
    "volumes_distribution": "Thalamus volume per method",
    "volumes_scatter_matrix": "Method against method (one point per session)",
    "agreement_overlap": "Overlap with the manual masks",
    "agreement_scatter": "Method against manual volume",
    "agreement_blandaltman": "Bland-Altman: method minus manual volume",
    "containment_heatmap": "Directed containment between methods",
    "crosssectional_forest": "Cross-sectional associations",
    "longitudinal_forest": "Associations of the changes",
    "longitudinal_change": "Thalamic volume change",
    "progression_change": "Thalamic volume change by EDSS course",
    "power_sample_size": "Subjects per arm for a trial",
    "template_maps": "Thalamus probability per method in template space",
    "filling_blandaltman": "Lesion filling: filled minus unfilled volume, paired by session",
    "lesion_load": "Lesion load and the thalamus",
    "asymmetry": "Left/right asymmetry per method",
    group_change.FIGURE: group_change.TITLE,
}
_METRICS = (("dice", "Dice"), ("precision", "Precision"), ("sensitivity", "Sensitivity"))
_SESSION_MARKERS = ("o", "^", "s", "D")
_MIN_SCATTER = 3  # sessions with every method's volume needed for a scatter matrix


# ------------------------------------------------------------------ volumes
def _wide_volumes(volumes: pd.DataFrame) -> pd.DataFrame:
    # A dataset without sessions has session_id n/a: with pandas 3, astype(str) keeps it missing and the key
    # would be missing too, so every row would be dropped; a missing session is one (empty) label instead.
    sessions = volumes["session_id"] if "session_id" in volumes else pd.Series(None, index=volumes.index)
    key = volumes["participant_id"].astype(str) + "|" + sessions.astype(object).fillna("").astype(str)
    return (volumes.assign(_key=key).pivot_table(index="_key", columns="method", values="volume_ml", aggfunc="mean"))


def plot_volume_matrix(volumes: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Lower-triangle scatter matrix of the methods' volumes (one point per session), histograms on the diagonal."""
    methods = method_order(volumes["method"])
    wide = _wide_volumes(volumes)
    k = len(methods)
    # Panels wide enough for the method names under them (about 0.085 in per character at 9 pt).
    panel = max(1.35, 0.085 * max(len(m) for m in methods) + 0.1)
    size = max(4.0, panel * k)
    fig = Figure(figsize=(size, size), layout="constrained")
    axes = fig.subplots(k, k, squeeze=False)
    values = wide[methods].to_numpy(float)
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    lims = (lo - pad, hi + pad)
    # One marker per session label (baseline, follow-up...) where there are few; else all alike.
    sessions = wide.index.to_series().str.split("|").str[1].to_numpy()
    labels = sorted(set(sessions))
    markers = dict(zip(labels, _SESSION_MARKERS)) if len(labels) <= len(_SESSION_MARKERS) else None
    if markers is None:
        sessions = np.full(len(sessions), "all")
        markers = {"all": "o"}
    for i, row_method in enumerate(methods):
        for j, col_method in enumerate(methods):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            x = wide[col_method].to_numpy(float)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
            if i == j:
                ax.hist(x[np.isfinite(x)], bins=15, range=lims, color=colors[col_method], alpha=0.8)
                ax.yaxis.set_major_locator(NullLocator())
                ax.spines["left"].set_visible(False)
            else:
                ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
                y = wide[row_method].to_numpy(float)
                ok = np.isfinite(x) & np.isfinite(y)
                ax.plot(lims, lims, ls="--", color="0.55", lw=0.8)
                for session, marker in markers.items():
                    mine = ok & (sessions == session)
                    ax.scatter(x[mine], y[mine], s=7, marker=marker, color="0.25", alpha=0.6, edgecolor="none")
                ax.set_ylim(lims)
            ax.set_xlim(lims)
            if i < k - 1:
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel(col_method, color=colors[col_method])
            if j > 0 or i == 0:
                ax.tick_params(labelleft=False)
            if j == 0:
                ax.set_ylabel(row_method, color=colors[row_method])
    fig.supxlabel("thalamus volume (mL)", fontsize=STYLE["axes.labelsize"])
    if len(markers) > 1:
        handles = [Line2D([], [], marker=m, ls="", color="0.25", label=session) for session, m in markers.items()]
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    return finish(fig)


# ------------------------------------------------------------------ agreement with manual masks
def plot_overlap(voxelwise: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Dice, precision and sensitivity per method: one panel per metric, one row and colour per method."""
    methods = method_order(voxelwise["method"])
    fig = new_figure(PRINT_WIDTH_IN, 0.4 * len(methods) + 1.2)
    axes = fig.subplots(1, 3, sharey=True, sharex=True)
    low = 1.0
    for ax, (metric, label) in zip(axes, _METRICS):
        values = [pd.to_numeric(voxelwise.loc[voxelwise["method"] == m, metric], errors="coerce").dropna()
                  .to_numpy(float) for m in methods]
        low = min([low, *(float(v.min()) for v in values if len(v))])
        draw_boxes(ax, values, range(len(methods)), [colors[m] for m in methods], 0.6, horizontal=True)
        ax.set_title(label)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    method_axis(axes[0], methods, colors)
    axes[0].set_xlim(max(0.0, low - 0.03), 1.005)
    fig.supxlabel("overlap with the manual mask", fontsize=STYLE["axes.labelsize"])
    return finish(fig)


# ------------------------------------------------------------------ all figures
def _all_methods(tables: Mapping[str, pd.DataFrame | None]) -> list[str]:
    methods: list[str] = []
    for name, table in tables.items():
        if table is None or table.empty:
            continue
        for column in ("method", "method_a", "method_b"):
            if column in table:
                methods += table[column].dropna().astype(str).tolist()
    return method_order(methods)


def build_group_figures(group_dir: Path) -> tuple[dict[str, Figure], dict[str, str]]:
    """Every group figure the tables allow, not yet saved, and for the others why not.

    Returns
    -------
    figures, notes
        stem -> :class:`~matplotlib.figure.Figure` (drawn with :data:`STYLE`)
        and stem -> one sentence saying why that figure was not drawn.
    """
    stems = ("volumes", "agreement_voxelwise", "agreement_volumetric", "containment", "clinical_crosssectional",
             "clinical_longitudinal_regression", "clinical_longitudinal_deltas", "clinical_progression_subjects",
             "clinical_power")
    tables = {stem: read_group_table(group_dir, stem) for stem in stems}
    volumes = tables["volumes"]
    if volumes is not None and {"method", "volume_ml"} <= set(volumes.columns):
        volumes = bilateral_volumes(volumes)
        tables["volumes"] = volumes
    colors = method_colors(_all_methods(tables))
    figures: dict[str, Figure] = {}
    notes: dict[str, str] = {}

    def draw(stem: str, make: Callable[[], Figure]) -> None:
        try:
            with mpl.rc_context(STYLE):
                figures[stem] = make()
        except (KeyError, ValueError, TypeError, IndexError, OSError) as err:
            # A table of an unexpected shape must not cost the whole report.
            LOGGER.warning("figure %s not drawn: %s", stem, err)
            notes[stem] = f"The figure could not be drawn from its table ({type(err).__name__}: {err})."

    if volumes is not None and not volumes.empty:
        draw("volumes_distribution", lambda: plot_volume_distribution(volumes, colors))
        n_methods = volumes["method"].nunique()
        n_complete = int(_wide_volumes(volumes).notna().all(axis=1).sum())
        if n_methods < 2:
            notes["volumes_scatter_matrix"] = "Only one method has volumes: there is no method to compare it with."
        elif n_complete < _MIN_SCATTER:
            notes["volumes_scatter_matrix"] = (f"Only {n_complete} session(s) have a volume from every method: too "
                                               "few for a method-against-method scatter matrix.")
        else:
            draw("volumes_scatter_matrix", lambda: plot_volume_matrix(volumes, colors))
    voxelwise = tables["agreement_voxelwise"]
    if voxelwise is not None and not voxelwise.empty:
        volumetric = tables["agreement_volumetric"]
        draw("agreement_overlap", lambda: plot_overlap(voxelwise, colors))
        draw("agreement_scatter", lambda: plot_manual_scatter(voxelwise, volumetric, colors))
        draw("agreement_blandaltman", lambda: plot_bland_altman(voxelwise, volumetric, colors))
    containment = tables["containment"]
    if containment is not None and not containment.empty:
        n_methods = len(set(containment["method_a"].astype(str)) | set(containment["method_b"].astype(str)))
        if n_methods >= 2:
            draw("containment_heatmap", lambda: plot_containment(containment, colors))
        else:
            notes["containment_heatmap"] = (f"Only one method ({containment['method_a'].iloc[0]}) has masks: "
                                            "there is no pair to compare.")
    for stem, source, xlabel in (
            ("crosssectional_forest", "clinical_crosssectional", CROSSSECTIONAL_XLABEL),
            ("longitudinal_forest", "clinical_longitudinal_regression", LONGITUDINAL_XLABEL)):
        table = tables[source]
        if table is not None and "beta" in table and pd.to_numeric(table["beta"], errors="coerce").notna().any():
            draw(stem, lambda table=table, xlabel=xlabel: plot_forest(table, colors, xlabel=xlabel))
    deltas = tables["clinical_longitudinal_deltas"]
    if deltas is not None and "pct_volume_ml" in deltas and \
            pd.to_numeric(deltas["pct_volume_ml"], errors="coerce").notna().any():
        draw("longitudinal_change", lambda: plot_change(deltas, colors))
    subjects = tables["clinical_progression_subjects"]
    if subjects is not None and "edss_course" in subjects and subjects["edss_course"].notna().any():
        draw("progression_change", lambda: plot_progression(subjects, colors))
    power = tables["clinical_power"]
    if power is not None and "n_per_arm" in power and pd.to_numeric(power["n_per_arm"], errors="coerce").notna().any():
        draw("power_sample_size", lambda: plot_power(power, colors))
    maps = read_group_table(group_dir, "template_maps")
    if maps is not None and not maps.empty:
        draw("template_maps", lambda: plot_template_maps(group_dir, maps))
    add_volume_figures(group_dir, colors, draw)
    add_change_figure(group_dir, colors, draw)
    return figures, notes


def write_group_figures(group_dir: Path) -> FigureSet:
    """Draw every group figure into ``group_dir/figures`` (SVG and 300 dpi PNG) from the group tables.

    Files of this module's figures that the tables no longer support (a
    heatmap once only one method is left) are removed, so the folder shows
    what the tables say.
    """
    group_dir = Path(group_dir)
    figures_dir = group_dir / "figures"
    figures, notes = build_group_figures(group_dir)
    result = FigureSet(notes=notes)
    for stem, fig in figures.items():
        result.files[stem] = save_figure(fig, figures_dir / stem)
    for stem in FIGURE_TITLES:
        if stem not in figures:
            for suffix in (".svg", ".png"):
                (figures_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    if figures:
        LOGGER.info("group figures: %d drawn in %s", len(figures), figures_dir)
    return result
