"""Group-level QC: the sessions' checks gathered, the cohort and longitudinal checks, ``qc_status`` and exclusion.

The group table ``group/qc.tsv`` holds every session's checks (read back from
``*_label-thalamus_desc-segmentation_qc.tsv``) and two checks that need the
cohort: the robust z of each mask's ICV-adjusted volume among the sessions of
its method (``cohort_robust_z``), and the annualised volume change from the
subject's previous session (``annual_change``, flagged on both sessions).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv_with_columns
from thalamus_bidsapp.qc.session import QC_COLUMN_DESCRIPTIONS, QC_COLUMNS
from thalamus_bidsapp.stats.longitudinal import order_visits
from thalamus_bidsapp.stats.qc import FAIL, SKIPPED, WARN, annualised_changes, at_least, cohort_outliers, judge, \
    worst_status

LOGGER = logging.getLogger(__name__)

IDS = ["participant_id", "session_id"]
GROUP_QC_COLUMNS = [*IDS, *QC_COLUMNS]
KEYS = [*IDS, "method", "contrast"]
#: Sidecar of group/qc.tsv.
GROUP_QC_DESCRIPTIONS = {
    "participant_id": "Participant label, sub-<label>",
    "session_id": "Session label, ses-<label> (n/a when the dataset has no sessions)",
    **QC_COLUMN_DESCRIPTIONS,
}
#: The reason of a mask left out by --qc-exclude in group/excluded_sessions.tsv starts with this.
EXCLUDED_BY_QC = "left out by --qc-exclude"
_HINTS = {
    "cohort_robust_z": "this mask's volume for its head size is an outlier among the sessions of this method",
    "annual_change": "the volume changed implausibly fast between the two sessions (a segmentation error in one "
                     "of them?)",
}


def read_session_qc(files: pd.DataFrame) -> pd.DataFrame:
    """Every session's QC table (``files``: participant_id, session_id, path) in one table; unreadable ones logged."""
    frames = []
    for row in files.itertuples():
        try:
            table = read_tsv_with_columns(row.path, QC_COLUMNS)
        except TSV_READ_ERRORS as err:
            LOGGER.error("%s %s: QC table %s not used: %s", row.participant_id, row.session_id or "", row.path, err)
            continue
        frames.append(table[QC_COLUMNS].assign(participant_id=row.participant_id, session_id=row.session_id))
    if not frames:
        return pd.DataFrame(columns=GROUP_QC_COLUMNS)
    return pd.concat(frames, ignore_index=True)[GROUP_QC_COLUMNS]


#: Settings of the thresholds file that change what the participant level measures (not only how it is judged).
MEASUREMENT_SETTINGS = ("prior_threshold", "component_min_fraction")


def rejudge_session_qc(qc: pd.DataFrame, thresholds: Mapping[str, Any]) -> pd.DataFrame:
    """The sessions' checks judged again, from their recorded values, by ``thresholds`` (the group's).

    The participant level judged each value by the thresholds of its own run;
    the group level's ``--qc-thresholds`` applies to every check, so each
    recorded value gets its status, threshold text and hint again. A skipped
    check (no value) stays skipped; a check unknown to ``thresholds`` keeps its row.
    """
    from thalamus_bidsapp.qc.session import HINTS, RULE_OF

    if qc.empty:
        return qc
    rules = thresholds["checks"]
    table = qc.copy()
    for index, row in table.iterrows():
        rule_name = RULE_OF.get(str(row["check"]), str(row["check"]))
        if rule_name not in rules:
            continue
        value = pd.to_numeric(pd.Series([row["value"]]), errors="coerce").iloc[0]
        status, text = judge(float(value), rules[rule_name])
        table.at[index, "threshold"] = text
        if status == SKIPPED:
            continue
        reason = str(row["reason"])
        hint = HINTS.get(rule_name, "")
        what = reason[: -len(f": {hint}.")] if hint and reason.endswith(f": {hint}.") else reason.rstrip(".")
        table.at[index, "status"] = status
        table.at[index, "reason"] = what + (f": {hint}." if status in (WARN, FAIL) and hint else ".")
    return table


def group_checks(volumes: pd.DataFrame, thresholds: Mapping[str, Any], *, acq_time: str | None = None,
                 time_years: str | None = None) -> pd.DataFrame:
    """The cohort outlier and longitudinal checks of every mask (columns :data:`GROUP_QC_COLUMNS`).

    Parameters
    ----------
    volumes
        The group volumes table (bilateral rows are used): participant_id,
        session_id, method, contrast, volume_ml, icv_ml, and the visit time
        columns ``acq_time`` / ``time_years`` when the dataset has them.
    """
    table = _bilateral(volumes)
    if table.empty:
        return pd.DataFrame(columns=GROUP_QC_COLUMNS)
    rows = _cohort_rows(table, thresholds) + _longitudinal_rows(table, thresholds, acq_time, time_years)
    return pd.DataFrame(rows, columns=GROUP_QC_COLUMNS)


def with_group_status(volumes: pd.DataFrame, qc: pd.DataFrame) -> pd.DataFrame:
    """``volumes`` with ``qc_status``: each mask's worst status over its session and group checks."""
    table = volumes.drop(columns=["qc_status"], errors="ignore")
    if qc.empty:
        return table.assign(qc_status=SKIPPED)
    worst = (qc.assign(session_id=qc["session_id"].fillna(""))
             .groupby(KEYS, sort=False)["status"].agg(worst_status).rename("qc_status").reset_index())
    merged = table.assign(_session=table["session_id"].fillna("")).merge(
        worst.rename(columns={"session_id": "_session"}), on=["participant_id", "_session", "method", "contrast"],
        how="left")
    merged["qc_status"] = merged["qc_status"].fillna(SKIPPED)
    return merged.drop(columns="_session")


