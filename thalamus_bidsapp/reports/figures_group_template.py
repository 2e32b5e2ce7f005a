"""Group figure: the methods' thalamus probability maps and their disagreement in template space.

Drawn from published files only: ``group/template_maps.tsv`` and the maps
and template brain it lists (written by :mod:`thalamus_bidsapp.group.template_maps`).
One column per method plus one for the disagreement map; rows: an axial and
a coronal slice through the centre of the thalami, cropped to 70 mm around it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from thalamus_bidsapp.reports.figures_common import read_group_table
from thalamus_bidsapp.reports.palette import PRINT_WIDTH_IN

LOGGER = logging.getLogger(__name__)

_HALF_WIDTH_MM = 35.0
_SHOWN_FROM = 0.02  # probabilities below are left transparent over the template
_ALPHA = 0.6


def _background(group_dir: Path, template: str) -> nib.Nifti1Image:
    return nib.load(str(group_dir / f"space-{template}_desc-brain_T1w.nii.gz"))


def _centre(maps: list[np.ndarray]) -> np.ndarray:
    """Voxel centre of the summed probability (the thalami), rounded."""
    total = np.sum(maps, axis=0)
    if total.sum() <= 0:
        return (np.array(total.shape) // 2).astype(int)
    return np.round(np.argwhere(total > 0).T @ total[total > 0] / total[total > 0].sum()).astype(int)


def _slices(data: np.ndarray, centre: np.ndarray, half: np.ndarray) -> list[np.ndarray]:
    """Axial and coronal slices through ``centre``, cropped to ``half`` voxels around it, for imshow."""
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, data.shape)
    axial = data[lo[0]:hi[0], lo[1]:hi[1], centre[2]]
    coronal = data[lo[0]:hi[0], centre[1], lo[2]:hi[2]]
    return [np.rot90(axial), np.rot90(coronal)]


def plot_template_maps(group_dir: Path, table: pd.DataFrame) -> Figure:
    """The figure; raises ValueError when the table lists no usable map."""
    rows = table[table["map"].astype(str).isin(["probability", "disagreement"])]
    if rows.empty:
        raise ValueError("template_maps.tsv lists no map")
    template = str(rows["template"].iloc[0])
    background = _background(group_dir, template)
    maps = [np.asarray(nib.load(str(group_dir / str(f))).dataobj, dtype=np.float32) for f in rows["file"]]
    zooms = np.abs(np.diag(background.affine)[:3])
    half = np.round(_HALF_WIDTH_MM / zooms).astype(int)
    centre = _centre([m for m, kind in zip(maps, rows["map"]) if kind == "probability"] or maps)
    # Voxel axes are flipped to RAS-like display when the template stores x right-to-left (MNI152NLin6Asym).
    flip_x = background.affine[0, 0] < 0
    brain = np.asarray(background.dataobj, dtype=np.float32)
    ncols = len(maps)
    fig = Figure(figsize=(min(PRINT_WIDTH_IN * 1.6, 1.7 * ncols + 1.0), 3.9), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    brain_views = _slices(brain[::-1] if flip_x else brain, centre if not flip_x else
                          np.array([brain.shape[0] - 1 - centre[0], centre[1], centre[2]]), half)
    images = {}
    for col, (data, kind, method, n) in enumerate(zip(maps, rows["map"], rows["method"], rows["n_sessions"])):
        views = _slices(data[::-1] if flip_x else data, centre if not flip_x else
                        np.array([data.shape[0] - 1 - centre[0], centre[1], centre[2]]), half)
        vmax, cmap = (0.5, "magma") if kind == "disagreement" else (1.0, "viridis")
        for row, (view, under) in enumerate(zip(views, brain_views)):
            ax = axes[row][col]
            ax.imshow(under, cmap="gray", interpolation="nearest")
            shown = np.ma.masked_less(view, _SHOWN_FROM)
            # Translucent, with the 0.5 line drawn: the anatomy under the map stays visible.
            images[kind] = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest", alpha=_ALPHA)
            if kind == "probability" and (view >= 0.5).any():
                ax.contour(view, levels=[0.5], colors=["white"], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
        title = "disagreement" if kind == "disagreement" else str(method)
        axes[0][col].set_title(f"{title}\n(n = {int(n)})", fontsize=8)
    axes[0][0].set_ylabel("axial", fontsize=8)
    axes[1][0].set_ylabel("coronal", fontsize=8)
    kinds = list(rows["map"])
    for kind, label in (("probability", "fraction of sessions"), ("disagreement", "methods off the majority")):
        if kind in images:
            columns = [col for col, k in enumerate(kinds) if k == kind]
            fig.colorbar(images[kind], ax=[axes[1][col] for col in columns], location="bottom", shrink=0.8,
                         aspect=12 * len(columns), label=label)
    fig.suptitle(template, fontsize=8)
    return fig


def template_caption(group_dir: Path) -> str:
    """The figure's caption, saying only what the figure shows (a disagreement column only when drawn)."""
    table = read_group_table(group_dir, "template_maps")
    kinds = set(table["map"].astype(str)) if table is not None and "map" in table else set()
    text = ("Top: axial, bottom: coronal slices through the thalami on the template brain; the subject's left is "
            "on the image left. Per method (column): the fraction of its sessions whose mask, resampled into the "
            "template, contains the voxel, drawn translucent over the template with the 0.5 line in white; n: the "
            "sessions of that method.")
    if "disagreement" in kinds:
        text += (" Last column: per session, the fraction of methods disagreeing with the voxel's majority (0 all "
                 "agree, 0.5 an even split), averaged over sessions.")
    text += " Maps: group/space-*_probseg.nii.gz" + (" and group/space-*_desc-disagreement_map.nii.gz."
                                                     if "disagreement" in kinds else ".")
    return text
