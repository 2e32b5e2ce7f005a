"""Group level, part 1: agreement of the thalamus masks with manual masks and between methods.

Ibrahim et al. (2026) sections 2.7.2 (voxel-wise) and 2.7.3 (volumetric).

The step reads one session at a time, so memory is bounded by one session's
masks whatever the number of sessions. Each mask is read once; it is cropped
to its own bounding box straight away, and all pairwise intersections of the
session's masks (methods and manual) come from one product of the flattened
boolean masks restricted to the union bounding box. Every voxel-wise metric
(Dice, precision, sensitivity, containment) and every volume is then derived
from that small ``k x k`` matrix of counts.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.group.containment import ContainmentSums
from thalamus_bidsapp.image.grid import same_grid
from thalamus_bidsapp.image.masks import voxel_volume_mm3
from thalamus_bidsapp.stats.agreement import volumetric_agreement
from thalamus_bidsapp.stats.overlap import (
    EmptyMaskWarning,
    containment_from_counts,
    dice_from_counts,
    jaccard_from_counts,
    precision_from_counts,
    sensitivity_from_counts,
)
from thalamus_bidsapp.stats.pairwise import pairwise_wilcoxon

logger = logging.getLogger(__name__)

__all__ = ["OVERLAP_METRICS", "run_agreement", "session_counts"]

OVERLAP_METRICS: tuple[str, ...] = ("dice", "precision", "sensitivity")
#: Summarised per method: the tested metrics and the Jaccard index (a monotone function of Dice, not tested again).
_SUMMARY_METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "jaccard")

#: Voxels per block of the intersection product. Each block's dot products
#: are at most 2**20 < 2**24, so float32 sums of 0/1 values stay exact.
_BLOCK = 1 << 20

#: Tolerance (mm) when comparing affines: headers written by different tools
#: round the same grid differently in float32.


@dataclass
class _Mask:
    """One binary mask reduced to its bounding box."""

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    voxel_mm3: float
    lo: tuple[int, int, int] | None  # first voxel of the bounding box; None if empty
    crop: np.ndarray | None  # bool, shape hi - lo + 1
    count: int


def _any_rows(a2d: np.ndarray) -> np.ndarray:
    """``a2d.any(axis=1)`` for a C-contiguous 2-D integer or boolean array, fast."""
    nbytes = a2d.shape[1] * a2d.itemsize
    if a2d.flags.c_contiguous and a2d.dtype.kind in "biu" and nbytes % 8 == 0:
        # A non-zero integer has a non-zero byte, so a row is non-zero iff one
        # of its 64-bit words is; max() vectorises far better than any().
        return a2d.view(np.uint64).reshape(a2d.shape[0], -1).max(axis=1) != 0
    return a2d.any(axis=1)


def _extent(flags: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(flags)
    return int(idx[0]), int(idx[-1]) + 1


def _bounding_crop(data: np.ndarray) -> tuple[tuple[int, int, int] | None, np.ndarray | None]:
    """Bounding box of the non-zero voxels of a 3-D array and the boolean crop.

    Works in the array's own memory order (NIfTI data come Fortran-ordered),
    so no full-size copy is made: one fast pass over the whole array finds the
    occupied slabs along the slowest axis, the rest only touches that slab.
    """
    fortran = data.flags.f_contiguous and not data.flags.c_contiguous
    v = data.T if fortran else np.ascontiguousarray(data)
    rows = _any_rows(v.reshape(v.shape[0], -1))
    if not rows.any():
        return None, None
    a0, a1 = _extent(rows)
    plane = v[a0:a1].max(axis=0) != 0
    b0, b1 = _extent(plane.any(axis=1))
    c0, c1 = _extent(plane.any(axis=0))
    crop = v[a0:a1, b0:b1, c0:c1] != 0  # new small array: the full one can be freed
    if fortran:
        return (c0, b0, a0), np.ascontiguousarray(crop.T)
    return (a0, b0, c0), crop


def _read_mask(path: Path, *, canonical: bool = False) -> _Mask:
    """Read a mask once, binarise it and keep only its bounding box.

    With ``canonical``, the mask is first reoriented to RAS+ (closest
    canonical), as the participant level reorients the T1w that defines
    space-T1w; only a manual mask drawn on the raw T1w grid needs that.
    """
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise ThalamusError(f"mask file not found: {path}", exit_code=EXIT_NOINPUT) from exc
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise ThalamusError(f"cannot read mask {path}: {exc}", exit_code=EXIT_DATAERR) from exc
    if canonical and len(img.shape) == 3:
        img = nib.as_closest_canonical(img)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ThalamusError(f"mask {path} is not a 3-D image (shape {img.shape})", exit_code=EXIT_DATAERR)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt compressed data
        raise ThalamusError(f"cannot read the voxels of mask {path}: {exc}", exit_code=EXIT_DATAERR) from exc
    if data.ndim == 4:
        data = data[..., 0]
    if data.dtype.kind == "f":
        # Interpolated or averaged masks: binarise at 0.5, as the ensembles of image/ensembles.py do.
        data = data >= 0.5
    elif data.dtype.kind not in "biu":
        raise ThalamusError(f"mask {path} has non-numeric voxels ({data.dtype})", exit_code=EXIT_DATAERR)
    voxel_mm3 = voxel_volume_mm3(img)
    affine = np.asarray(img.affine, dtype=float)
    lo, crop = _bounding_crop(data)
    count = int(np.count_nonzero(crop)) if crop is not None else 0
    return _Mask(Path(path), shape, affine, voxel_mm3, lo, crop, count)


def session_counts(masks: Sequence[_Mask]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts and pairwise intersections of a session's masks.

    Parameters
    ----------
    masks : sequence of _Mask, length k
        Masks on one grid, each reduced to its bounding box.

    Returns
    -------
    counts : ndarray of int64, shape (k,)
        Foreground voxels per mask.
    inter : ndarray of int64, shape (k, k)
        ``inter[i, j] = |mask_i and mask_j|`` (diagonal = ``counts``).
    """
    k = len(masks)
    counts = np.array([m.count for m in masks], dtype=np.int64)
    inter = np.zeros((k, k), dtype=np.int64)
    present = [i for i, m in enumerate(masks) if m.crop is not None]
    if not present:
        return counts, inter
    lo = np.min([masks[i].lo for i in present], axis=0)
    hi = np.max([np.add(masks[i].lo, masks[i].crop.shape) for i in present], axis=0)
    box = tuple(int(v) for v in hi - lo)
    flat = np.zeros((len(present), int(np.prod(box))), dtype=bool)
    for row, i in enumerate(present):
        m = masks[i]
        off = np.subtract(m.lo, lo)
        view = flat[row].reshape(box)
        sl = tuple(slice(int(o), int(o) + s) for o, s in zip(off, m.crop.shape))
        view[sl] = m.crop
    sub = np.zeros((len(present), len(present)), dtype=np.int64)
    for start in range(0, flat.shape[1], _BLOCK):
        blk = flat[:, start : start + _BLOCK].astype(np.float32)
        sub += np.rint(blk @ blk.T).astype(np.int64)
    inter[np.ix_(present, present)] = sub
    return counts, inter


