"""QC checks of one session: every thalamus mask against the others, the prior, anatomy and its registration.

:func:`session_checks` reads the session's masks (and side maps), its volumes
table, its registration QC table and, when there is one, the thalamus prior
(``hemi-L`` and ``hemi-R`` probability maps on the T1w grid), and returns
one row per mask and check: method, contrast, check, value, threshold,
status (pass, warn, fail, skipped) and a reason a user understands. A check
that cannot be computed (no prior, one mask only, a mask without sides) is
``skipped`` with the reason, never left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.image import qc_checks as measure
from thalamus_bidsapp.image.prior import prior_thalamus
from thalamus_bidsapp.image.sides import LEFT, RIGHT
from thalamus_bidsapp.stats.qc import FAIL, PASS, SKIPPED, WARN, judge, worst_status

QC_COLUMNS = ["method", "contrast", "check", "value", "threshold", "status", "reason"]

#: Sidecar of the per-session QC table (``*_label-thalamus_desc-segmentation_qc.tsv``) and of group/qc.tsv.
QC_COLUMN_DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "method": {"Description": "Segmentation method; the desc entity of the mask file"},
    "contrast": {"Description": "Image contrast(s) the mask was segmented on"},
    "check": {"Description": "Which check", "Levels": {
        "dice_methods": "median over the session's other methods of the Dice with their masks (one value per "
                        "method: the median over its masks)",
        "dice_prior": "Dice of the mask with the thalamus prior binarised at prior_threshold",
        "components_left": "connected parts of the left thalamus (each >= component_min_fraction of the side)",
        "components_right": "connected parts of the right thalamus",
        "lr_ratio": "left / right thalamus volume",
        "icv_fraction": "bilateral thalamus volume in % of the ICV",
        "centroid_left": "distance (mm) of the left thalamus centre from the prior's",
        "centroid_right": "distance (mm) of the right thalamus centre from the prior's",
        "side_swap": "sides overlapping the opposite side of the prior more than their own (0, 1, 2)",
        "registration_mi": "MI of the registration the mask's contrast went through, minus its cut-off (nats)",
        "lesion_fill": "sessions whose lesions were filled: 1 when the thalamic lesion voxels of the T1w the mask "
                       "was made on were filled from the fallback (too little normal thalamus left), else 0",
        "cohort_robust_z": "group level: robust z of volume / ICV among the sessions of the method",
        "annual_change": "group level: % volume change per year from the previous session"}},
    "value": {"Description": "The measured value (n/a when skipped)"},
    "threshold": {"Description": "The rule the value was judged by (thalamus_bidsapp/data/qc_thresholds.yaml, "
                                 "or --qc-thresholds)"},
    "status": {"Description": "pass, warn, fail, or skipped (the check could not be computed; see reason)"},
    "reason": {"Description": "The result in words, and what a flag may mean"},
}

#: Why registration_mi is skipped for a mask made on the T1w: the check does not apply (nothing was
#: registered), unlike a check that could not be run.
NOT_APPLICABLE_T1W = "segmented on the T1w itself: no registration involved"

#: Check name -> rule name in the thresholds file.
RULE_OF = {"components_left": "components", "components_right": "components", "centroid_left": "centroid_distance",
           "centroid_right": "centroid_distance"}

#: What a flagged value may mean, per check.
HINTS = {
    "dice_methods": "the mask disagrees with the other methods of this session (a failed run, or another "
                    "person's segmentation?)",
    "dice_prior": "the mask does not lie where the thalamus prior expects it (another person's segmentation, a "
                  "shifted or flipped image?)",
    "components": "the thalamus is split into several parts (a fragmented segmentation)",
    "lr_ratio": "one thalamus is much smaller than the other (part of it missing?)",
    "icv_fraction": "the thalamus is implausibly small or large for an adult head",
    "centroid_distance": "the thalamus lies away from where the prior puts it (another person's segmentation, a "
                         "shifted or flipped image?)",
    "side_swap": "left and right seem swapped (a left-right flipped header or swapped labels?)",
    "registration_mi": "the registration of this contrast to the T1w is close to or below its QC cut-off",
    "lesion_fill": "the lesions cover (nearly) the whole thalamus, so its volume on the filled T1w is not a "
                   "measurement",
}


@dataclass(frozen=True)
class MaskFiles:
    """One thalamus mask of the session: its method (desc), contrast, binary mask and side map (or None).

    ``family`` names the registered method that made it, so that masks of one
    method (MindGlide on three contrasts and their ensembles) do not outvote
    the other methods in ``dice_methods``.
    """

    method: str
    contrast: str
    mask: Path
    sides: Path | None = None
    family: str | None = None
    #: Why the mask has no side map, as its method recorded it (None: not recorded).
    no_sides_reason: str | None = None

    @property
    def method_family(self) -> str:
        """The method the mask comes from (MindGlide's masks and ensembles are one family); default its desc."""
        return self.family or self.method


@dataclass
class _Mask:
    files: MaskFiles
    data: np.ndarray
    sides: np.ndarray | None
    affine: np.ndarray


def session_checks(masks: Sequence[MaskFiles], volumes: pd.DataFrame, thresholds: Mapping[str, Any], *,
                   registration_qc: pd.DataFrame | None = None,
                   prior: Sequence[str | Path] | None = None,
                   lesion_fill: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every check of every mask of the session (columns :data:`QC_COLUMNS`).

    Parameters
    ----------
    masks
        The session's thalamus masks.
    volumes
        The session's volumes table (method, contrast, hemisphere, volume_ml, icv_ml).
    thresholds
        From :func:`thalamus_bidsapp.qc.thresholds.load_thresholds`.
    registration_qc
        The session's registration QC table (image, mi, cutoff, selected), if any image was registered.
    prior
        ``[left, right]`` thalamus probability maps on the T1w grid, or None (prior checks skipped).
    lesion_fill
        The lesion fill's provenance (the filled T1w's sidecar fields), or None:
        the ``lesion_fill`` check is added only for a session whose lesions were filled.
    """
    loaded = [_load(files) for files in masks]
    prior_maps, prior_note = _load_prior(prior, loaded)
    rows: list[dict[str, Any]] = []
    for mask in loaded:
        others = _other_methods(mask, loaded)
        rows += _agreement_rows(mask, others, prior_maps, prior_note, thresholds)
        rows += _anatomy_rows(mask, volumes, thresholds)
        rows += _prior_side_rows(mask, prior_maps, prior_note, thresholds)
        rows.append(_registration_row(mask.files, registration_qc, thresholds))
        if lesion_fill is not None and lesion_fill.get("LesionFilled"):
            rows.append(_lesion_fill_row(mask.files, volumes, lesion_fill, thresholds))
    return pd.DataFrame(rows, columns=QC_COLUMNS)


def qc_status_of(qc: pd.DataFrame, keys: Sequence[str] = ("method", "contrast")) -> pd.DataFrame:
    """The worst status per mask (``keys`` columns and ``qc_status``)."""
    if qc.empty:
        return pd.DataFrame(columns=[*keys, "qc_status"])
    worst = qc.groupby(list(keys), dropna=False, sort=False)["status"].agg(worst_status)
    return worst.rename("qc_status").reset_index()


def with_qc_status(volumes: pd.DataFrame, qc: pd.DataFrame, keys: Sequence[str] = ("method", "contrast")) -> pd.DataFrame:
    """``volumes`` with a ``qc_status`` column: each mask's worst status (``skipped`` for a mask without checks)."""
    table = volumes.drop(columns=["qc_status"], errors="ignore")
    merged = table.merge(qc_status_of(qc, keys), on=list(keys), how="left")
    merged["qc_status"] = merged["qc_status"].fillna(SKIPPED)
    return merged


def _other_methods(mask: _Mask, loaded: list[_Mask]) -> dict[str, list[np.ndarray]]:
    """The masks of the other method families of the session, by family."""
    families: dict[str, list[np.ndarray]] = {}
    for other in loaded:
        if other.files.method_family != mask.files.method_family:
            families.setdefault(other.files.method_family, []).append(other.data)
    return families


def _load(files: MaskFiles) -> _Mask:
    img = nib.load(str(files.mask))
    sides = np.asanyarray(nib.load(str(files.sides)).dataobj) if files.sides else None
    return _Mask(files, np.asanyarray(img.dataobj) > 0, sides, img.affine)


def _load_prior(prior: Sequence[str | Path] | None, masks: list[_Mask]) -> tuple[tuple | None, str]:
    """The prior's (left, right) arrays, or None and why the prior checks are skipped."""
    if not prior:
        return None, ("no thalamus prior for this session (template space was not run), so the prior checks "
                      "were skipped")
    if len(prior) != 2:
        raise ValueError(f"the thalamus prior is two files (left, right), not {len(prior)}")
    images = [nib.load(str(path)) for path in prior]
    arrays = tuple(np.asanyarray(img.dataobj, dtype=np.float32) for img in images)
    for mask in masks[:1]:
        if arrays[0].shape != mask.data.shape or not np.allclose(images[0].affine, mask.affine, atol=1e-3):
            return None, (f"the thalamus prior {Path(prior[0]).name} is not on the T1w grid of the masks, so the "
                          "prior checks were skipped")
    return arrays, ""


def _row(files: MaskFiles, check: str, value: float, rules: Mapping[str, Any], what: str) -> dict[str, Any]:
    rule_name = RULE_OF.get(check, check)
    status, text = judge(value, rules[rule_name])
    reason = what
    if status in (WARN, FAIL):
        reason += f": {HINTS[rule_name]}"
    return {"method": files.method, "contrast": files.contrast, "check": check, "value": value,
            "threshold": text, "status": status, "reason": reason + "."}


def _skipped(files: MaskFiles, check: str, rules: Mapping[str, Any], why: str) -> dict[str, Any]:
    _, text = judge(float("nan"), rules[RULE_OF.get(check, check)])
    return {"method": files.method, "contrast": files.contrast, "check": check, "value": float("nan"),
            "threshold": text, "status": SKIPPED, "reason": why[0].upper() + why[1:] + "."}


def _agreement_rows(mask: _Mask, others: dict[str, list[np.ndarray]], prior: tuple | None, prior_note: str,
                    thresholds: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Median over the other methods of the Dice with each (a method with several masks: their median)."""
    rules, files = thresholds["checks"], mask.files
    rows = []
    per_method = [measure.median_dice(mask.data, masks) for masks in others.values()]
    per_method = [value for value in per_method if np.isfinite(value)]
    if per_method:
        value = float(np.median(per_method))
        rows.append(_row(files, "dice_methods", value, rules,
                         f"Median Dice with the masks of the {len(per_method)} other method(s) of this session "
                         f"({', '.join(others)}) is {value:.2f}"))
    else:
        rows.append(_skipped(files, "dice_methods", rules, "no other method's mask in this session to compare "
                                                           "with"))
    if prior is None:
        rows.append(_skipped(files, "dice_prior", rules, prior_note))
    else:
        level = float(thresholds["prior_threshold"])
        value = measure.dice(mask.data, prior_thalamus(prior[0], prior[1], level))
        rows.append(_row(files, "dice_prior", value, rules,
                         f"Dice with the thalamus prior (probability >= {level:g}) is {value:.2f}"))
    return rows


def _anatomy_rows(mask: _Mask, volumes: pd.DataFrame, thresholds: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules, files = thresholds["checks"], mask.files
    rows = []
    sides = _side_arrays(mask)
    for side in ("left", "right"):
        check = f"components_{side}"
        if sides is None:
            rows.append(_skipped(files, check, rules, _no_sides(files)))
            continue
        count = measure.component_count(sides[side], float(thresholds["component_min_fraction"]))
        row = _row(files, check, float(count), rules, f"The {side} thalamus has {count} connected part(s)")
        if count == 0:  # an empty side
            row.update(status=FAIL, reason=f"The {side} thalamus is empty: the mask has lost one side.")
        rows.append(row)
    volume = _volume_lookup(volumes, files)
    if np.isfinite(volume["left"]) and np.isfinite(volume["right"]) and volume["right"] > 0:
        ratio = volume["left"] / volume["right"]
        rows.append(_row(files, "lr_ratio", ratio, rules, f"Left/right volume ratio is {ratio:.2f} "
                         f"({volume['left']:.2f} mL / {volume['right']:.2f} mL)"))
    else:
        rows.append(_skipped(files, "lr_ratio", rules, _no_sides(files) if sides is None
                             else "no left and right volumes for this mask"))
    if np.isfinite(volume["bilateral"]) and np.isfinite(volume["icv"]) and volume["icv"] > 0:
        percent = 100.0 * volume["bilateral"] / volume["icv"]
        rows.append(_row(files, "icv_fraction", percent, rules, f"Thalamus volume is {percent:.2f}% of the ICV "
                         f"({volume['bilateral']:.2f} mL of {volume['icv']:.0f} mL)"))
    else:
        rows.append(_skipped(files, "icv_fraction", rules, "no thalamus volume or ICV in the volumes table"))
    return rows


def _prior_side_rows(mask: _Mask, prior: tuple | None, prior_note: str,
                     thresholds: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules, files = thresholds["checks"], mask.files
    checks = ("centroid_left", "centroid_right", "side_swap")
    sides = _side_arrays(mask)
    if prior is None or sides is None:
        reasons = ([_no_sides(files)] if sides is None else []) + ([prior_note] if prior is None else [])
        why = "; and ".join(reasons)
        return [_skipped(files, check, rules, why) for check in checks]
    rows = []
    for side, prior_side in (("left", prior[0]), ("right", prior[1])):
        distance = measure.centroid_distance(sides[side], prior_side, mask.affine)
        rows.append(_row(files, f"centroid_{side}", distance, rules,
                         f"The {side} thalamus centre is {distance:.1f} mm from the prior's"))
    overlaps = measure.side_overlaps(sides["left"], sides["right"], prior[0], prior[1],
                                     float(thresholds["prior_threshold"]))
    swapped = measure.swapped_sides(overlaps)
    rows.append(_row(files, "side_swap", float(swapped), rules,
                     f"{swapped} side(s) overlap the opposite side of the prior more than their own (left: "
                     f"{overlaps['left_in_left']:.0%} in the left prior, {overlaps['left_in_right']:.0%} in the "
                     f"right; right: {overlaps['right_in_right']:.0%} in the right, "
                     f"{overlaps['right_in_left']:.0%} in the left)"))
    return rows


def _registration_row(files: MaskFiles, registration_qc: pd.DataFrame | None,
                      thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """MI margin of the selected registration of each registered image in the mask's contrast (the worst)."""
    rules = thresholds["checks"]
    images = [part for part in str(files.contrast).split("+") if part != "T1w"]
    if not images:
        return _skipped(files, "registration_mi", rules, NOT_APPLICABLE_T1W)
    if registration_qc is None or registration_qc.empty:
        return _skipped(files, "registration_mi", rules, "no registration QC table for this session")
    margins = []
    for image in images:
        selected = registration_qc[(registration_qc["image"].astype(str) == image)
                                   & (registration_qc["selected"].astype(str).str.lower() == "true")]
        if selected.empty:
            return _skipped(files, "registration_mi", rules, f"no selected {image} registration in the QC table")
        row = selected.iloc[0]
        margins.append((float(row["mi"]) - float(row["cutoff"]), image, str(row["strategy"]), float(row["mi"]),
                        float(row["cutoff"])))
    margin, image, strategy, mi, cutoff = min(margins)
    return _row(files, "registration_mi", margin, rules,
                f"The {image} registration ({strategy}) has MI {mi:.3f} nats against its cut-off {cutoff:.2f} "
                f"(margin {margin:+.3f})")


def _no_sides(files: MaskFiles) -> str:
    """Why a side check was not run: the method's recorded reason, else the missing side map."""
    return (f"{files.no_sides_reason}, so this side check was not run" if files.no_sides_reason
            else "this mask has no left/right side map")


def _lesion_fill_row(files: MaskFiles, volumes: pd.DataFrame, lesion_fill: Mapping[str, Any],
                     thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """1 when the mask was made on a T1w whose thalamic lesions were filled from the fallback, else 0."""
    rules = thresholds["checks"]
    rows = volumes[(volumes["method"].astype(str) == files.method)
                   & (volumes["contrast"].astype(str) == files.contrast)]
    filled = "lesion_filled" in rows and rows["lesion_filled"].astype(str).str.lower().isin(["true", "1"]).any()
    if not filled:
        return _skipped(files, "lesion_fill", rules, "this mask was not made on the lesion-filled T1w")
    if lesion_fill.get("ThalamusFillFallback"):
        return _row(files, "lesion_fill", 1.0, rules, "The thalamic lesion voxels were filled from the fallback, "
                    f"{lesion_fill.get('ThalamusFill')} ({lesion_fill.get('ThalamusFillReason')})")
    source = lesion_fill.get("ThalamusFill")
    what = f"thalamic lesion voxels filled from the {source}" if source else "no lesion voxel filled as thalamus"
    return _row(files, "lesion_fill", 0.0, rules, f"Lesions filled from normal tissue ({what})")


def _side_arrays(mask: _Mask) -> dict[str, np.ndarray] | None:
    if mask.sides is None:
        return None
    return {"left": mask.sides == LEFT, "right": mask.sides == RIGHT}


def _volume_lookup(volumes: pd.DataFrame, files: MaskFiles) -> dict[str, float]:
    """The mask's bilateral, left and right volumes (mL) and the ICV, NaN where absent."""
    rows = volumes[(volumes["method"].astype(str) == files.method)
                   & (volumes["contrast"].astype(str) == files.contrast)]
    out = {"bilateral": float("nan"), "left": float("nan"), "right": float("nan"), "icv": float("nan")}
    hemisphere = rows["hemisphere"] if "hemisphere" in rows else pd.Series("bilateral", index=rows.index)
    for name in ("bilateral", "left", "right"):
        match = rows[hemisphere == name]
        if not match.empty:
            out[name] = float(pd.to_numeric(match["volume_ml"], errors="coerce").iloc[0])
    if not rows.empty and "icv_ml" in rows:
        out["icv"] = float(pd.to_numeric(rows["icv_ml"], errors="coerce").iloc[0])
    return out


__all__ = ["MaskFiles", "NOT_APPLICABLE_T1W", "PASS", "QC_COLUMNS", "QC_COLUMN_DESCRIPTIONS", "qc_status_of", "session_checks",
           "with_qc_status"]
