"""What every group figure module shares: reading the group tables, laying out, boxes, saving.

The figure modules (``figures_group*``, ``figures_harmonization``,
``figures_agreement``, ``figures_clinical``) import from here and this module
imports none of them, so the figure code has no import cycle.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, atomic_path, read_tsv
from thalamus_bidsapp.reports.palette import PNG_DPI, PRINT_WIDTH_IN, STYLE

LOGGER = logging.getLogger(__name__)

#: Outcome labels of the clinical figures (roles of the clinical config).
OUTCOME_LABELS = {"edss": "EDSS", "t25fw": "T25FW", "nhpt": "9HPT", "sdmt": "SDMT",
                  "disease_duration": "Disease duration"}
COURSE_ORDER = ("progression", "stable", "improvement")
#: Fewer values are drawn as points, not as a box.
MIN_BOX = 5
_MAX_POINTS = 400  # raw points drawn over a box; more only hide it
_PANEL_IN = 2.3
_BOXPLOT_ORIENTATION = tuple(int(v) for v in mpl.__version__.split(".")[:2]) >= (3, 10)


@dataclass
class FigureSet:
    """The figures drawn (stem -> files, SVG first) and, for those not drawn, why."""

    files: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ reading
def read_group_table(group_dir: Path, stem: str) -> pd.DataFrame | None:
    """``group/<stem>.tsv`` or None when it is absent or unreadable (logged)."""
    path = Path(group_dir) / f"{stem}.tsv"
    if not path.is_file():
        return None
    try:
        return read_tsv(path)
    except TSV_READ_ERRORS as err:
        LOGGER.warning("cannot read %s: %s", path, err)
        return None


def bilateral_volumes(volumes: pd.DataFrame) -> pd.DataFrame:
    """Rows of whole-thalamus volumes (left and right merged) with a numeric ``volume_ml``."""
    table = volumes
    if "hemisphere" in table:
        table = table[table["hemisphere"].astype(str).isin(["bilateral", "both", "n/a", "nan"])]
    table = table.assign(volume_ml=pd.to_numeric(table["volume_ml"], errors="coerce"))
    return table.dropna(subset=["volume_ml"])


def method_labels(table: pd.DataFrame) -> pd.Series:
    """Row label of a method: its name, with the contrast where one method has several contrasts."""
    method = table["method"].astype(str)
    if "contrast" not in table:
        return method
    contrast = table["contrast"].astype(str)
    several = table.groupby(method)["contrast"].transform("nunique") > 1
    return method.where(~several, method + " (" + contrast + ")")


# ------------------------------------------------------------------ saving
def save_figure(fig: Figure, stem: Path) -> tuple[Path, Path]:
    """Write ``<stem>.svg`` and ``<stem>.png`` (300 dpi); a file is replaced only when its bytes change."""
    stem = Path(stem)
    paths = []
    with mpl.rc_context(STYLE):
        for fmt in ("svg", "png"):
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            # The first save ran the layout; freezing it makes the second format identical.
            fig.set_layout_engine("none")
            path = stem.with_name(f"{stem.name}.{fmt}")
            data = buffer.getvalue()
            if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
            paths.append(path)
    return paths[0], paths[1]


# ------------------------------------------------------------------ layout
def new_figure(width: float, height: float) -> Figure:
    """A figure of about ``width`` x ``height`` inches, never wider than 2.8 times its height (no strips)."""
    width = min(width, PRINT_WIDTH_IN * 1.6)
    return Figure(figsize=(width, max(height, width / 2.8)), layout="constrained")


def panel_grid(n: int, *, ncols_max: int = 3, panel: float = _PANEL_IN, height: float | None = None,
               sharex: bool = False, sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A grid of ``n`` panels that wraps after ``ncols_max`` columns (never a strip)."""
    ncols = max(1, min(ncols_max, n))
    nrows = max(1, math.ceil(n / ncols))
    width = min(PRINT_WIDTH_IN, panel * ncols + 0.6)
    fig = new_figure(width, (height or panel) * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def finish(fig: Figure) -> Figure:
    """Fix the tick label size on every axes (tick labels are made lazily, after the style is gone)."""
    for ax in fig.axes:
        ax.tick_params(labelsize=STYLE["xtick.labelsize"])
    return fig


# ------------------------------------------------------------------ marks
def draw_boxes(ax: Axes, values: Sequence[np.ndarray], positions: Sequence[float], colors: Sequence[str],
               width: float, *, points: bool = True, horizontal: bool = False, seed: int = 0) -> None:
    """Tukey boxplots (whiskers 1.5 IQR) in the methods' colours, with the raw points when few.

    ``horizontal`` puts the values on x and the boxes along y (method names
    then read as y tick labels: no rotated labels to collide).
    """
    keep = [i for i, v in enumerate(values) if len(v) >= MIN_BOX]
    rng = np.random.default_rng(seed)
    for i, v in enumerate(values):
        if 0 < len(v) < MIN_BOX:  # too few for quartiles: the values themselves
            jitter = positions[i] + rng.uniform(-width * 0.2, width * 0.2, len(v))
            x, y = (v, jitter) if horizontal else (jitter, v)
            ax.scatter(x, y, s=16, color=colors[i], edgecolor="black", linewidth=0.5, zorder=3)
    if not keep:
        return
    orientation = ({"orientation": "horizontal" if horizontal else "vertical"} if _BOXPLOT_ORIENTATION
                   else {"vert": not horizontal})
    parts = ax.boxplot([values[i] for i in keep], positions=[positions[i] for i in keep], widths=width,
                       patch_artist=True, whis=1.5, manage_ticks=False, showfliers=not points,
                       medianprops={"color": "black", "linewidth": 1.2},
                       flierprops={"markersize": 3, "markeredgecolor": "0.3"}, **orientation)
    for patch, i in zip(parts["boxes"], keep):
        patch.set_facecolor(mpl.colors.to_rgba(colors[i], 0.35))
        patch.set_edgecolor(colors[i])
    for i in keep:
        v = values[i]
        if points and len(v) <= _MAX_POINTS:
            jitter = positions[i] + rng.uniform(-width * 0.3, width * 0.3, len(v))
            x, y = (v, jitter) if horizontal else (jitter, v)
            ax.scatter(x, y, s=7, color=colors[i], alpha=0.75, edgecolor="none", zorder=3)


def method_axis(ax: Axes, methods: Sequence[str], colors: Mapping[str, str]) -> None:
    """Methods top to bottom along y, names in their colours."""
    ax.set_yticks(range(len(methods)), methods)
    ax.set_ylim(len(methods) - 0.4, -0.6)
    for label in ax.get_yticklabels():
        label.set_color(colors.get(label.get_text(), "black"))
