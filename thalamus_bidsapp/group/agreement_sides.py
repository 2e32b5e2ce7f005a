"""Group level: agreement of each method's left and right thalamus with manual masks that have sides.

A manual mask has sides when it is a label map with 1 (left) and 2 (right)
(a ``dseg``, or a ``mask`` file holding those values), or when the session has
per-side manual masks (``hemi-L`` and ``hemi-R``). A method's sides are its
published ``space-T1w_seg-thalamus_desc-<method>_dseg`` (0 background, 1 left,
2 right). Per side and session: Dice, precision and sensitivity, and the two
volumes; then the median and IQR per method and side. A bilateral manual mask
without sides gives no rows here (the bilateral agreement uses it).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.grid import same_grid
from thalamus_bidsapp.image.masks import MM3_PER_ML, integer_labels, voxel_volume_mm3
from thalamus_bidsapp.image.sides import LEFT, RIGHT
from thalamus_bidsapp.stats.overlap import (
    EmptyMaskWarning,
    dice_from_counts,
    precision_from_counts,
    sensitivity_from_counts,
)

LOGGER = logging.getLogger(__name__)

SIDES = (("left", LEFT), ("right", RIGHT))
_DSEG_NAME = re.compile(r"^(?P<sub>sub-[0-9a-zA-Z]+)(?:_(?P<ses>ses-[0-9a-zA-Z]+))?_space-T1w_seg-thalamus"
                        r"_desc-(?P<desc>[0-9a-zA-Z]+)_dseg\.nii\.gz$")

VOXELWISE_COLUMNS = {
    "participant_id": "Participant label (BIDS sub-<label>).",
    "session_id": "Session label (BIDS ses-<label>); n/a for datasets without sessions.",
    "method": "Segmentation method (BIDS desc value of the thalamus dseg).",
    "hemisphere": "left or right thalamus (the subject's left and right).",
    "tp": {"Description": "Voxels of this side in both the method and the manual mask.", "Units": "voxel"},
    "fp": {"Description": "Voxels of this side in the method mask only.", "Units": "voxel"},
    "fn": {"Description": "Voxels of this side in the manual mask only.", "Units": "voxel"},
    "dice": "Dice coefficient 2TP/(2TP+FP+FN) of this side.",
    "precision": "TP/(TP+FP) of this side.",
    "sensitivity": "TP/(TP+FN) of this side.",
    "volume_manual_ml": {"Description": "Manual volume of this side.", "Units": "mL"},
    "volume_method_ml": {"Description": "Method volume of this side.", "Units": "mL"},
}
SUMMARY_COLUMNS = {
    "method": "Segmentation method.",
    "hemisphere": "left or right thalamus.",
    "metric": "dice, precision or sensitivity.",
    "n": "Number of sessions with a manual mask with sides and the method's sides.",
    "median": "Median across sessions.",
    "q1": "First quartile.",
    "q3": "Third quartile.",
    "iqr": "Interquartile range (q3 - q1).",
}


def collect_method_sides(output_dir: Path) -> pd.DataFrame:
    """Every published side map: participant_id, session_id, method, path."""
    rows = []
    for path in sorted(Path(output_dir).glob("sub-*/**/anat/*_space-T1w_seg-thalamus_desc-*_dseg.nii.gz")):
        match = _DSEG_NAME.match(path.name)
        if match:
            rows.append({"participant_id": match["sub"], "session_id": match["ses"], "method": match["desc"],
                         "path": path})
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "method", "path"])


def manual_sides(path: Path | None = None, left: Path | None = None, right: Path | None = None,
                 reference: nib.spatialimages.SpatialImage | None = None) -> np.ndarray | None:
    """The side map (0, 1 left, 2 right) of a session's manual mask(s), or None when they have no sides.

    ``path``: a manual label map (dseg, or a mask holding 1 and 2); ``left``
    and ``right``: per-side manual masks. ``reference`` is the grid of the
    method's side maps; a manual image on another grid is reoriented to RAS+
    first (as the participant level reorients the T1w) and must then match.
    """
    if left is not None and right is not None:
        left_data = _on_grid(Path(left), reference) > 0
        right_data = _on_grid(Path(right), reference) > 0
        both = int(np.count_nonzero(left_data & right_data))
        if both:
            raise ThalamusError(f"manual masks {left} and {right} overlap in {both} voxels", EXIT_DATAERR)
        return (left_data * LEFT + right_data * RIGHT).astype(np.uint8)
    if path is None:
        return None
    data = _on_grid(Path(path), reference)
    values = set(np.unique(data).tolist())
    if not {LEFT, RIGHT} <= values or not values <= {0, LEFT, RIGHT}:
        return None  # a bilateral mask
    return data.astype(np.uint8)


def _on_grid(path: Path, reference: nib.spatialimages.SpatialImage | None) -> np.ndarray:
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise ThalamusError(f"cannot read manual mask {path}: {exc}", EXIT_DATAERR) from exc
    if reference is not None and not same_grid(reference, img):
        img = nib.as_closest_canonical(img)
        if not same_grid(reference, img):
            raise ThalamusError(f"manual mask {path} is not on the T1w grid of the session's method masks",
                                EXIT_DATAERR)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return integer_labels(data)


def run_side_agreement(method_sides: pd.DataFrame, manual: pd.DataFrame, out_dir: Path) -> dict[str, pd.DataFrame]:
    """Per-side agreement of each method with the manual masks that have sides; written to ``out_dir``.

    Parameters
    ----------
    method_sides
        participant_id, session_id, method, path (:func:`collect_method_sides`).
    manual
        One row per session: participant_id, session_id and ``path`` (the
        manual mask or dseg) and/or ``left`` and ``right`` (per-side masks).

    Returns
    -------
    ``{"voxelwise": ..., "summary": ...}``, also written as
    ``agreement_sides_voxelwise.tsv`` and ``agreement_sides_summary.tsv``;
    nothing is written when no manual mask has sides.
    """
    rows = []
    key = method_sides["session_id"].fillna("").astype(str)
    for record in manual.itertuples(index=False):
        sid = "" if pd.isna(record.session_id) or record.session_id is None else str(record.session_id)
        session = method_sides[(method_sides["participant_id"] == record.participant_id) & (key == sid)]
        if session.empty:
            continue
        reference = nib.load(str(session["path"].iloc[0]))
        truth = manual_sides(_get(record, "path"), _get(record, "left"), _get(record, "right"), reference)
        if truth is None:
            continue
        voxel_ml = voxel_volume_mm3(reference) / MM3_PER_ML
        for method_row in session.sort_values("method").itertuples(index=False):
            predicted = np.asanyarray(nib.load(str(method_row.path)).dataobj)
            if predicted.shape != truth.shape:
                raise ThalamusError(f"{method_row.path} is not on the grid of the manual mask", EXIT_DATAERR)
            rows += [_side_row(record, method_row.method, name, predicted == value, truth == value, voxel_ml)
                     for name, value in SIDES]
    voxelwise = pd.DataFrame(rows, columns=list(VOXELWISE_COLUMNS))
    summary = _summary(voxelwise)
    if not voxelwise.empty:
        write_tsv(voxelwise, Path(out_dir) / "agreement_sides_voxelwise.tsv", VOXELWISE_COLUMNS)
        write_tsv(summary, Path(out_dir) / "agreement_sides_summary.tsv", SUMMARY_COLUMNS)
        LOGGER.info("per-side agreement: %d session(s) with a manual mask with sides",
                    voxelwise[["participant_id", "session_id"]].drop_duplicates().shape[0])
    return {"voxelwise": voxelwise, "summary": summary}


def _get(record, field: str) -> Path | None:
    value = getattr(record, field, None)
    return None if value is None or (not isinstance(value, Path) and pd.isna(value)) else Path(value)


def _side_row(record, method: str, hemisphere: str, predicted: np.ndarray, truth: np.ndarray,
              voxel_ml: float) -> dict:
    tp = int(np.count_nonzero(predicted & truth))
    fp, fn = int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(truth)) - tp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        metrics = {"dice": float(dice_from_counts(tp, fp, fn)), "precision": float(precision_from_counts(tp, fp, fn)),
                   "sensitivity": float(sensitivity_from_counts(tp, fp, fn))}
    return {"participant_id": record.participant_id, "session_id": record.session_id, "method": method,
            "hemisphere": hemisphere, "tp": tp, "fp": fp, "fn": fn, **metrics,
            "volume_manual_ml": (tp + fn) * voxel_ml, "volume_method_ml": (tp + fp) * voxel_ml}


def _summary(voxelwise: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, hemisphere), group in voxelwise.groupby(["method", "hemisphere"], sort=True):
        for metric in ("dice", "precision", "sensitivity"):
            values = group[metric].dropna().to_numpy(float)
            q1, median, q3 = np.percentile(values, [25, 50, 75]) if values.size else (np.nan,) * 3
            rows.append({"method": method, "hemisphere": hemisphere, "metric": metric, "n": int(values.size),
                         "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