def _session_key(value: object) -> str:
    """Identifier as text; a missing session (no ses- level) becomes ''."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return ""
    return str(value)


def _check_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; have {list(df.columns)}")


def _empty_warning(masks: Sequence[_Mask], names: Sequence[str], pid: str, sid: str) -> None:
    for m, name in zip(masks, names):
        if m.count == 0:
            logger.warning(
                "empty %s mask for %s %s (%s): its overlap metrics are NaN", name, pid, sid or "(no session)", m.path
            )


def run_agreement(
    method_masks: pd.DataFrame,
    manual_masks: pd.DataFrame,
    out_dir: Path,
    figures: bool = True,
    skip_bad_sessions: bool = False,
) -> dict[str, pd.DataFrame]:
    """Agreement of every method's thalamus masks with the manual masks and with each other.

    Parameters
    ----------
    method_masks : pandas.DataFrame
        One row per session and method: ``participant_id``, ``session_id``
        (may be empty/NaN for datasets without sessions), ``method`` (the
        BIDS ``desc`` value, e.g. ``freesurfer``) and ``path`` of the binary
        thalamus mask in T1w space.
    manual_masks : pandas.DataFrame
        One row per session with a manual mask: ``participant_id``,
        ``session_id``, ``path``. May be empty (then only the containment
        table is filled).
    out_dir : pathlib.Path
        The group output folder; the tables are written there and the
        figures under ``out_dir/figures``.
    figures : bool
        Draw the figures (PNG and SVG).
    skip_bad_sessions : bool
        A session whose masks cannot be read or are not on one grid is left
        out (listed in the ``excluded`` table, with the reason) and the others
        go on, instead of stopping with an error.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``voxelwise`` (per session and method, sessions with a manual mask),
        ``summary`` (median and IQR per method and metric), ``pairwise``
        (Wilcoxon tests between methods, BH adjusted per metric),
        ``containment`` (directed containment averaged across sessions) and
        ``volumetric`` (CCC, OLS, ICC(3,1), Bland-Altman per method) and
        ``excluded`` (participant_id, session_id, reason: sessions left out
        with ``skip_bad_sessions``).

    Raises
    ------
    ThalamusError
        Exit code 65 when a manual mask (or a method mask) is not on the grid
        of the session's other masks, naming the file; 66 when a mask file is
        missing; 65 when it cannot be read or a session has two masks for one
        method or two manual masks.
    """
    _check_columns(method_masks, ["participant_id", "session_id", "method", "path"], "method_masks")
    _check_columns(manual_masks, ["participant_id", "session_id", "path"], "manual_masks")
    out_dir = Path(out_dir)
    methods_df, manual_by_session = _keyed_masks(method_masks, manual_masks)
    all_methods = sorted(methods_df["method"].unique())
    containment_sums = ContainmentSums(all_methods, list(_CONTAINMENT_COLUMNS))
    vox_rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    excluded_rows: list[dict] = []
    for (pid, sid), group in methods_df.groupby(["key_pid", "key_sid"], sort=True):
        group = group.sort_values("method")
        names = list(group["method"])
        manual_path = manual_by_session.get((pid, sid))
        try:
            masks = _session_masks(list(group["path"]), manual_path)
        except ThalamusError as err:
            if not skip_bad_sessions:
                raise
            logger.error("agreement: %s %s left out: %s", pid, sid or "(no session)", err)
            excluded_rows.append({"participant_id": group["participant_id"].iloc[0],
                                  "session_id": group["session_id"].iloc[0], "reason": str(err)})
            continue
        seen.add((pid, sid))
        _empty_warning(masks, names + (["manual"] if manual_path is not None else []), pid, sid)
        counts, inter = session_counts(masks)
        k = len(names)
        with warnings.catch_warnings():
            # Empty masks were logged above, by file; the NaNs are the intended result.
            warnings.simplefilter("ignore", EmptyMaskWarning)
            containment_sums.add(names, containment_from_counts(inter[:k, :k], counts[:k, None], counts[None, :k]))
            if manual_path is not None:
                vox_rows += _voxelwise_rows(group, names, masks, counts, inter)
        logger.debug("agreement: %s %s done (%d masks)", pid, sid or "(no session)", len(masks))
        del masks

    for key in sorted(set(manual_by_session) - seen):
        logger.info("manual mask %s has no method mask in its session; not used", manual_by_session[key])

    voxelwise = pd.DataFrame(vox_rows, columns=list(_VOXELWISE_COLUMNS))
    tables = {
        "excluded": pd.DataFrame(excluded_rows, columns=["participant_id", "session_id", "reason"]),
        "voxelwise": voxelwise,
        "summary": _summary(voxelwise),
        "pairwise": _pairwise(voxelwise),
        "containment": containment_sums.table(),
        "volumetric": _volumetric(voxelwise),
    }
    for name, file_name, columns in (("voxelwise", "agreement_voxelwise", _VOXELWISE_COLUMNS),
                                     ("summary", "agreement_summary", _SUMMARY_COLUMNS),
                                     ("pairwise", "agreement_pairwise", _PAIRWISE_COLUMNS),
                                     ("containment", "containment", _CONTAINMENT_COLUMNS),
                                     ("volumetric", "agreement_volumetric", _VOLUMETRIC_COLUMNS)):
        write_tsv(tables[name], out_dir / f"{file_name}.tsv", columns)
    logger.info(
        "agreement: %d session(s), %d with a manual mask, %d method(s); tables in %s",
        len(seen), voxelwise[["participant_id", "session_id"]].drop_duplicates().shape[0], len(all_methods), out_dir,
    )
    if figures:
        from thalamus_bidsapp.reports.figures_agreement import write_agreement_figures

        write_agreement_figures(voxelwise, tables["containment"], tables["volumetric"], out_dir / "figures")
    return tables


def _keyed_masks(method_masks: pd.DataFrame, manual_masks: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The method masks with session keys, and the manual mask of each session; one mask per key, or exit 65."""
    methods_df = method_masks.assign(
        key_pid=method_masks["participant_id"].map(_session_key),
        key_sid=method_masks["session_id"].map(_session_key),
        method=method_masks["method"].astype(str),
    )
    dup = methods_df.duplicated(["key_pid", "key_sid", "method"], keep=False)
    if dup.any():
        raise ThalamusError(
            "more than one mask per session and method: " + ", ".join(map(str, methods_df.loc[dup, "path"])),
            exit_code=EXIT_DATAERR,
        )
    manual_df = manual_masks.assign(
        key_pid=manual_masks["participant_id"].map(_session_key),
        key_sid=manual_masks["session_id"].map(_session_key),
    )
    dup = manual_df.duplicated(["key_pid", "key_sid"], keep=False)
    if dup.any():
        raise ThalamusError(
            "more than one manual mask per session: " + ", ".join(map(str, manual_df.loc[dup, "path"])),
            exit_code=EXIT_DATAERR,
        )
    return methods_df, {(r.key_pid, r.key_sid): Path(r.path) for r in manual_df.itertuples()}


