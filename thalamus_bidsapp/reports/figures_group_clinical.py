"""The clinical figures (forest plots, change, progression, power), from the clinical tables.

:func:`~thalamus_bidsapp.reports.figures_group.build_group_figures` draws them
for the group report; :func:`plot_forest` is also the forest plot of the
clinical step's own figures (:mod:`thalamus_bidsapp.reports.figures_clinical`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.reports.figures_common import (
    COURSE_ORDER,
    OUTCOME_LABELS,
    draw_boxes,
    finish,
    method_axis,
    method_labels,
    new_figure,
    panel_grid,
)
from thalamus_bidsapp.reports.palette import PRINT_WIDTH_IN, STYLE, method_order

LOGGER = logging.getLogger(__name__)

#: x-axis labels of the forest plots of the cross-sectional and of the longitudinal (change) models.
CROSSSECTIONAL_XLABEL = "β per mL of thalamus (outcome units)"
LONGITUDINAL_XLABEL = "β per mL of thalamic change (outcome change units)"


def plot_forest(table: pd.DataFrame, colors: Mapping[str, str], *, xlabel: str) -> Figure:
    """Beta with 95% CI: one panel per outcome (a wrapping grid), one row per method; filled when p_FDR < 0.05."""
    table = table.assign(label=method_labels(table))
    for column in ("beta", "ci_low", "ci_high", "p_fdr"):
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    outcomes = list(dict.fromkeys(table["outcome"].astype(str)))
    order = method_order(table["method"])
    labels = list(dict.fromkeys(table.sort_values("method", key=lambda s: s.map(order.index))["label"]))
    ypos = {label: len(labels) - 1 - i for i, label in enumerate(labels)}
    row_h = 0.28 * len(labels) + 0.75
    fig, axes = panel_grid(len(outcomes), height=row_h, sharey=True)
    for ax, outcome in zip(axes, outcomes):
        sub = table[table["outcome"].astype(str) == outcome]
        for _, row in sub.iterrows():
            if not np.isfinite(row["beta"]):
                continue
            color = colors.get(str(row["method"]), "0.4")
            significant = "p_fdr" in row and np.isfinite(row["p_fdr"]) and row["p_fdr"] < 0.05
            y = ypos[row["label"]]
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=1.6, solid_capstyle="butt")
            ax.plot(row["beta"], y, "o", color=color, markersize=5.5,
                    markerfacecolor=color if significant else "white", markeredgewidth=1.4)
        ax.axvline(0, color="0.55", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        transform = str(sub["transform"].iloc[0]) if "transform" in sub and len(sub) else "none"
        name = OUTCOME_LABELS.get(outcome, outcome.replace("_", " "))
        ax.set_title(name + (" (log)" if transform == "log" else ""))
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_yticks(range(len(labels)), [lab for lab, _ in sorted(ypos.items(), key=lambda kv: kv[1])])
    for ax in axes:
        for label in ax.get_yticklabels():
            label.set_color(colors.get(label.get_text().split(" (")[0], "black"))
    handles = [Line2D([], [], marker="o", ls="", color="0.3", markerfacecolor="0.3", label="p_FDR < 0.05"),
               Line2D([], [], marker="o", ls="", color="0.3", markerfacecolor="white", label="not significant")]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    fig.supxlabel(xlabel, fontsize=STYLE["axes.labelsize"])
    return finish(fig)


def _grouped_boxes(ax: Axes, data: pd.DataFrame, value: str, group: str, groups: Sequence[str],
                   methods: Sequence[str], colors: Mapping[str, str]) -> None:
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        values, positions = [], []
        for i, g in enumerate(groups):
            sel = (data["method"] == method) & (data[group].astype(str) == g)
            values.append(pd.to_numeric(data.loc[sel, value], errors="coerce").dropna().to_numpy(float))
            positions.append(i + (j - (len(methods) - 1) / 2) * width)
        draw_boxes(ax, values, positions, [colors[method]] * len(groups), width * 0.85, points=False)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.axhline(0, color="0.6", lw=0.8, ls="--")


def _method_legend(fig: Figure, methods: Sequence[str], colors: Mapping[str, str]) -> None:
    handles = [mpl.patches.Patch(facecolor=mpl.colors.to_rgba(colors[m], 0.35), edgecolor=colors[m], label=m)
               for m in methods]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(methods), 4), frameon=False)


def plot_change(deltas: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """% thalamic change from baseline per method (one row per method), and by diagnosis (methods side by side)."""
    methods = method_order(deltas["method"])
    by_diagnosis = "diagnosis" in deltas and deltas["diagnosis"].notna().any()
    height = max(3.2, 0.4 * len(methods) + 1.2)
    fig = new_figure(PRINT_WIDTH_IN if by_diagnosis else 5.0, height)
    axes = fig.subplots(1, 2 if by_diagnosis else 1, squeeze=False, width_ratios=[1, 1.3] if by_diagnosis
                        else None)[0]
    values = [pd.to_numeric(deltas.loc[deltas["method"] == m, "pct_volume_ml"], errors="coerce").dropna()
              .to_numpy(float) for m in methods]
    draw_boxes(axes[0], values, range(len(methods)), [colors[m] for m in methods], 0.6, horizontal=True)
    method_axis(axes[0], methods, colors)
    axes[0].axvline(0, color="0.6", lw=0.8, ls="--")
    axes[0].set_title("per method")
    axes[0].set_xlabel("% change from baseline")
    axes[0].xaxis.set_major_locator(MaxNLocator(nbins=4))
    if by_diagnosis:
        data = deltas.assign(diagnosis=deltas["diagnosis"].fillna("n/a").astype(str))
        groups = sorted(data["diagnosis"].unique())
        _grouped_boxes(axes[1], data, "pct_volume_ml", "diagnosis", groups, methods, colors)
        axes[1].set_title("by diagnosis")
        axes[1].set_ylabel("% change from baseline")
        _method_legend(fig, methods, colors)
    return finish(fig)


def plot_progression(subjects: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """% thalamic change by EDSS course (progression, stable, improvement), methods side by side."""
    methods = method_order(subjects["method"])
    present = set(subjects["edss_course"].dropna().astype(str))
    groups = [c for c in COURSE_ORDER if c in present] + sorted(present - set(COURSE_ORDER))
    counts = subjects.dropna(subset=["edss_course"]).drop_duplicates("participant_id")["edss_course"].astype(str)
    fig = new_figure(min(PRINT_WIDTH_IN, 2.5 + 0.45 * len(groups) * len(methods)), 3.4)
    ax = fig.subplots()
    _grouped_boxes(ax, subjects, "pct_volume_ml", "edss_course", groups, methods, colors)
    ax.set_xticks(range(len(groups)), [f"{g}\n(n = {(counts == g).sum()})" for g in groups])
    ax.set_ylabel("% change from baseline")
    _method_legend(fig, methods, colors)
    return finish(fig)


def plot_power(power: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Subjects per arm per method (horizontal bars, value at the bar's end)."""
    table = power.assign(label=method_labels(power),
                         n_per_arm=pd.to_numeric(power["n_per_arm"], errors="coerce"))
    order = method_order(table["method"])
    table = table.sort_values("method", key=lambda s: s.map(order.index)).iloc[::-1]
    fig = new_figure(min(PRINT_WIDTH_IN, 5.0), 0.32 * len(table) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(table))
    ax.barh(y, table["n_per_arm"].fillna(0), color=[colors[str(m)] for m in table["method"]], height=0.65)
    top = float(table["n_per_arm"].max()) if table["n_per_arm"].notna().any() else 1.0
    for yi, n in zip(y, table["n_per_arm"]):
        ax.text((n if np.isfinite(n) else 0) + top * 0.02, yi, f"{n:.0f}" if np.isfinite(n) else "n/a",
                va="center", ha="left", fontsize=8)
    ax.set_yticks(y, table["label"])
    for label, method in zip(ax.get_yticklabels(), table["method"].astype(str)):
        label.set_color(colors[method])
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("subjects per arm")
    return finish(fig)
