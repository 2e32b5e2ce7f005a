"""The group figure of the change between sessions (``group/longitudinal_change.tsv``).

Left: each subject's whole-thalamus volume across its sessions, one line per
subject and method; right: the annualized change of each pair of
consecutive sessions, one box per method. Read by way of
:mod:`thalamus_bidsapp.reports.group_change`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.reports.figures_common import draw_boxes, finish, method_axis, new_figure, read_group_table
from thalamus_bidsapp.reports.group_change import FIGURE, STEM, bilateral_changes, session_volumes, shown_mode
from thalamus_bidsapp.reports.palette import method_order


def plot_session_change(changes: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Per-subject lines across sessions per method, and the annualized change by method."""
    shown = shown_mode(changes)
    methods = method_order(shown["method"])
    volumes = session_volumes(changes)
    fig = new_figure(6.4, max(2.8, 0.35 * len(methods) + 2.0))
    lines, boxes = fig.subplots(1, 2, width_ratios=[1.2, 1])
    # Years on x only when every subject has them; one undated subject puts all of them in session order.
    dated = bool(volumes["dated"].all()) if not volumes.empty else False
    for (_, method), rows in volumes.groupby(["participant_id", "method"], sort=False):
        lines.plot(rows["years" if dated else "order"], rows["volume_ml"], color=colors.get(method, "0.3"), lw=0.9,
                   alpha=0.8, marker="o", markersize=3)
    lines.set_xlabel("years since the first session" if dated
                     else "session (in order; not every subject has acquisition dates)")
    if not dated:
        lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set_ylabel("thalamus volume (mL)")
    lines.legend(handles=[Line2D([], [], color=colors.get(m, "0.3"), marker="o", markersize=3, label=m)
                          for m in methods], frameon=False, fontsize=8)
    lines.ticklabel_format(axis="y", useOffset=False)
    annual = shown["annualized_change_pct"] if "annualized_change_pct" in shown else pd.Series(np.nan, shown.index)
    per_year = bool(annual.notna().any())
    value = annual if per_year else shown["change_pct"]
    values = [value[shown["method"] == m].dropna().to_numpy(float) for m in methods]
    boxes.axvline(0, color="0.6", lw=0.8)
    draw_boxes(boxes, values, range(len(methods)), [colors.get(m, "0.3") for m in methods], 0.6, horizontal=True)
    method_axis(boxes, methods, colors)
    boxes.set_xlabel("annualized change (%/year)" if per_year else "change between sessions (%)")
    return finish(fig)


def add_change_figure(group_dir, colors: Mapping[str, str], draw: Callable[[str, Callable[[], Figure]], None]) -> None:
    """Draw the change figure when ``group/longitudinal_change.tsv`` has whole-thalamus rows."""
    changes = bilateral_changes(read_group_table(group_dir, STEM))
    if not changes.empty:
        draw(FIGURE, lambda: plot_session_change(changes, colors))
