"""Change between consecutive sessions: the columns of the longitudinal change table.

``change_ml = volume_to - volume_from``; ``change_pct = 100 * change_ml /
volume_from``; ``interval_years`` is the time between the acquisitions in
years of 365.25 days; ``annualized_change_pct = change_pct /
interval_years`` (linear, like SIENA's annualized PBVC), empty when the
interval is unknown or not positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

__all__ = ["CHANGE_COLUMNS", "CHANGE_COLUMN_DESCRIPTIONS", "DAYS_PER_YEAR", "annualized_change_pct", "change_pct", "change_rows",
           "interval_years", "order_sessions"]

#: The columns of ``*_desc-longitudinal_volumes.tsv`` and ``group/longitudinal_change.tsv``, in order.
CHANGE_COLUMNS = ("participant_id", "method", "hemisphere", "session_from", "session_to", "volume_from_ml",
                  "volume_to_ml", "change_ml", "change_pct", "interval_years", "annualized_change_pct", "mode")

#: Column descriptions of the change tables (their JSON sidecars).
CHANGE_COLUMN_DESCRIPTIONS = {
    "participant_id": "Subject (sub-<label>)",
    "method": "Segmentation method",
    "hemisphere": "left, right or bilateral",
    "session_from": "Earlier session of the pair (ses-<label>)",
    "session_to": "Later session of the pair (ses-<label>)",
    "volume_from_ml": {"Description": "Thalamic volume at session_from", "Units": "mL"},
    "volume_to_ml": {"Description": "Thalamic volume at session_to", "Units": "mL"},
    "change_ml": {"Description": "volume_to_ml - volume_from_ml", "Units": "mL"},
    "change_pct": {"Description": "100 * change_ml / volume_from_ml", "Units": "%"},
    "interval_years": {"Description": "Time between the acquisitions (years of 365.25 days); n/a when a date is "
                                      "unknown", "Units": "year"},
    "annualized_change_pct": {"Description": "change_pct / interval_years; n/a without an interval",
                              "Units": "%/year"},
    "mode": "longitudinal (one within-subject template: its mask with change by Jacobian integration, or a "
            "method's own longitudinal stream such as FreeSurfer's -base/-long) or cross-sectional (the difference "
            "of the two sessions' own masks)",
}

DAYS_PER_YEAR = 365.25


def interval_years(start: datetime | None, end: datetime | None) -> float | None:
    """Years from ``start`` to ``end`` (None when either is unknown).

    >>> round(interval_years(datetime(2020, 1, 1), datetime(2022, 1, 1)), 3)
    2.001
    """
    if start is None or end is None:
        return None
    return (end - start).total_seconds() / (DAYS_PER_YEAR * 86400.0)


def change_pct(volume_from: float, volume_to: float) -> float:
    """Percentage change from ``volume_from`` to ``volume_to`` (NaN when the first is not positive).

    >>> round(change_pct(8.0, 7.9), 4)
    -1.25
    """
    if not volume_from > 0 or math.isnan(volume_to):
        return float("nan")
    return 100.0 * (volume_to - volume_from) / volume_from


def annualized_change_pct(pct: float, years: float | None) -> float | None:
    """``pct / years``; None when the interval is unknown or not positive (no rate can be given).

    >>> annualized_change_pct(-1.5, 2.0)
    -0.75
    >>> annualized_change_pct(-1.5, None) is None
    True
    """
    if years is None or not years > 0 or math.isnan(pct):
        return None
    return pct / years


def change_rows(
    participant_id: str,
    method: str,
    mode: str,
    volumes: pd.DataFrame,
    sessions: Sequence[str],
    intervals: Sequence[float | None],
) -> pd.DataFrame:
    """One row per hemisphere and consecutive session pair.

    Parameters
    ----------
    volumes
        Columns ``session``, ``hemisphere``, ``volume_ml`` (a missing pair is skipped).
    sessions
        The sessions in time order.
    intervals
        ``intervals[i]``: years from ``sessions[i]`` to ``sessions[i + 1]`` (None when unknown).

    Examples
    --------
    >>> vols = pd.DataFrame({"session": ["1", "2"], "hemisphere": ["bilateral"] * 2, "volume_ml": [8.0, 7.9]})
    >>> row = change_rows("sub-01", "meshnet", "longitudinal", vols, ["1", "2"], [2.0]).iloc[0]
    >>> round(float(row.change_ml), 2), round(float(row.annualized_change_pct), 3)
    (-0.1, -0.625)
    """
    if len(intervals) != max(len(sessions) - 1, 0):
        raise ValueError("one interval is needed per consecutive pair of sessions")
    lookup = {(row.session, row.hemisphere): float(row.volume_ml) for row in volumes.itertuples()}
    hemispheres = [h for h in ("left", "right", "bilateral") if h in set(volumes["hemisphere"])]
    rows = []
    for (first, second), years in zip(zip(sessions[:-1], sessions[1:]), intervals):
        for hemisphere in hemispheres:
            if (first, hemisphere) not in lookup or (second, hemisphere) not in lookup:
                continue
            before, after = lookup[first, hemisphere], lookup[second, hemisphere]
            pct = change_pct(before, after)
            rows.append({"participant_id": participant_id, "method": method, "hemisphere": hemisphere,
                         "session_from": first, "session_to": second, "volume_from_ml": before,
                         "volume_to_ml": after, "change_ml": after - before, "change_pct": pct,
                         "interval_years": years, "annualized_change_pct": annualized_change_pct(pct, years),
                         "mode": mode})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def order_sessions(dates: dict[str, datetime | None]) -> tuple[list[str], str]:
    """The sessions in time order and how they were ordered.

    By acquisition date when every session has one (ties by label), else by
    label (natural order: ``ses-2`` before ``ses-10``), with the reason.

    >>> order_sessions({"10": None, "2": None})
    (['2', '10'], 'ordered by session label: no acquisition date for 2, 10')
    """
    labels = sorted(dates, key=_natural_key)
    missing = [label for label in labels if dates[label] is None]
    if missing:
        return labels, f"ordered by session label: no acquisition date for {', '.join(missing)}"
    ordered = sorted(labels, key=lambda label: (dates[label], _natural_key(label)))
    note = "ordered by acquisition date"
    if ordered != labels:
        note += " (not the order of the session labels)"
    return ordered, note


def _natural_key(label: str) -> list:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]
