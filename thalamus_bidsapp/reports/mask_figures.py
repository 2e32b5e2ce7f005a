"""Mask figures of the participant report: each thalamus mask as a contour over the published T1w."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_if_changed
from thalamus_bidsapp.image.grid import GRID_ATOL_MM
from thalamus_bidsapp.image.masks import integer_labels
from thalamus_bidsapp.reports.figure_keys import figure_key, is_current, with_key
from thalamus_bidsapp.reports.html import esc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOGGER = logging.getLogger(__name__)

_N_SLICES = 5


_MARGIN_MM = 12.0
#: Zero columns between two slices of a mosaic row, so that no contour joins two slices.
_TILE_GAP = 2


_PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


_SIDES = {"axial": ("L", "R"), "coronal": ("L", "R"), "sagittal": ("P", "A")}


#: Left and right thalamus of a mask with sides (blue and orange tell apart for most colour vision).
_SIDE_COLORS = {"left": "#4fa3ff", "right": "#ff9f1c"}
#: Contour colour of the lesion mask: a dark purple, far from the thalamus colours, whose contrast ratio
#: (WCAG) against the grey of white matter in the mosaics stays above 3 (tests/test_reports_mosaic.py measures it).
LESION_COLOR = "#8f00d6"
#: Font sizes (pt) of the mosaic: a 6.25 in wide figure shown 560 px or more wide keeps them >= 10 px on screen.
_LABEL_PT = 9.0
_TITLE_PT = 10.0
#: White text on a dark box: legible on white matter as on the background.
_LABEL_STYLE = {"color": "white", "fontsize": _LABEL_PT,
                "bbox": {"boxstyle": "square,pad=0.1", "facecolor": "black", "alpha": 0.6, "edgecolor": "none"}}
#: Width of one slice of the mosaic (inches).
_TILE_IN = 1.25
_MASK_COLORS = ("#ff4d4d", "#4dd2ff", "#ffd24d", "#7dff4d", "#ff4dff", "#ff9f40", "#40ffb3", "#b38cff")


def _bounding_box(mask: np.ndarray, margin: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` widened by ``margin`` voxels per axis, clipped to the volume."""
    box = []
    for axis in range(3):
        profile = mask.any(axis=tuple(a for a in range(3) if a != axis))
        idx = np.flatnonzero(profile)
        lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)
        box.append(slice(max(0, lo - int(margin[axis])), min(mask.shape[axis], hi + int(margin[axis]) + 1)))
    return tuple(box)


def _slice_indices(mask: np.ndarray, axis: int, n_slices: int) -> list[int]:
    """``n_slices`` indices evenly spread over the slices that cut the mask broadly (whole axis if empty).

    Only slices holding at least half the largest cross-section are candidates,
    so no sagittal slice falls on the midline between the two thalami.
    """
    profile = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    candidates = np.flatnonzero(profile >= 0.5 * profile.max()) if profile.max() > 0 else np.arange(mask.shape[axis])
    last = len(candidates) - 1
    return sorted({int(candidates[int(round(last * k / (n_slices + 1)))]) for k in range(1, n_slices + 1)})


def slice_positions_mm(affine: np.ndarray, box: tuple[slice, slice, slice], axis: int,
                       indices: list[int]) -> list[float]:
    """World coordinate (mm, along ``axis`` of the RAS-ordered grid) of each slice, at the centre of ``box``."""
    centre = np.array([(b.start + b.stop - 1) / 2 for b in box] + [1.0])
    out = []
    for index in indices:
        point = centre.copy()
        point[axis] = index
        out.append(float((affine @ point)[axis]))
    return out


def display_range(t1_crop: np.ndarray) -> tuple[float, float]:
    """The grey scale of a mosaic: the 1st to 99.5th percentile of the non-zero T1w voxels of the crop."""
    inside = t1_crop[t1_crop > 0]
    return tuple(float(v) for v in np.percentile(inside, [1, 99.5])) if inside.size else (0.0, 1.0)


def _side_by_side(tiles: list[np.ndarray], n_cols: int) -> np.ndarray:
    """``n_cols`` equally shaped 2D tiles in one row, :data:`_TILE_GAP` zero columns between them (missing ones 0)."""
    height, width = tiles[0].shape
    row = np.zeros((height, n_cols * (width + _TILE_GAP) - _TILE_GAP), dtype=tiles[0].dtype)
    for col, tile in enumerate(tiles):
        row[:, col * (width + _TILE_GAP):col * (width + _TILE_GAP) + width] = tile
    return row


