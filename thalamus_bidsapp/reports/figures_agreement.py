"""Figures of the group agreement step: boxplots, containment heatmap, scatter, Bland-Altman.

The Bland-Altman plot is the group report's
(:func:`thalamus_bidsapp.reports.figures_group_agreement.plot_bland_altman`),
so that both show the same bias, limits and proportional bias the same way.

Figures are built on :class:`matplotlib.figure.Figure` objects directly (no
pyplot state, no GUI backend: rendering goes through Agg for PNG and the SVG
backend for SVG), so they can be drawn from worker threads and headless
containers. Each figure is written as PNG and SVG, atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from thalamus_bidsapp.bidsio.atomic import atomic_path
from thalamus_bidsapp.reports.figures_group_agreement import plot_bland_altman
from thalamus_bidsapp.reports.palette import STYLE, method_colors

logger = logging.getLogger(__name__)

__all__ = [
    "plot_containment_heatmap",
    "plot_overlap_boxplots",
    "plot_volume_scatter",
    "save_figure",
    "write_agreement_figures",
]

_METRICS = ("dice", "precision", "sensitivity")
_LABELS = {"dice": "Dice", "precision": "Precision", "sensitivity": "Sensitivity"}
_MAX_STRIP_POINTS = 500


def save_figure(fig: Figure, stem: Path, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.svg`` atomically; return the paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "svg"):
        path = stem.with_name(stem.name + "." + fmt)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        paths.append(path)
        # The first draw ran the constrained layout; freezing its result makes
        # the second format identical and saves the (costly) layout pass.
        fig.set_layout_engine("none")
    return paths


def _grid(n: int, ncols_max: int = 4, size: float = 3.6) -> tuple[Figure, list]:
    ncols = max(1, min(ncols_max, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_overlap_boxplots(voxelwise: pd.DataFrame) -> Figure:
    """Tukey boxplots (whiskers at 1.5 IQR) of Dice, precision and sensitivity per method.

    Parameters
    ----------
    voxelwise : pandas.DataFrame
        Columns ``method``, ``dice``, ``precision``, ``sensitivity`` (one row
        per session and method).
    """
    import seaborn as sns

    order = sorted(voxelwise["method"].unique())
    fig = Figure(figsize=(max(6.0, 1.1 * len(order) * 3), 4.0), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for ax, metric in zip(axes, _METRICS):
        data = voxelwise[["method", metric]].dropna()
        if not data.empty:
            sns.boxplot(data=data, x="method", y=metric, order=order, whis=1.5, ax=ax, color="#9ecae1", fliersize=3)
            if len(data) <= _MAX_STRIP_POINTS:
                # Raw points help with few sessions; with many they only hide the boxes.
                sns.stripplot(data=data, x="method", y=metric, order=order, ax=ax, color="k", size=2.5, alpha=0.5)
        ax.set_title(_LABELS[metric])
        ax.set_xlabel("")
        ax.set_ylabel("overlap with the manual mask" if metric == "dice" else "")
        ax.set_ylim(0, 1.02)
        ax.tick_params(axis="x", labelrotation=45)
    return fig


def plot_containment_heatmap(containment: pd.DataFrame) -> Figure:
    """Heatmap of the mean directed containment |A and B| / |A| (rows A, columns B).

    Parameters
    ----------
    containment : pandas.DataFrame
        Columns ``method_a``, ``method_b``, ``containment_mean``.
    """
    import seaborn as sns

    mat = containment.pivot(index="method_a", columns="method_b", values="containment_mean")
    n = max(len(mat), 1)
    fig = Figure(figsize=(1.0 + 0.8 * n + 1.5, 1.0 + 0.7 * n), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        mat.astype(float), ax=ax, vmin=0, vmax=1, cmap="viridis", annot=n <= 12, fmt=".2f", square=True,
        cbar_kws={"label": "mean containment |A∩B| / |A|"},
    )
    ax.set_xlabel("B (containing mask)")
    ax.set_ylabel("A (contained mask)")
    ax.set_title("Directed containment")
    return fig


def _annotation(row: pd.Series | None, keys: tuple[str, str, str], label: str) -> str:
    if row is None or not np.isfinite(row.get(keys[0], np.nan)):
        return f"{label} = n/a"
    return f"{label} = {row[keys[0]]:.2f} [{row[keys[1]]:.2f}, {row[keys[2]]:.2f}]"


def _method_panels(
    voxelwise: pd.DataFrame, volumetric: pd.DataFrame
) -> tuple[Figure, list[tuple[Axes, str, np.ndarray, np.ndarray, pd.Series | None]]]:
    """A grid with one panel per method (sorted) and, per panel, what is drawn in it.

    Returns
    -------
    fig, panels
        The figure and, per method, ``(axes, method, manual volumes, method
        volumes, volumetric row)``: the volumes of the sessions with both
        (mL), the method's row of ``volumetric`` (None when it has none).
    """
    methods = sorted(voxelwise["method"].unique())
    fig, axes = _grid(len(methods))
    stats = volumetric.set_index("method") if not volumetric.empty else pd.DataFrame()
    panels = []
    for ax, method in zip(axes, methods):
        d = voxelwise.loc[voxelwise["method"] == method, ["volume_manual_ml", "volume_method_ml"]].dropna()
        row = stats.loc[method] if method in stats.index else None
        panels.append((ax, method, d["volume_manual_ml"].to_numpy(), d["volume_method_ml"].to_numpy(), row))
    return fig, panels


def plot_volume_scatter(voxelwise: pd.DataFrame, volumetric: pd.DataFrame) -> Figure:
    """Method vs manual volume per method, with the identity line, OLS fit, CCC and slope.

    Parameters
    ----------
    voxelwise : pandas.DataFrame
        Columns ``method``, ``volume_manual_ml``, ``volume_method_ml``.
    volumetric : pandas.DataFrame
        One row per method with ``ccc``, ``ccc_ci_low``, ``ccc_ci_high``,
        ``slope``, ``slope_ci_low``, ``slope_ci_high``, ``intercept_ml``.
    """
    fig, panels = _method_panels(voxelwise, volumetric)
    for ax, method, x, y, row in panels:
        ax.scatter(x, y, s=12, alpha=0.7, color="#3182bd", edgecolor="none")
        if x.size:
            lo = float(min(x.min(), y.min()))
            hi = float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo) if hi > lo else 0.5
            lims = (lo - pad, hi + pad)
            ax.plot(lims, lims, ls="--", color="0.5", lw=1, label="identity")
            if row is not None and np.isfinite(row["slope"]):
                xs = np.array(lims)
                ax.plot(xs, row["intercept_ml"] + row["slope"] * xs, color="#e6550d", lw=1.2, label="OLS")
            ax.set_xlim(lims)
            ax.set_ylim(lims)
            ax.text(
                0.03, 0.97,
                _annotation(row, ("ccc", "ccc_ci_low", "ccc_ci_high"), "CCC") + "\n"
                + _annotation(row, ("slope", "slope_ci_low", "slope_ci_high"), "slope")
                + f"\nn = {x.size}",
                transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0},
            )
        ax.set_title(method)
        ax.set_xlabel("manual volume (mL)")
        ax.set_ylabel("method volume (mL)")
    return fig


def write_agreement_figures(
    voxelwise: pd.DataFrame,
    containment: pd.DataFrame,
    volumetric: pd.DataFrame,
    fig_dir: Path,
) -> list[Path]:
    """Draw and save all agreement figures into ``fig_dir`` (PNG and SVG).

    Figures that need manual masks are skipped (with a log line) when
    ``voxelwise`` is empty; the containment heatmap only needs method masks.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    fig_dir = Path(fig_dir)
    written: list[Path] = []
    if not containment.empty and containment["containment_mean"].notna().any():
        written += save_figure(plot_containment_heatmap(containment), fig_dir / "containment_heatmap")
    else:
        logger.info("no containment values: heatmap skipped")
    if voxelwise.empty:
        logger.info("no session with a manual mask: boxplots, scatter and Bland-Altman figures skipped")
        return written
    written += save_figure(plot_overlap_boxplots(voxelwise), fig_dir / "agreement_boxplots")
    written += save_figure(plot_volume_scatter(voxelwise, volumetric), fig_dir / "agreement_scatter")
    with mpl.rc_context(STYLE):
        colors = method_colors(voxelwise["method"])
        written += save_figure(plot_bland_altman(voxelwise, volumetric, colors), fig_dir / "agreement_blandaltman")
    logger.info("agreement figures written to %s", fig_dir)
    return written
