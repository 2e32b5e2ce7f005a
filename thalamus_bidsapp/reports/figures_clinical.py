"""Figures of the clinical analyses: forest plots of the models, boxplots of % thalamic change.

Drawn from the clinical tables (plain DataFrames; the column names are
arguments, so this module knows nothing of the group level), as PNG and SVG.
The forest plot is the group report's
(:func:`thalamus_bidsapp.reports.figures_group_clinical.plot_forest`), so that
both mark the same associations the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from thalamus_bidsapp.bidsio.atomic import atomic_path
from thalamus_bidsapp.reports.figures_group_clinical import CROSSSECTIONAL_XLABEL, LONGITUDINAL_XLABEL, plot_forest
from thalamus_bidsapp.reports.palette import STYLE, method_colors

FIGURE_FORMATS = ("png", "svg")


def _labels(frame: pd.DataFrame) -> pd.Series:
    return frame["method"].astype(str) + " (" + frame["contrast"].astype(str) + ")"


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FIGURE_FORMATS:
        path = out_dir / "figures" / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    return paths


def boxplot_figure(data: pd.DataFrame, value: str, group: str, hue: str | None, title: str, ylabel: str) -> Figure:
    """Boxplots (whiskers 1.5 IQR) of ``value`` per ``group``, side by side per ``hue`` level."""
    groups = sorted(data[group].dropna().astype(str).unique())
    hues = sorted(data[hue].dropna().astype(str).unique()) if hue else [None]
    width = 0.8 / max(len(hues), 1)
    fig = Figure(figsize=(max(4.0, 1.0 + 0.5 * len(groups) * len(hues)), 4.0), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(len(hues))]
    for j, h in enumerate(hues):
        series = []
        positions = []
        for i, g in enumerate(groups):
            sel = data[group].astype(str) == g
            if h is not None:
                sel &= data[hue].astype(str) == h
            values = pd.to_numeric(data.loc[sel, value], errors="coerce").dropna().to_numpy()
            if len(values):
                series.append(values)
                positions.append(i + (j - (len(hues) - 1) / 2) * width)
        if series:
            parts = ax.boxplot(series, positions=positions, widths=width * 0.9, patch_artist=True, whis=1.5,
                               manage_ticks=False, medianprops={"color": "black"})
            for patch in parts["boxes"]:
                patch.set_facecolor(colors[j])
                patch.set_alpha(0.6)
            if h is not None:
                ax.plot([], [], color=colors[j], lw=6, alpha=0.6, label=h)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if hue:
        ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def make_figures(results: Mapping[str, pd.DataFrame], out_dir: Path, *, pct: str = "pct_volume_ml",
                 course: str = "edss_course") -> list[Path]:
    """Forest plots, boxplots of % change (column ``pct``) overall, by diagnosis and by EDSS course (``course``)."""
    paths: list[Path] = []
    for analysis, stem, xlabel in (("crosssectional", "clinical_crosssectional_forest", CROSSSECTIONAL_XLABEL),
                                   ("longitudinal_regression", "clinical_longitudinal_forest", LONGITUDINAL_XLABEL)):
        table = results.get(analysis)
        if table is not None and table["beta"].notna().any():
            with mpl.rc_context(STYLE):
                fig = plot_forest(table, method_colors(table["method"]), xlabel=xlabel)
                paths += _save(fig, out_dir, stem)
    deltas = results.get("longitudinal_deltas")
    if deltas is not None and deltas[pct].notna().any():
        labelled = deltas.assign(method_label=_labels(deltas), diagnosis=deltas["diagnosis"].fillna("n/a"))
        paths += _save(boxplot_figure(labelled, pct, "method_label", None, "Thalamic volume change",
                                      "% change from baseline"), out_dir, "clinical_pct_change_boxplot")
        paths += _save(boxplot_figure(labelled, pct, "diagnosis", "method_label", "Thalamic volume change by diagnosis",
                                      "% change from baseline"), out_dir, "clinical_pct_change_by_diagnosis_boxplot")
    prog_subjects = results.get("progression_subjects")
    if prog_subjects is not None and prog_subjects[course].notna().any():
        labelled = prog_subjects.assign(method_label=_labels(prog_subjects))
        paths += _save(boxplot_figure(labelled, pct, "method_label", course, "Thalamic volume change by EDSS course",
                                      "% change from baseline"), out_dir, "clinical_progression_pct_change_boxplot")
    return paths