def _session_masks(method_paths: list, manual_path: Path | None) -> list[_Mask]:
    """The session's method masks (and its manual mask last), all checked to be on one grid (exit 65)."""
    masks = [_read_mask(Path(p)) for p in method_paths]
    ref = masks[0]
    for m in masks[1:]:
        if not same_grid(ref, m):
            why = f"shape {m.shape} vs {ref.shape}" if m.shape != ref.shape else "different affine"
            raise ThalamusError(
                f"mask {m.path} is not on the grid of {ref.path} of the same session ({why})",
                exit_code=EXIT_DATAERR,
            )
    if manual_path is not None:
        manual = _read_mask(manual_path)
        if not same_grid(ref, manual):
            # space-T1w is the T1w reoriented to RAS+; a manual mask drawn on the raw T1w
            # differs from it only in voxel order.
            manual = _read_mask(manual_path, canonical=True)
        if not same_grid(ref, manual):
            why = f"shape {manual.shape} vs {ref.shape}" if manual.shape != ref.shape else "different affine"
            raise ThalamusError(
                f"manual mask {manual.path} is not on the T1w grid of the session's method masks "
                f"({why}; reference {ref.path})",
                exit_code=EXIT_DATAERR,
            )
        masks.append(manual)
    return masks


def _voxelwise_rows(group: pd.DataFrame, names: list[str], masks: list[_Mask], counts: np.ndarray,
                    inter: np.ndarray) -> list[dict]:
    """Overlap and volume of each method mask against the manual mask (the last of ``masks``)."""
    k = len(names)
    tp = inter[:k, k]
    fp = counts[:k] - tp
    fn = counts[k] - tp
    d = np.atleast_1d(dice_from_counts(tp, fp, fn))
    jac = np.atleast_1d(jaccard_from_counts(tp, fp, fn))
    p = np.atleast_1d(precision_from_counts(tp, fp, fn))
    s = np.atleast_1d(sensitivity_from_counts(tp, fp, fn))
    manual_ml = counts[k] * masks[k].voxel_mm3 / 1000.0
    return [{
        "participant_id": group["participant_id"].iloc[0],
        "session_id": group["session_id"].iloc[0],
        "method": name,
        "tp": int(tp[j]),
        "fp": int(fp[j]),
        "fn": int(fn[j]),
        "dice": float(d[j]),
        "jaccard": float(jac[j]),
        "precision": float(p[j]),
        "sensitivity": float(s[j]),
        "volume_manual_ml": manual_ml,
        "volume_method_ml": counts[j] * masks[j].voxel_mm3 / 1000.0,
    } for j, name in enumerate(names)]


