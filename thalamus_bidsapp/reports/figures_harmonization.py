"""The harmonisation section of the group report: the before/after figure and its key numbers.

Drawn from the published tables only (``group/volumes.tsv`` with
``volume_ml_harmonized``, ``group/harmonization.tsv``), like every group
figure, so ``--reports-only`` redraws it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from thalamus_bidsapp.reports.figures_common import FigureSet, read_group_table, save_figure
from thalamus_bidsapp.reports.palette import PRINT_WIDTH_IN, STYLE, method_colors

LOGGER = logging.getLogger(__name__)

STEM = "harmonization_before_after"
TITLES = {STEM: "Volumes per batch before and after harmonisation"}
CAPTIONS = {STEM: "Per method and side: the mean ± SD per batch of the volume's residual after the protected "
                  "covariates (--harmonize-protect and ICV, fitted on every batch together), before (grey) and "
                  "after (colour) ComBat: harmonisation moves the batch means to 0 and evens their spread. Panel "
                  "titles: p of the batch effect (ANOVA F test) before → after. Table: group/harmonization.tsv."}
SKIPPED = "Not run: the group level was run without --harmonize (the volumes are used as measured)."


def add_figures(figures: FigureSet, group_dir: Path) -> None:
    """Draw the before/after figure into ``group_dir/figures`` and add it (or why not) to ``figures``."""
    path = Path(group_dir) / "figures" / STEM
    diagnostics = read_group_table(group_dir, "harmonization")
    if diagnostics is None or diagnostics.empty:
        for suffix in (".svg", ".png"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    try:
        with mpl.rc_context(STYLE):
            fig = plot_before_after(diagnostics)
        figures.files[STEM] = save_figure(fig, path)
    except (KeyError, ValueError, TypeError) as err:
        figures.notes[STEM] = f"The figure could not be drawn from its table ({type(err).__name__}: {err})."
        LOGGER.warning("harmonisation figure not drawn: %s", err)


def plot_before_after(diagnostics: pd.DataFrame) -> Figure:
    """One panel per method and side: per batch, the residual mean +- SD before and after harmonisation."""
    table = diagnostics[diagnostics["method"].astype(str) != "icv"].copy()
    table["panel"] = table["method"].astype(str) + " " + table["hemisphere"].astype(str)
    panels = list(dict.fromkeys(table.sort_values(["method", "hemisphere"])["panel"]))
    colors = method_colors(table["method"].astype(str))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(min(PRINT_WIDTH_IN, 2.2 * ncols + 0.6), 2.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    batches = sorted(table["batch"].astype(str).unique())
    for ax, panel in zip(axes, panels):
        rows = table[table["panel"] == panel].set_index(table.loc[table["panel"] == panel, "batch"].astype(str))
        method = str(rows["method"].iloc[0])
        for k, batch in enumerate(batches):
            if batch not in rows.index:
                continue
            row = rows.loc[batch]
            for offset, when, color in ((-0.15, "before", "0.55"), (0.15, "after", colors[method])):
                mean, sd = float(row[f"resid_mean_{when}"]), math.sqrt(max(float(row[f"resid_variance_{when}"]), 0))
                ax.errorbar(k + offset, mean, yerr=sd, fmt="o", color=color, markersize=4, capsize=2, linewidth=1)
        ax.axhline(0, color="0.7", linewidth=0.6, zorder=0)
        ax.set_xticks(range(len(batches)), [_short(b) for b in batches], rotation=30, ha="right")
        p_before, p_after = (float(rows[f"p_anova_{w}"].iloc[0]) for w in ("before", "after"))
        ax.set_title(f"{panel}\np {_p(p_before)} → {_p(p_after)}", fontsize=STYLE.get("axes.titlesize", 8))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("residual volume (mL), mean ± SD")
    for ax in fig.axes:
        ax.tick_params(labelsize=STYLE["xtick.labelsize"])
    return fig


def _short(label: str, width: int = 14) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def lead(diagnostics: pd.DataFrame | None) -> list[str]:
    """One sentence: the variant, the batches and the batch-effect p-values before and after."""
    if diagnostics is None or diagnostics.empty:
        return []
    volumes = diagnostics[diagnostics["method"].astype(str) != "icv"]
    if volumes.empty:
        return []
    per_feature = volumes.drop_duplicates(["method", "contrast", "hemisphere"])
    before = pd.to_numeric(per_feature["p_anova_before"], errors="coerce")
    after = pd.to_numeric(per_feature["p_anova_after"], errors="coerce")
    n_batches = volumes["batch"].nunique()
    return [f"{volumes['harmonization'].iloc[0]} by {volumes['batch_column'].iloc[0]} over {n_batches} batches "
            f"and {len(per_feature)} volumes: the batch effect (ANOVA, after the protected covariates) has "
            f"p {_p(float(before.min()))} to {_p(float(before.max()))} before and {_p(float(after.min()))} to "
            f"{_p(float(after.max()))} after harmonisation; the models use the harmonised volumes only with "
            "'volume_source: harmonized' in the clinical config."]


__all__ = ["CAPTIONS", "SKIPPED", "STEM", "TITLES", "add_figures", "lead", "plot_before_after"]
