"""Registration QC overlays: the registered image with the T1w's edges drawn over it.

One figure per registration (SPEC participant step 4; paper section 2.5.2):
three rows (axial, coronal, sagittal) of three evenly spaced slices, at 1/4,
1/2 and 3/4 of the extent of the T1w brain mask along that axis. The
registered image is shown in grey (1st..99th percentile window inside the
brain), the T1w edges in yellow. Edges are Canny edges of each T1w slice
(scikit-image, sigma 1.5 voxels) or, where scikit-image is missing, the
voxels whose Gaussian gradient magnitude exceeds its in-brain 90th percentile.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state)
and written atomically; the format follows the suffix (``.svg`` or ``.png``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from thalamus_bidsapp.bidsio.atomic import atomic_path
from thalamus_bidsapp.image.resample import same_grid

LOGGER = logging.getLogger(__name__)

_PLANES = ("axial", "coronal", "sagittal")
_EDGE_CMAP = "autumn"  # value 1 -> yellow
# Canonical (RAS) axis cut by each plane.
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_positions(mask: np.ndarray, axis: int, n_slices: int = 3) -> list[int]:
    """Evenly spaced slice indices inside the mask's extent along ``axis``.

    Parameters
    ----------
    mask
        Boolean volume, shape (X, Y, Z); an empty mask uses the whole volume.
    axis
        0, 1 or 2.
    n_slices
        How many slices; they sit at ``k / (n_slices + 1)`` of the extent,
        k = 1..n_slices.

    Returns
    -------
    list of int
    """
    profile = np.asarray(mask).any(axis=tuple(a for a in range(3) if a != axis))
    idx = np.flatnonzero(profile)
    lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)
    return [int(round(lo + (hi - lo) * k / (n_slices + 1))) for k in range(1, n_slices + 1)]


def _edge_function(t1: np.ndarray, brain: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function (T1w slice, brain slice) -> boolean edge map, shape of the slice."""
    try:
        from skimage.feature import canny
    except ImportError:
        grad = ndimage.gaussian_gradient_magnitude(t1, 1.0)
        threshold = float(np.percentile(grad[brain] if brain.any() else grad, 90))

        def gradient_edges(t1_slice: np.ndarray, brain_slice: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_gradient_magnitude(t1_slice, 1.0) > threshold

        return gradient_edges

    def canny_edges(t1_slice: np.ndarray, brain_slice: np.ndarray) -> np.ndarray:
        if not np.any(t1_slice):
            return np.zeros(t1_slice.shape, dtype=bool)
        # Dilated so the outer brain boundary, which lies on the mask edge, is kept.
        return canny(t1_slice, sigma=1.5, mask=ndimage.binary_dilation(brain_slice, iterations=2))

    return canny_edges


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A slice oriented for display: rows = second remaining axis (upwards), columns = first."""
    return np.take(volume, index, axis=axis).T


def plot_registration_overlay(
    registered: str | os.PathLike,
    t1w: str | os.PathLike,
    out_file: str | os.PathLike,
    *,
    brain_mask: str | os.PathLike | None = None,
    title: str | None = None,
    n_slices: int = 3,
    dpi: int = 100,
) -> Path:
    """Draw the registered image with the T1w edges over it; save as SVG or PNG.

    Parameters
    ----------
    registered
        Registered image on the T1w grid (NIfTI).
    t1w
        The T1w reference (NIfTI), same grid.
    out_file
        Output figure; ``.svg`` or ``.png`` (other matplotlib formats work too).
    brain_mask
        T1w brain mask (same grid); places the slices and sets the window.
        Default: voxels where the T1w is > 0.
    title
        Figure title (e.g. ``"sub-01 R1map: flirt_mi_affine, MI 0.52"``).
    n_slices
        Slices per plane (default 3).
    dpi
        Resolution of raster formats.

    Returns
    -------
    pathlib.Path
        ``out_file``.

    Raises
    ------
    ValueError
        If the images are not on the same grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reg_img = nib.as_closest_canonical(nib.load(os.fspath(registered)))
    t1_img = nib.as_closest_canonical(nib.load(os.fspath(t1w)))
    if not same_grid(reg_img, t1_img):
        raise ValueError(f"{registered} is not on the grid of {t1w}")
    reg = np.asarray(reg_img.dataobj, dtype=np.float32).reshape(reg_img.shape[:3])
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32).reshape(t1_img.shape[:3])
    if brain_mask is not None:
        mask_img = nib.as_closest_canonical(nib.load(os.fspath(brain_mask)))
        brain = np.asarray(mask_img.dataobj).reshape(mask_img.shape[:3]) > 0
    else:
        brain = t1 > 0
    zooms = np.array(t1_img.header.get_zooms()[:3], dtype=float)

    window_src = reg[brain & np.isfinite(reg)] if brain.any() else reg[np.isfinite(reg)]
    vmin, vmax = (np.percentile(window_src, [1, 99]) if window_src.size else (0.0, 1.0))
    edge_map = _edge_function(t1, brain)

    fig = Figure(figsize=(3.0 * n_slices, 3.0 * len(_PLANES)), facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(_PLANES), n_slices, squeeze=False)
    for row, plane in enumerate(_PLANES):
        axis = _PLANE_AXIS[plane]
        others = [a for a in range(3) if a != axis]
        # imshow aspect = height / width of one pixel, so anisotropic voxels look right.
        aspect = zooms[others[1]] / zooms[others[0]]
        for col, index in enumerate(slice_positions(brain, axis, n_slices)):
            ax = axes[row][col]
            ax.imshow(_take(reg, axis, index), cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                      aspect=aspect, interpolation="nearest")
            edges = edge_map(np.take(t1, index, axis=axis), np.take(brain, index, axis=axis)).T
            ax.imshow(np.ma.masked_where(~edges, edges.astype(float)), cmap=_EDGE_CMAP, vmin=0, vmax=1,
                      origin="lower", aspect=aspect, alpha=0.9, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{plane} {index}", color="white", fontsize=8)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout()

    out_file = Path(out_file)
    fmt = out_file.suffix.lstrip(".").lower() or "svg"
    with atomic_path(out_file) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor=fig.get_facecolor())
    LOGGER.info("Wrote registration overlay %s", out_file)
    return out_file