def _load_canonical(path: Path, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in RAS+ order (3D) and the affine; by default in the stored type (masks: no float copy)."""
    img = nib.as_closest_canonical(nib.load(os.fspath(path)))
    data = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    return data.reshape(img.shape[:3]), img.affine

def _label_tiles(ax, plane: str, axis: int, positions: list[float], width: int, height: int) -> None:
    """Each slice's position in mm (top left), the plane's name and the orientation letters (bottom)."""
    left, right = _SIDES[plane]
    for col, mm in enumerate(positions):
        x0 = col * width
        ax.text(x0 + 0.03 * width, height - 1, f"{'xyz'[axis]}={mm:+.0f} mm", ha="left", va="top", **_LABEL_STYLE)
        ax.text(x0 + 0.03 * width, 0, left, ha="left", va="bottom", **_LABEL_STYLE)
        ax.text(x0 + 0.97 * (width - _TILE_GAP), 0, right, ha="right", va="bottom", **_LABEL_STYLE)
    ax.text(0.5 * (width - _TILE_GAP), 0, plane, ha="center", va="bottom", **_LABEL_STYLE)


def _legend(fig, title: str, *, sides: bool, lesion: bool) -> None:
    """Title at the top left; the colour key (left, right, lesions) at the bottom right, in their colours."""
    from matplotlib.lines import Line2D

    fig.text(0.01, 0.995, title, color="white", fontsize=_TITLE_PT, ha="left", va="top")
    key = []
    if sides:
        key += [("left thalamus", _SIDE_COLORS["left"]), ("right thalamus", _SIDE_COLORS["right"])]
    if lesion:
        key.append(("lesions", LESION_COLOR))
    if key:
        handles = [Line2D([], [], color=c, lw=2.2, label=t) for t, c in key]
        fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.995, 0.0), ncols=len(handles),
                   frameon=True, facecolor="#e8e8e8", edgecolor="none", fontsize=_LABEL_PT, handlelength=1.4,
                   borderpad=0.25, columnspacing=1.0, handletextpad=0.4)


def plot_mask_mosaic(t1w: np.ndarray, mask: np.ndarray, zooms: tuple[float, float, float], out_file: Path,
                     *, key: str | None = None, **options) -> bool:
    """Draw :func:`mosaic_figure` and save it as an SVG (only if its content changed); whether it was written.

    ``key``: the content key of the figure's inputs (:mod:`.figure_keys`), written into the SVG.
    """
    import matplotlib

    fig = mosaic_figure(t1w, mask, zooms, **options)
    buffer = io.BytesIO()
    # A fixed hash salt and no date make the SVG byte-identical from one run to the next;
    # text stays text (fonttype none) rather than glyph outlines, which would double the size.
    with matplotlib.rc_context({"svg.hashsalt": "thalamus_bidsapp", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", facecolor=fig.get_facecolor(), metadata={"Date": None})
    svg = buffer.getvalue() if key is None else with_key(buffer.getvalue(), key)
    return write_if_changed(svg, Path(out_file))


def mosaic_figure(
    t1w: np.ndarray,
    mask: np.ndarray,
    zooms: tuple[float, float, float],
    *,
    box: tuple[slice, slice, slice],
    slices: Mapping[int, list[int]],
    title: str,
    positions: Mapping[int, list[float]] | None = None,
    color: str = _MASK_COLORS[0],
    sides: np.ndarray | None = None,
    lesion: np.ndarray | None = None,
) -> "Figure":
    """A thalamus mask as a contour over the T1w: rows axial, coronal, sagittal (a matplotlib Figure).

    Parameters
    ----------
    t1w, mask
        RAS-ordered volumes on the same grid.
    zooms
        Voxel sizes (mm), for the aspect ratio.
    box
        Crop window (voxel slices); the same for every mask of a session so
        the figures compare.
    slices
        Axis (0 sagittal, 1 coronal, 2 axial) -> absolute slice indices.
    title
        Figure title.
    positions
        Axis -> the slices' world coordinates in mm (:func:`slice_positions_mm`),
        written on each slice; None: the voxel indices.
    color
        Contour colour (of a mask without sides).
    sides
        The mask's side map on the same grid (1 left, 2 right): the left and
        right thalamus are drawn in two colours, named in the title line.
    lesion
        The session's lesion mask on the same grid, drawn as a contour in
        :data:`LESION_COLOR`, or None.

    """
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    t1_crop = t1w[box]
    if sides is not None:
        side_crop = np.asarray(sides)[box]
        layers = [(side_crop == 1, _SIDE_COLORS["left"]), (side_crop == 2, _SIDE_COLORS["right"])]
    else:
        layers = [(mask[box] > 0, color)]
    lesion_crop = np.asarray(lesion)[box] > 0 if lesion is not None else None
    if lesion_crop is not None:
        layers.append((lesion_crop, None))
    vmin, vmax = display_range(t1_crop)
    n_cols = max(len(v) for v in slices.values())
    title_in, key_in = 0.3, 0.3
    # Each row as tall as its slices (height over width in mm), so no row is padded with black.
    extent = [(b.stop - b.start) * z for b, z in zip(box, zooms)]
    ratios = [extent[[a for a in range(3) if a != axis][1]] / extent[[a for a in range(3) if a != axis][0]]
              for _, axis in _PLANES]
    rows_in = sum(_TILE_IN * r for r in ratios) * 1.06
    fig = Figure(figsize=(_TILE_IN * n_cols, rows_in + title_in + key_in), facecolor="black")
    FigureCanvasSVG(fig)
    # One axes per plane, its slices side by side in one image: a few axes and contour calls
    # instead of one per slice keep the report within its time (the figure looks the same).
    axes = fig.subplots(len(_PLANES), 1, squeeze=False, height_ratios=ratios)[:, 0]
    for ax, (plane, axis) in zip(axes, _PLANES):
        others = [a for a in range(3) if a != axis]
        indices = [index - box[axis].start for index in slices[axis]]
        tiles = [np.take(t1_crop, index, axis=axis).T for index in indices]
        ax.set_axis_off()
        ax.imshow(_side_by_side(tiles, n_cols), cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                  aspect=zooms[others[1]] / zooms[others[0]], interpolation="nearest")
        for layer, layer_color in layers:
            outline = _side_by_side([np.take(layer, index, axis=axis).T for index in indices], n_cols)
            if not outline.any():
                continue
            if layer_color is None:  # the lesions: a solid line, no fill (the T1w under it stays visible)
                ax.contour(outline.astype(float), levels=[0.5], colors=[LESION_COLOR], linewidths=1.3,
                           origin="lower")
                continue
            ax.contourf(outline.astype(float), levels=[0.5, 1.5], colors=[layer_color], alpha=0.22, origin="lower")
            ax.contour(outline.astype(float), levels=[0.5], colors=[layer_color], linewidths=1.1, origin="lower")
        shown = list(positions[axis]) if positions is not None else [float(i) for i in slices[axis]]
        _label_tiles(ax, plane, axis, shown, tiles[0].shape[1] + _TILE_GAP, tiles[0].shape[0])
    _legend(fig, title, sides=sides is not None, lesion=lesion_crop is not None)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=key_in / fig.get_figheight(),
                        top=1 - title_in / fig.get_figheight(), hspace=0.04)
    return fig


def draw_masks(session, figures_dir: Path) -> None:
    """One mosaic per mask, all cropped to the same window around the union of the masks."""
    if not session.masks or session.anat is None:
        return
    t1_path = session.anat / f"{session.name}_desc-preproc_T1w.nii.gz"
    if not t1_path.is_file():
        session.messages.append(("warning", f"No <code>{esc(t1_path.name)}</code>: mask figures not drawn."))
        return
    planned = _planned_figures(session, figures_dir, t1_path)
    if all(is_current(out, key) for out, _, key in planned.values()) and _lesion_on_grid(session, t1_path):
        # Nothing they are drawn from changed: loading the T1w and the masks would be the whole cost of the step.
        for info in session.masks:
            info.figure = planned[info.desc][0]
        return
    t1, affine = _load_canonical(t1_path, np.float32)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    masks, side_maps = {}, {}
    for info in session.masks:
        data, mask_affine = _load_canonical(info.path)
        if data.shape != t1.shape or not np.allclose(mask_affine, affine, atol=GRID_ATOL_MM, rtol=0):
            session.messages.append(("warning", f"{esc(info.path.name)} is not on the T1w grid: not drawn."))
            continue
        masks[info.desc] = data > 0
        side_path = _side_path(info.path)
        if side_path.is_file():
            side_data, side_affine = _load_canonical(side_path)
            if side_data.shape == t1.shape and np.allclose(side_affine, affine, atol=GRID_ATOL_MM, rtol=0):
                side_maps[info.desc] = integer_labels(side_data, np.uint8)
    if not masks:
        return
    lesion = _lesion_mask(session, t1.shape, affine)
    union = np.logical_or.reduce(list(masks.values()))
    if not union.any():
        union = t1 > 0  # every mask empty: show the middle of the head instead of nothing
    box = _bounding_box(union, np.ceil(_MARGIN_MM / np.asarray(zooms)))
    slices = {axis: _slice_indices(union, axis, _N_SLICES) for _, axis in _PLANES}
    positions = {axis: slice_positions_mm(affine, box, axis, indices) for axis, indices in slices.items()}
    for i, info in enumerate(session.masks):
        if info.desc not in masks:
            continue
        out, title, key = planned[info.desc]
        if plot_mask_mosaic(t1, masks[info.desc], zooms, out, box=box, slices=slices, title=title,
                            positions=positions, color=_MASK_COLORS[i % len(_MASK_COLORS)],
                            sides=side_maps.get(info.desc), lesion=lesion, key=key):
            LOGGER.info("wrote %s", out)
        info.figure = out


def draw_side_labels(t1_path: Path, labels_path: Path, out: Path, title: str) -> str | None:
    """One mosaic of a left/right label image (1 left, 2 right) over its T1w, as :func:`draw_masks` draws a mask.

    Used for images outside a session (the within-subject template). Redrawn
    only when its key (both files, the title, the cuts) changed. Returns None
    when the figure is in place, else why it could not be drawn.
    """
    key = figure_key([t1_path, labels_path], (title, _N_SLICES, _MARGIN_MM), code=(__name__,))
    if is_current(out, key):
        return None
    t1, affine = _load_canonical(t1_path, np.float32)
    labels, labels_affine = _load_canonical(labels_path)
    if labels.shape != t1.shape or not np.allclose(labels_affine, affine, atol=GRID_ATOL_MM, rtol=0):
        return f"{labels_path.name} is not on the grid of {t1_path.name}: not drawn"
    sides = integer_labels(labels, np.uint8)
    mask = sides > 0
    around = mask if mask.any() else t1 > 0  # no thalamus: the middle of the head, as for an empty mask
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    box = _bounding_box(around, np.ceil(_MARGIN_MM / np.asarray(zooms)))
    slices = {axis: _slice_indices(around, axis, _N_SLICES) for _, axis in _PLANES}
    positions = {axis: slice_positions_mm(affine, box, axis, indices) for axis, indices in slices.items()}
    if plot_mask_mosaic(t1, mask, zooms, out, box=box, slices=slices, title=title, positions=positions,
                        sides=sides, key=key):
        LOGGER.info("wrote %s", out)
    return None


def _side_path(mask_path: Path) -> Path:
    """The left/right labels published beside a thalamus mask (drawn in its figure when present)."""
    return mask_path.with_name(mask_path.name.replace("_label-thalamus_", "_seg-thalamus_")
                               .replace("_mask.nii.gz", "_dseg.nii.gz"))


def _planned_figures(session, figures_dir: Path, t1_path: Path) -> dict[str, tuple[Path, str, str]]:
    """Mask desc -> (figure path, title, content key) for every mask of the session.

    Every figure is cropped to the union of all the session's masks and shows
    the lesions, so each key covers all of those files, not only its own mask.
    """
    volumes = {}
    if session.volumes is not None and "method" in session.volumes:
        bilateral = session.volumes
        if "hemisphere" in bilateral:
            bilateral = bilateral[bilateral["hemisphere"] == "bilateral"]
        volumes = dict(zip(bilateral["method"].astype(str), bilateral.get("volume_ml", [])))
    files = [t1_path, session.anat / f"{session.name}_space-T1w_label-lesion_mask.nii.gz"]
    for info in session.masks:
        files += [info.path, _side_path(info.path)]
    planned = {}
    for i, info in enumerate(session.masks):
        contrast = info.sidecar.get("Contrast") or ""
        volume = volumes.get(info.desc)
        title = f"{session.label or session.name}  {info.desc}" + (f" ({contrast})" if contrast else "")
        if volume is not None and not pd.isna(volume):
            title += f"  {float(volume):.2f} mL"
        if info.sidecar.get("LesionFilled"):
            title += "  [lesion-filled T1w]"
        out = figures_dir / f"{session.name}_space-T1w_label-thalamus_desc-{info.desc}_mask.svg"
        key = figure_key(files, (info.desc, title, _MASK_COLORS[i % len(_MASK_COLORS)], _N_SLICES, _MARGIN_MM),
                         code=(__name__,))
        planned[info.desc] = (out, title, key)
    return planned


def _lesion_on_grid(session, t1_path: Path) -> bool:
    """Whether the lesion mask is absent or on the T1w's own voxel grid (headers only; no warning to give then)."""
    path = session.anat / f"{session.name}_space-T1w_label-lesion_mask.nii.gz"
    if not path.is_file():
        return True
    lesion, t1 = nib.load(str(path)), nib.load(str(t1_path))
    return lesion.shape[:3] == t1.shape[:3] and np.allclose(lesion.affine, t1.affine, atol=GRID_ATOL_MM, rtol=0)


def _lesion_mask(session, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
    """The session's published lesion mask on the T1w grid (``space-T1w_label-lesion_mask``), or None."""
    path = session.anat / f"{session.name}_space-T1w_label-lesion_mask.nii.gz"
    if not path.is_file():
        return None
    data, lesion_affine = _load_canonical(path)
    if data.shape != shape or not np.allclose(lesion_affine, affine, atol=GRID_ATOL_MM, rtol=0):
        session.messages.append(("warning", f"{esc(path.name)} is not on the T1w grid: lesions not drawn."))
        return None
    return data > 0