def _summary(voxelwise: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, grp in voxelwise.groupby("method", sort=True):
        for metric in _SUMMARY_METRICS:
            v = grp[metric].dropna().to_numpy(dtype=float)
            q1, med, q3 = np.percentile(v, [25, 50, 75]) if v.size else (np.nan,) * 3
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "n": int(v.size),
                    "median": med,
                    "q1": q1,
                    "q3": q3,
                    "iqr": q3 - q1,
                    "mean": float(v.mean()) if v.size else np.nan,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=list(_SUMMARY_COLUMNS))


def _pairwise(voxelwise: pd.DataFrame) -> pd.DataFrame:
    frames = []
    if not voxelwise.empty:
        subject = voxelwise["participant_id"].astype(str) + "|" + voxelwise["session_id"].map(_session_key)
        for metric in OVERLAP_METRICS:
            long = pd.DataFrame({"subject": subject, "method": voxelwise["method"], "value": voxelwise[metric]})
            long = long.dropna(subset=["value"])
            # methods in alphabetical order: method_a - method_b with method_a the earlier name
            res = pairwise_wilcoxon(long, dv="value", within="method", subject="subject",
                                    order=sorted(long["method"].unique()))
            if not res.empty:
                frames.append(res.assign(metric=metric))
    cols = list(_PAIRWISE_COLUMNS)
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True).rename(
        columns={"A": "method_a", "B": "method_b", "median_A": "median_a", "median_B": "median_b"}
    )
    return out[cols]


