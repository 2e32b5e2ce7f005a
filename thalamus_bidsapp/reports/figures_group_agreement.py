"""The agreement figures (manual-mask scatter, Bland-Altman, containment), from the agreement tables.

:func:`~thalamus_bidsapp.reports.figures_group.build_group_figures` draws them
for the group report; :func:`plot_bland_altman` is also the Bland-Altman plot of
the agreement step's own figures (:mod:`thalamus_bidsapp.reports.figures_agreement`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.reports.figures_common import finish, new_figure, panel_grid
from thalamus_bidsapp.reports.palette import PRINT_WIDTH_IN, REFERENCE_COLOR, STYLE, method_order

LOGGER = logging.getLogger(__name__)


def _volume_pairs(voxelwise: pd.DataFrame, method: str) -> tuple[np.ndarray, np.ndarray]:
    d = voxelwise.loc[voxelwise["method"] == method, ["volume_manual_ml", "volume_method_ml"]]
    d = d.apply(pd.to_numeric, errors="coerce").dropna()
    return d["volume_manual_ml"].to_numpy(float), d["volume_method_ml"].to_numpy(float)


def _stat(row: pd.Series | None, key: str) -> float:
    if row is None or key not in row:
        return float("nan")
    value = pd.to_numeric(pd.Series([row[key]]), errors="coerce").iloc[0]
    return float(value)


def _volumetric_rows(volumetric: pd.DataFrame | None) -> dict[str, pd.Series]:
    if volumetric is None or volumetric.empty:
        return {}
    return {str(row["method"]): row for _, row in volumetric.iterrows()}


def plot_manual_scatter(voxelwise: pd.DataFrame, volumetric: pd.DataFrame | None,
                        colors: Mapping[str, str]) -> Figure:
    """Method against manual volume per method: identity line, OLS fit, CCC with 95% CI, slope, n."""
    methods = method_order(voxelwise["method"])
    rows = _volumetric_rows(volumetric)
    fig, axes = panel_grid(len(methods))
    pairs = {m: _volume_pairs(voxelwise, m) for m in methods}
    every = np.concatenate([np.concatenate(p) for p in pairs.values()] or [np.array([0.0, 1.0])])
    lo, hi = float(np.nanmin(every)), float(np.nanmax(every))
    pad = 0.06 * (hi - lo) if hi > lo else 0.5
    lims = (lo - pad, hi + pad)
    for ax, method in zip(axes, methods):
        x, y = pairs[method]
        row = rows.get(method)
        ax.plot(lims, lims, ls="--", color="0.5", lw=0.9)
        ax.scatter(x, y, s=12, color=colors[method], alpha=0.8, edgecolor="none")
        slope, intercept = _stat(row, "slope"), _stat(row, "intercept_ml")
        if np.isfinite(slope) and np.isfinite(intercept):
            xs = np.array(lims)
            ax.plot(xs, intercept + slope * xs, color=colors[method], lw=1.3)
        ccc = _stat(row, "ccc")
        text = (f"CCC {ccc:.2f} [{_stat(row, 'ccc_ci_low'):.2f}, {_stat(row, 'ccc_ci_high'):.2f}]"
                if np.isfinite(ccc) else "CCC n/a")
        text += f"\nslope {slope:.2f}" if np.isfinite(slope) else ""
        text += f"\nn = {x.size}"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1.5})
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        ax.set_aspect("equal", adjustable="box")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_title(method, color=colors[method])
    fig.supxlabel("manual volume (mL)", fontsize=STYLE["axes.labelsize"])
    fig.supylabel("method volume (mL)", fontsize=STYLE["axes.labelsize"])
    return finish(fig)


def plot_bland_altman(voxelwise: pd.DataFrame, volumetric: pd.DataFrame | None,
                      colors: Mapping[str, str]) -> Figure:
    """Bland-Altman per method: difference (method - manual) against the mean, bias, 95% LoA, proportional bias."""
    methods = method_order(voxelwise["method"])
    rows = _volumetric_rows(volumetric)
    fig, axes = panel_grid(len(methods), sharey=True)
    spans = []
    for method in methods:
        x, y = _volume_pairs(voxelwise, method)
        row = rows.get(method)
        spans += [*(y - x), _stat(row, "loa_low_ml"), _stat(row, "loa_high_ml"), 0.0]
    spans = np.array([v for v in spans if np.isfinite(v)] or [0.0])
    pad = 0.35 * (spans.max() - spans.min()) if spans.max() > spans.min() else 0.5
    for ax, method in zip(axes, methods):
        x, y = _volume_pairs(voxelwise, method)
        row = rows.get(method)
        mean, diff = (x + y) / 2, y - x
        ax.axhline(0, color="0.75", lw=0.8)
        ax.scatter(mean, diff, s=12, color=colors[method], alpha=0.8, edgecolor="none")
        bias, low, high = _stat(row, "bias_ml"), _stat(row, "loa_low_ml"), _stat(row, "loa_high_ml")
        lines = []
        if np.isfinite(bias):
            ax.axhline(bias, color=REFERENCE_COLOR, lw=1.1)
            lines.append(f"bias {bias:+.2f} mL")
        if np.isfinite(low) and np.isfinite(high):
            for v in (low, high):
                ax.axhline(v, color=REFERENCE_COLOR, lw=0.9, ls="--")
            lines.append(f"LoA {low:+.2f} to {high:+.2f}")
        prop, prop_icpt = _stat(row, "prop_slope"), _stat(row, "prop_intercept_ml")
        if np.isfinite(prop) and np.isfinite(prop_icpt) and mean.size:
            xs = np.array([mean.min(), mean.max()])
            ax.plot(xs, prop_icpt + prop * xs, color=REFERENCE_COLOR, lw=1.1, ls=":")
            p = _stat(row, "prop_slope_p")
            p = p if np.isfinite(p) else _stat(row, "prop_pval")  # older group tables name it prop_pval
            lines.append(f"prop. slope {prop:+.2f}" + (f" (p {_p_text(p)})" if np.isfinite(p) else ""))
        if lines:
            ax.text(0.04, 0.96, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1.5})
        ax.set_ylim(spans.min() - pad * 0.4, spans.max() + pad * 1.6)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_title(method, color=colors[method])
    handles = [Line2D([], [], color=REFERENCE_COLOR, lw=1.1, label="mean bias"),
               Line2D([], [], color=REFERENCE_COLOR, lw=0.9, ls="--", label="95% limits of agreement"),
               Line2D([], [], color=REFERENCE_COLOR, lw=1.1, ls=":", label="proportional bias")]
    # One legend column per panel at most: a single panel is too narrow for three entries side by side.
    fig.legend(handles=handles, loc="outside upper center", ncols=min(3, len(methods)), frameon=False)
    fig.supxlabel("mean of method and manual volume (mL)", fontsize=STYLE["axes.labelsize"])
    fig.supylabel("method minus manual (mL)", fontsize=STYLE["axes.labelsize"])
    return finish(fig)


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.01 else f"= {p:.2f}"


# ------------------------------------------------------------------ agreement between methods
def plot_containment(containment: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Heatmap of the mean directed containment |A and B| / |A| (rows A, columns B), colour-blind-safe viridis."""
    methods = method_order(pd.concat([containment["method_a"], containment["method_b"]]))
    mat = (containment.assign(value=pd.to_numeric(containment["containment_mean"], errors="coerce"))
           .pivot_table(index="method_a", columns="method_b", values="value", aggfunc="mean")
           .reindex(index=methods, columns=methods))
    k = len(methods)
    side = min(PRINT_WIDTH_IN, 1.8 + 0.45 * k)
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(mat.to_numpy(float), vmin=0, vmax=1, cmap="viridis")
    if k <= 10:
        for i in range(k):
            for j in range(k):
                v = mat.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if v > 0.6 else "white")
    ax.set_xticks(range(k), methods, rotation=90)
    ax.set_yticks(range(k), methods)
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        label.set_color(colors.get(label.get_text(), "black"))
    ax.set_xlabel("B (containing mask)")
    ax.set_ylabel("A (contained mask)")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="mean |A∩B| / |A|")
    return finish(fig)