def flagged(volumes: pd.DataFrame, level: str) -> pd.DataFrame:
    """The masks (participant_id, session_id, method, contrast, qc_status) whose status is ``level`` or worse."""
    table = volumes.drop_duplicates(KEYS)
    bad = table[[at_least(str(s), level) for s in table["qc_status"]]] if not table.empty else table
    return bad[[*KEYS, "qc_status"]].reset_index(drop=True)


def flag_reasons(qc: pd.DataFrame, masks: pd.DataFrame) -> list[str]:
    """Per flagged mask, one line: the checks that flagged it."""
    lines = []
    for row in masks.itertuples():
        mine = qc[(qc["participant_id"] == row.participant_id) & (qc["session_id"].fillna("") == (row.session_id or ""))
                  & (qc["method"] == row.method) & (qc["contrast"] == row.contrast)
                  & qc["status"].isin([WARN, FAIL])]
        checks = ", ".join(f"{c} {s}" for c, s in zip(mine["check"], mine["status"]))
        lines.append(f"{row.method} ({row.contrast}): qc_status {row.qc_status} ({checks or 'no check recorded'})")
    return lines


def _bilateral(volumes: pd.DataFrame) -> pd.DataFrame:
    if volumes.empty:
        return volumes
    rows = volumes[volumes["hemisphere"] == "bilateral"] if "hemisphere" in volumes else volumes
    return rows.drop_duplicates(KEYS).reset_index(drop=True)


def _cohort_rows(table: pd.DataFrame, thresholds: Mapping[str, Any]) -> list[dict[str, Any]]:
    rule = thresholds["checks"]["cohort_robust_z"]
    minimum = int(thresholds["min_cohort_sessions"])
    scores = cohort_outliers(table, min_sessions=minimum)
    rows = []
    for score in scores.to_dict("records"):
        status, text = judge(score["z"], rule)
        if status == SKIPPED:
            why = (f"Only {score['n']} session(s) of this method: the cohort check needs {minimum}"
                   if score["n"] < minimum else "No spread of volume / ICV among the sessions of this method")
            reason = why + "."
        else:
            reason = (f"Volume / ICV is {score['adjusted'] * 100:.3f}%, robust z {score['z']:+.1f} among the "
                      f"{score['n']} sessions of this method")
            reason += f": {_HINTS['cohort_robust_z']}." if status in (WARN, FAIL) else "."
        rows.append({**{k: score[k] for k in KEYS}, "check": "cohort_robust_z", "value": score["z"],
                     "threshold": text, "status": status, "reason": reason})
    return rows


def visit_times(table: pd.DataFrame, acq_time: str | None, time_years: str | None) -> pd.DataFrame:
    """Each session's ``visit_years`` and ``visit_rank`` (see :func:`thalamus_bidsapp.stats.longitudinal.order_visits`)."""
    sessions = table[table["session_id"].notna()]
    columns = [c for c in (acq_time, time_years) if c and c in sessions]
    sessions = sessions[[*IDS, *columns]].drop_duplicates(IDS)
    ordered = order_visits(sessions, acq_time=acq_time if acq_time in columns else None,
                           time_years=time_years if time_years in columns else None)
    return ordered[[*IDS, "visit_years", "visit_rank"]]


def _longitudinal_rows(table: pd.DataFrame, thresholds: Mapping[str, Any], acq_time: str | None,
                       time_years: str | None) -> list[dict[str, Any]]:
    rule = thresholds["checks"]["annual_change"]
    visits = visit_times(table, acq_time, time_years)
    if visits.empty:
        return []
    timed = table.merge(visits, on=IDS, how="inner")
    rows = []
    for change in annualised_changes(timed).to_dict("records"):
        status, text = judge(change["pct_per_year"], rule)
        pair = f"{change['session_bl']} to {change['session_fu']}"
        if status == SKIPPED:
            reason = (f"Visit interval from {pair} unknown (no acq_time or time_years in the sessions table), or "
                      "not positive: the change cannot be annualised.")
        else:
            reason = (f"Volume changed {change['pct_change']:+.1f}% from {pair} ({change['volume_bl']:.2f} to "
                      f"{change['volume_fu']:.2f} mL in {change['interval_years']:.2f} years), "
                      f"{change['pct_per_year']:+.1f}% per year")
            reason += f": {_HINTS['annual_change']}." if status in (WARN, FAIL) else "."
        for session in (change["session_bl"], change["session_fu"]):
            rows.append({"participant_id": change["participant_id"], "session_id": session,
                         "method": change["method"], "contrast": change["contrast"], "check": "annual_change",
                         "value": change["pct_per_year"], "threshold": text, "status": status, "reason": reason})
    return rows


def describe_columns() -> dict[str, Any]:
    """Sidecar of group/qc.tsv."""
    return dict(GROUP_QC_DESCRIPTIONS)


__all__ = ["GROUP_QC_COLUMNS", "flagged", "group_checks", "read_session_qc", "rejudge_session_qc", "with_group_status"]