def _volumetric(voxelwise: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for method, grp in voxelwise.groupby("method", sort=True):
        res = volumetric_agreement(grp, reference="volume_manual_ml", method="volume_method_ml")
        frames.append(res.assign(method=method))
    cols = list(_VOLUMETRIC_COLUMNS)
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True).rename(
        columns={
            "mean_reference": "mean_manual_ml",
            "mean_method": "mean_method_ml",
            "residual_sd": "sd_e_ml",
            "intercept": "intercept_ml",
            "prop_intercept": "prop_intercept_ml",
            **{name: f"{name}_ml" for name in (
                "bias", "bias_se", "bias_ci_low", "bias_ci_high", "sd", "loa_low", "loa_high", "loa_se",
                "loa_low_ci_low", "loa_low_ci_high", "loa_high_ci_low", "loa_high_ci_high")},
        }
    )
    return out[cols]


#: Column descriptions of each agreement table, in column order (``data/agreement_columns.json``).
_COLUMNS: dict[str, dict[str, object]] = json.loads(
    importlib.resources.files("thalamus_bidsapp.data").joinpath("agreement_columns.json").read_text())
_VOXELWISE_COLUMNS, _SUMMARY_COLUMNS, _PAIRWISE_COLUMNS, _CONTAINMENT_COLUMNS, _VOLUMETRIC_COLUMNS = (
    _COLUMNS[name] for name in ("voxelwise", "summary", "pairwise", "containment", "volumetric"))
