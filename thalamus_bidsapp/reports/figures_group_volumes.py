"""Group figures of the volumes themselves: per method with each session traceable, lesion filling, lesions, sides.

Drawn from ``group/volumes.tsv`` by way of :mod:`thalamus_bidsapp.reports.group_volumes`:

========================  ===============================================================
stem                      what it shows
========================  ===============================================================
volumes_distribution      thalamus volume per method; a session's points joined across methods, named when few
filling_blandaltman       filled minus unfilled volume against their mean, per method (paired)
lesion_load               thalamus volume against lesion volume; lesion inside and near the thalamus
asymmetry                 left/right asymmetry index per method
========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.reports.figures_common import (
    MIN_BOX,
    draw_boxes,
    finish,
    method_axis,
    new_figure,
    panel_grid,
    read_group_table,
)
from thalamus_bidsapp.reports.group_volumes import (
    asymmetry_table,
    filling_pairs,
    filling_summary,
    lesion_table,
    session_label,
)
from thalamus_bidsapp.reports.palette import REFERENCE_COLOR, STYLE, method_order

#: Up to this many sessions each gets its own lane in every method's row and its own marker, in the legend.
MAX_NAMED_SESSIONS = 12
#: Up to this many sessions a thin line joins a session's points across the methods.
_MAX_JOINED = 150
_SESSION_MARKERS = ("o", "^", "s", "D")
#: One marker per session when they are named (at most MAX_NAMED_SESSIONS).
_NAMED_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "p", "h")


def _lanes(keys: list[str]) -> dict[str, float]:
    """A fixed offset in (-0.3, 0.3) per session, the same in every method's row."""
    if len(keys) <= MAX_NAMED_SESSIONS:
        return {k: (i + 0.5) / len(keys) * 0.6 - 0.3 for i, k in enumerate(keys)}
    rng = np.random.default_rng(0)
    return dict(zip(keys, rng.uniform(-0.3, 0.3, len(keys))))


def _session_markers(table: pd.DataFrame, keys: list[str]) -> tuple[pd.Series, dict[str, str]]:
    """Which marker each row gets: one per session when few, else one per session label (ses-1...), else dots."""
    if len(keys) <= MAX_NAMED_SESSIONS:
        return table["_session"], dict(zip(keys, _NAMED_MARKERS))
    labels = table["session_id"].astype(str).where(table["session_id"].notna(), "")
    if 1 < labels.nunique() <= len(_SESSION_MARKERS):
        return labels, dict(zip(sorted(labels.unique()), _SESSION_MARKERS))
    return pd.Series("", index=table.index), {"": "o"}


def plot_volume_distribution(volumes: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Boxplot per method (one row each) with one point per session, a session at the same height in every row.

    A thin grey line joins a session's points across the methods. Up to
    :data:`MAX_NAMED_SESSIONS` sessions each has its own lane and marker,
    named in the legend; beyond, the marker tells the session label (ses-1,
    ses-2...).
    """
    table = volumes.assign(_session=session_label(volumes.assign(
        session_id=volumes["session_id"].astype(object).where(volumes["session_id"].notna(), ""))))
    methods = method_order(table["method"])
    keys = sorted(table["_session"].unique())
    lanes = _lanes(keys)
    fig = new_figure(5.6, 0.5 * len(methods) + 1.3)
    ax = fig.subplots()
    values = [table.loc[table["method"] == m, "volume_ml"].to_numpy(float) for m in methods]
    # Boxes only where there are enough values for quartiles; every point is drawn below, in its lane.
    values = [v if len(v) >= MIN_BOX else v[:0] for v in values]
    draw_boxes(ax, values, range(len(methods)), [colors[m] for m in methods], 0.75, horizontal=True, points=False)
    wide = table.pivot_table(index="_session", columns="method", values="volume_ml", aggfunc="mean")
    if len(keys) <= _MAX_JOINED:
        for key, row in wide.iterrows():
            y = [i + lanes[key] for i, m in enumerate(methods) if m in row and np.isfinite(row[m])]
            x = [row[m] for m in methods if m in row and np.isfinite(row[m])]
            ax.plot(x, y, color="0.6", lw=0.5, alpha=0.7, zorder=2)
    marker_of, markers = _session_markers(table, keys)
    for i, method in enumerate(methods):
        rows = table[table["method"] == method]
        for name, marker in markers.items():
            mine = rows[marker_of[rows.index] == name]
            ax.scatter(mine["volume_ml"], [i + lanes[k] for k in mine["_session"]], s=18, marker=marker,
                       color=colors[method], edgecolor="black", linewidth=0.3, zorder=3)
    method_axis(ax, methods, colors)
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.set_xlabel("thalamus volume (mL)")
    if len(markers) > 1:
        handles = [Line2D([], [], marker=m, ls="", color="0.45", markeredgecolor="black", markeredgewidth=0.3,
                          label=name) for name, m in markers.items()]
        fig.legend(handles=handles, loc="outside upper center", ncols=min(4, len(handles)), frameon=False)
    return finish(fig)


def plot_filling_blandaltman(pairs: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Per method: filled minus unfilled volume against their mean, mean bias and 95% limits of agreement."""
    summary = filling_summary(pairs).set_index("method")
    methods = list(summary.index)
    fig, axes = panel_grid(len(methods), sharey=True)
    span = np.concatenate([pairs["difference_ml"].to_numpy(float), [0.0],
                           summary[["loa_low_ml", "loa_high_ml"]].to_numpy(float).ravel()])
    span = span[np.isfinite(span)]
    pad = 0.25 * (span.max() - span.min()) if span.max() > span.min() else 0.1
    for ax, method in zip(axes, methods):
        rows = pairs[pairs["method"] == method]
        row = summary.loc[method]
        ax.axhline(0, color="0.75", lw=0.8)
        ax.scatter(rows["mean_ml"], rows["difference_ml"], s=14, color=colors.get(method, "0.3"),
                   edgecolor="black", linewidth=0.3, zorder=3)
        ax.axhline(row["mean_difference_ml"], color=REFERENCE_COLOR, lw=1.1)
        text = f"bias {row['mean_difference_ml']:+.2f} mL, n = {int(row['n_sessions'])}"
        if np.isfinite(row["loa_low_ml"]):
            for v in (row["loa_low_ml"], row["loa_high_ml"]):
                ax.axhline(v, color=REFERENCE_COLOR, lw=0.9, ls="--")
            text += f"\nLoA {row['loa_low_ml']:+.2f} to {row['loa_high_ml']:+.2f}"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1.5})
        ax.set_ylim(span.min() - pad, span.max() + pad * 2.2)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.ticklabel_format(useOffset=False)
        ax.set_title(method, color=colors.get(method, "black"))
    handles = [Line2D([], [], color=REFERENCE_COLOR, lw=1.1, label="mean difference"),
               Line2D([], [], color=REFERENCE_COLOR, lw=0.9, ls="--", label="95% limits of agreement")]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    fig.supxlabel("mean of filled and unfilled volume (mL)", fontsize=STYLE["axes.labelsize"])
    fig.supylabel("filled minus unfilled (mL)", fontsize=STYLE["axes.labelsize"])
    return finish(fig)


