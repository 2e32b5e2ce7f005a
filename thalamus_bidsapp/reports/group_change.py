"""The group report's change section, from ``group/longitudinal_change.tsv`` alone.

The table has one row per subject, method, side and pair of consecutive
sessions, in one of two modes: ``longitudinal`` (one template mask per
subject, the change by Jacobian integration) and ``cross-sectional`` (the
difference of the two sessions' own masks). The section reads the
whole-thalamus rows: per method the median change over its pairs, and the
two modes compared only on the pairs both measured (paired), never as
medians over different sets of pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thalamus_bidsapp.reports.palette import method_order

STEM = "longitudinal_change"
FIGURE = "session_change"
SECTION = ("change", "Change between sessions", "Change", (FIGURE,), (STEM,))
TITLE = "Thalamic volume across sessions, per subject and method"
CAPTION = ("Left: whole-thalamus volume at each session of each subject, one line per subject and method, "
           "against the years since the subject's first session (in session order when a subject has no "
           "acquisition dates). Right: annualized change (% per year) of each pair of consecutive sessions, one box "
           "per method (its % change when no pair has an interval; pairs without one are left out otherwise). "
           "Longitudinal mode where the table has it, else cross-sectional.")
_PAIR = ["participant_id", "method", "session_from", "session_to"]
_NUMBERS = ("volume_from_ml", "volume_to_ml", "change_ml", "change_pct", "interval_years", "annualized_change_pct")


def bilateral_changes(table: pd.DataFrame | None) -> pd.DataFrame:
    """The whole-thalamus rows with numeric values, or an empty table when there is nothing to read."""
    if table is None or not {*_PAIR, "change_pct"} <= set(table):
        return pd.DataFrame(columns=[*_PAIR, "mode", *_NUMBERS])
    rows = table
    if "hemisphere" in rows:
        rows = rows[rows["hemisphere"].astype(str).isin(["bilateral", "both"])]
    rows = rows.assign(**{c: pd.to_numeric(rows[c], errors="coerce") for c in _NUMBERS if c in rows},
                       mode=rows["mode"].astype(str) if "mode" in rows else "cross-sectional")
    for column in _PAIR:
        rows[column] = rows[column].astype(str)
    return rows.dropna(subset=["change_pct"])


def shown_mode(changes: pd.DataFrame) -> pd.DataFrame:
    """The rows the figure and the per-method sentence read: longitudinal where a method has it."""
    longitudinal = changes["mode"] == "longitudinal"
    has_long = changes.groupby("method")["mode"].transform(lambda m: (m == "longitudinal").any())
    return changes[longitudinal | ~has_long]


def change_lead(changes: pd.DataFrame) -> list[str]:
    """Per method the median change of its pairs; the two modes compared, paired, where both exist."""
    if changes.empty:
        return []
    shown = shown_mode(changes)
    n_subjects = shown["participant_id"].nunique()
    parts = []
    for method in method_order(shown["method"]):
        rows = shown[shown["method"] == method]
        annual = rows["annualized_change_pct"].dropna() if "annualized_change_pct" in rows else pd.Series([])
        text = f"{method} ({rows['mode'].iloc[0]}) {rows['change_pct'].median():+.2f}%"
        if len(annual):
            text += f", {annual.median():+.2f}%/year"
        parts.append(text + f" (n = {len(rows)} pair(s))")
    lead = [f"Median whole-thalamus change between consecutive sessions of {n_subjects} subject(s): "
            + "; ".join(parts) + "."]
    unknown = shown["interval_years"].isna().sum() if "interval_years" in shown else len(shown)
    if unknown:
        lead.append(f"{int(unknown)} pair(s) have no interval (no acquisition date in sessions.tsv, the T1w sidecar "
                    "or scans.tsv): their annualized change is empty.")
    paired = changes.pivot_table(index=_PAIR, columns="mode", values="change_pct", aggfunc="mean")
    if {"longitudinal", "cross-sectional"} <= set(paired.columns):
        both = paired.dropna(subset=["longitudinal", "cross-sectional"])
        if len(both):
            difference = both["longitudinal"] - both["cross-sectional"]
            per_method = difference.groupby(level="method").median()
            lead.append("Paired on the same pairs of sessions, longitudinal minus cross-sectional change: "
                        + "; ".join(f"{m} {per_method[m]:+.2f} percentage points (n = "
                                    f"{int((difference.index.get_level_values('method') == m).sum())})"
                                    for m in method_order(per_method.index)) + ".")
    return lead


def change_section(table: pd.DataFrame | None) -> tuple[list[str], str | None]:
    """(lead sentences, why not run or None) of the change section."""
    changes = bilateral_changes(table)
    if changes.empty:
        return [], ("Not run: no longitudinal change table (group/longitudinal_change.tsv is written when a subject "
                    "has two or more sessions and the participant level ran without --longitudinal off).")
    return change_lead(changes), None


def session_volumes(changes: pd.DataFrame) -> pd.DataFrame:
    """Per subject, method and session: the volume, the session's order and the time since the first session.

    ``years`` is empty unless every pair of the subject has an interval
    (``dated``). A session's volume is its
    value in the pair where it comes first, the last session's from the last
    pair (as the chain of pairs reads).
    """
    rows = []
    for (subject, method), pairs in shown_mode(changes).groupby(["participant_id", "method"], sort=False):
        intervals = pairs["interval_years"].to_numpy(float) if "interval_years" in pairs \
            else np.full(len(pairs), np.nan)
        dated = bool(np.isfinite(intervals).all())
        years = np.concatenate([[0.0], np.cumsum(intervals)]) if dated else np.full(len(pairs) + 1, np.nan)
        sessions = [*pairs["session_from"], pairs["session_to"].iloc[-1]]
        volumes = [*pairs["volume_from_ml"], pairs["volume_to_ml"].iloc[-1]]
        rows += [{"participant_id": subject, "method": method, "session_id": s, "order": i + 1, "years": t,
                  "volume_ml": v, "dated": dated} for i, (s, t, v) in enumerate(zip(sessions, years, volumes))]
    return pd.DataFrame(rows, columns=["participant_id", "method", "session_id", "order", "years", "volume_ml",
                                       "dated"])
