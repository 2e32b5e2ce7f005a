"""Figures of the clinical analyses: forest plots of the models, boxplots of % thalamic change.

Drawn from the clinical tables (plain DataFrames; the column names are
arguments, so this module knows nothing of the group level), as PNG and SVG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.bidsio.atomic import atomic_path

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


def forest_figure(table: pd.DataFrame, title: str) -> Figure:
    """Beta with CI per method, one panel per outcome; stars mark BH-adjusted significance."""
    outcomes = list(dict.fromkeys(table["outcome"]))
    labels = sorted(set(_labels(table)))
    fig = Figure(figsize=(3.2 * len(outcomes) + 1.5, 0.45 * len(labels) + 2.0), layout="constrained")
    axes = fig.subplots(1, len(outcomes), sharey=True, squeeze=False)[0]
    ypos = {label: i for i, label in enumerate(labels)}
    for ax, outcome in zip(axes, outcomes):
        sub = table[table["outcome"] == outcome]
        for _, row in sub.iterrows():
            y = ypos[f"{row['method']} ({row['contrast']})"]
            if not np.isfinite(row["beta"]):
                continue
            color = "tab:red" if row.get("significance", "") else "tab:blue"
            ax.errorbar(row["beta"], y, xerr=[[row["beta"] - row["ci_low"]], [row["ci_high"] - row["beta"]]],
                        fmt="o", color=color, capsize=3)
            if row.get("significance", ""):
                ax.annotate(row["significance"], (row["ci_high"], y), xytext=(3, -3), textcoords="offset points",
                            fontsize=9, color=color)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        transform = sub["transform"].iloc[0] if len(sub) else "none"
        ax.set_title(f"{outcome}" + (" (log)" if transform == "log" else ""))
        ax.set_xlabel("beta per mL")
    axes[0].set_yticks(range(len(labels)), labels)
    fig.suptitle(f"{title}\n* p_FDR<0.05, ** <0.01, *** <0.001")
    return fig


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
    if "crosssectional" in results and results["crosssectional"]["beta"].notna().any():
        paths += _save(forest_figure(results["crosssectional"], "Cross-sectional: outcome ~ thalamus (mL)"),
                       out_dir, "clinical_crosssectional_forest")
    if "longitudinal_regression" in results and results["longitudinal_regression"]["beta"].notna().any():
        paths += _save(forest_figure(results["longitudinal_regression"], "Longitudinal: delta outcome ~ delta thalamus (mL)"),
                       out_dir, "clinical_longitudinal_forest")
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