def plot_lesion_load(lesions: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Left: thalamus volume against lesion volume, per method. Right: lesion inside and near the thalamus."""
    methods = method_order(lesions["method"])
    fig = new_figure(6.4, 0.35 * len(methods) + 2.6)
    scatter, bars = fig.subplots(1, 2, width_ratios=[1.2, 1])
    for method in methods:
        rows = lesions[lesions["method"] == method]
        scatter.scatter(rows["lesion_ml"], rows["volume_ml"], s=16, color=colors.get(method, "0.3"),
                        edgecolor="black", linewidth=0.3, label=method)
    scatter.set_xlabel("lesion volume (mL)")
    scatter.set_ylabel("thalamus volume (mL)")
    scatter.ticklabel_format(useOffset=False)  # volumes in mL, never as an offset (+1.7e1) plus small steps
    scatter.legend(frameon=False, fontsize=8)
    in_values = [lesions.loc[lesions["method"] == m, "in_ml"].dropna().to_numpy(float) for m in methods]
    near_values = [lesions.loc[lesions["method"] == m, "near_ml"].dropna().to_numpy(float) for m in methods]
    positions = np.arange(len(methods))
    draw_boxes(bars, in_values, positions - 0.18, [colors.get(m, "0.3") for m in methods], 0.3, horizontal=True)
    draw_boxes(bars, near_values, positions + 0.18, ["0.55"] * len(methods), 0.3, horizontal=True)
    method_axis(bars, methods, colors)
    bars.set_xlabel("lesion volume (mL)")
    bars.set_title("inside (colour) and within 3 mm (grey)\nof the thalamus mask", fontsize=8)
    return finish(fig)


def plot_asymmetry(asymmetry: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Asymmetry index per method (one row each), zero marked."""
    methods = method_order(asymmetry["method"])
    fig = new_figure(5.0, 0.4 * len(methods) + 1.2)
    ax = fig.subplots()
    values = [asymmetry.loc[asymmetry["method"] == m, "asymmetry_pct"].to_numpy(float) for m in methods]
    ax.axvline(0, color="0.6", lw=0.8)
    draw_boxes(ax, values, range(len(methods)), [colors[m] for m in methods], 0.6, horizontal=True)
    method_axis(ax, methods, colors)
    ax.set_xlabel("asymmetry index, 100 × (L − R) / mean (%): > 0 left larger")
    return finish(fig)


def add_volume_figures(group_dir, colors: Mapping[str, str],
                       draw: Callable[[str, Callable[[], Figure]], None]) -> None:
    """Draw the filling, lesion and asymmetry figures that ``group/volumes.tsv`` allows (``draw`` saves them)."""
    volumes = read_group_table(group_dir, "volumes")
    if volumes is None or not {"participant_id", "method", "volume_ml"} <= set(volumes):
        return
    volumes = volumes.assign(session_id=volumes["session_id"] if "session_id" in volumes else "")
    pairs = filling_pairs(volumes)
    if not pairs.empty:
        draw("filling_blandaltman", lambda: plot_filling_blandaltman(pairs, colors))
    lesions = lesion_table(volumes)
    if not lesions.empty:
        draw("lesion_load", lambda: plot_lesion_load(lesions, colors))
    asymmetry = asymmetry_table(volumes)
    if not asymmetry.empty:
        draw("asymmetry", lambda: plot_asymmetry(asymmetry, colors))
