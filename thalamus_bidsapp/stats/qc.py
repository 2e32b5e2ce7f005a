"""QC statuses and the group-level QC statistics: pure numbers and DataFrames.

A check's value is judged against a rule (``kind`` min, max, range or abs_max,
with a ``warn`` and a ``fail`` level) into ``pass``, ``warn`` or ``fail``;
``skipped`` marks a check that could not be computed. The cohort outlier score
is the robust z of the ICV-adjusted volume (median and MAD scaled by 1.4826,
so it matches the SD for normal data); the longitudinal check is the
annualised % change between consecutive sessions of a subject.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: The statuses of a check.
PASS, WARN, FAIL, SKIPPED = "pass", "warn", "fail", "skipped"
#: Statuses from best to worst; ``skipped`` says nothing about the mask, so it ranks below pass.
STATUS_ORDER = (SKIPPED, PASS, WARN, FAIL)
#: MAD of a normal distribution is 0.6745 SD; this scales it to the SD.
MAD_TO_SD = 1.4826
#: The kinds of rule :func:`judge` understands.
RULE_KINDS = ("min", "max", "range", "abs_max")

__all__ = ["FAIL", "MAD_TO_SD", "PASS", "RULE_KINDS", "SKIPPED", "STATUS_ORDER", "WARN", "annualised_changes",
           "at_least", "cohort_outliers", "judge", "robust_z", "threshold_text", "worst_status"]


def worst_status(statuses: Iterable[str]) -> str:
    """The worst of ``statuses`` (fail > warn > pass > skipped); ``skipped`` for none.

    Examples
    --------
    >>> worst_status(["pass", "skipped", "warn"])
    'warn'
    """
    ranks = [STATUS_ORDER.index(s) for s in statuses if s in STATUS_ORDER]
    return STATUS_ORDER[max(ranks)] if ranks else SKIPPED


def at_least(status: str, level: str) -> bool:
    """Whether ``status`` is ``level`` or worse (``warn`` includes ``fail``).

    Examples
    --------
    >>> at_least("fail", "warn"), at_least("pass", "warn")
    (True, False)
    """
    return STATUS_ORDER.index(status) >= STATUS_ORDER.index(level)


def judge(value: float, rule: Mapping[str, Any]) -> tuple[str, str]:
    """The status of ``value`` under ``rule``, and the rule as text for the table's ``threshold`` column.

    Examples
    --------
    >>> judge(0.45, {"kind": "min", "warn": 0.7, "fail": 0.5})
    ('fail', 'warn < 0.7, fail < 0.5')
    >>> judge(1.1, {"kind": "range", "warn": [0.8, 1.25], "fail": [0.65, 1.55]})[0]
    'pass'
    """
    kind, warn, fail = rule["kind"], rule["warn"], rule["fail"]
    text = threshold_text(rule)
    if value is None or not np.isfinite(value):
        return SKIPPED, text
    if kind == "min":
        bad = (value < fail, value < warn)
    elif kind == "max":
        bad = (value > fail, value > warn)
    elif kind == "abs_max":
        bad = (abs(value) > fail, abs(value) > warn)
    elif kind == "range":
        bad = (not fail[0] <= value <= fail[1], not warn[0] <= value <= warn[1])
    else:
        raise ValueError(f"unknown rule kind {kind!r}")
    return (FAIL if bad[0] else WARN if bad[1] else PASS), text


def threshold_text(rule: Mapping[str, Any]) -> str:
    """A rule in words (the value is flagged beyond these).

    Examples
    --------
    >>> threshold_text({"kind": "abs_max", "warn": 3.5, "fail": 5})
    'warn |x| > 3.5, fail |x| > 5'
    """
    kind, warn, fail = rule["kind"], rule["warn"], rule["fail"]
    if kind == "min":
        return f"warn < {_g(warn)}, fail < {_g(fail)}"
    if kind == "max":
        return f"warn > {_g(warn)}, fail > {_g(fail)}"
    if kind == "abs_max":
        return f"warn |x| > {_g(warn)}, fail |x| > {_g(fail)}"
    return f"warn outside {_g(warn[0])}-{_g(warn[1])}, fail outside {_g(fail[0])}-{_g(fail[1])}"


def _g(number: float) -> str:
    return f"{float(number):g}"


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 MAD) of the finite values; NaN where undefined (MAD 0, or no value).

    Examples
    --------
    >>> robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0])).round(3).tolist()
    [-1.349, -0.674, 0.0, 0.674, 65.426]
    """
    values = pd.to_numeric(values, errors="coerce").astype(float)
    finite = values[np.isfinite(values)]
    if finite.empty:
        return pd.Series(np.nan, index=values.index)
    median = float(finite.median())
    mad = float((finite - median).abs().median()) * MAD_TO_SD
    if mad == 0:
        return pd.Series(np.nan, index=values.index)
    return (values - median) / mad


def cohort_outliers(volumes: pd.DataFrame, *, by: tuple[str, ...] = ("method", "contrast"),
                    min_sessions: int = 5) -> pd.DataFrame:
    """Robust z of the ICV-adjusted volume (``volume_ml / icv_ml``) within each method and contrast.

    Parameters
    ----------
    volumes
        One row per session and mask: participant_id, session_id, the ``by``
        columns, volume_ml and icv_ml.
    min_sessions
        Groups with fewer sessions get NaN (a median and MAD need a cohort).

    Returns
    -------
    pandas.DataFrame
        The id and ``by`` columns, ``adjusted`` (volume / ICV), ``z`` and ``n`` (sessions in the group).

    Examples
    --------
    >>> v = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(5)], "session_id": "ses-1",
    ...                   "method": "m", "contrast": "T1w", "volume_ml": [9.0, 9.3, 9.6, 9.9, 18.0],
    ...                   "icv_ml": 1500.0})
    >>> cohort_outliers(v)["z"].round(2).tolist()
    [-1.35, -0.67, 0.0, 0.67, 18.89]
    """
    keys = ["participant_id", "session_id", *by]
    table = volumes[[*keys, "volume_ml", "icv_ml"]].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        table["adjusted"] = pd.to_numeric(table["volume_ml"], errors="coerce") / pd.to_numeric(
            table["icv_ml"], errors="coerce")
    table.loc[~np.isfinite(table["adjusted"]), "adjusted"] = np.nan
    grouped = table.groupby(list(by), dropna=False, sort=False)["adjusted"]
    table["n"] = grouped.transform("count").astype(int)
    table["z"] = grouped.transform(robust_z)
    table.loc[table["n"] < min_sessions, "z"] = np.nan
    return table[[*keys, "adjusted", "z", "n"]].reset_index(drop=True)


def annualised_changes(volumes: pd.DataFrame, *, by: tuple[str, ...] = ("method", "contrast")) -> pd.DataFrame:
    """% volume change per year between consecutive sessions of each subject, per method and contrast.

    Parameters
    ----------
    volumes
        participant_id, session_id, ``visit_years`` (time of the visit in
        years on a per-subject origin, NaN when unknown), ``visit_rank``
        (0 = earliest), the ``by`` columns and volume_ml.

    Returns
    -------
    pandas.DataFrame
        participant_id, session_bl, session_fu, the ``by`` columns,
        volume_bl, volume_fu, interval_years, pct_change (``100 (fu - bl) / bl``)
        and pct_per_year (NaN when the interval is unknown or not positive).

    Examples
    --------
    >>> v = pd.DataFrame({"participant_id": ["sub-1"] * 2, "session_id": ["ses-1", "ses-2"],
    ...                   "visit_years": [0.0, 2.0], "visit_rank": [0, 1], "method": ["m"] * 2,
    ...                   "contrast": ["T1w"] * 2, "volume_ml": [10.0, 9.0]})
    >>> annualised_changes(v)["pct_per_year"].tolist()
    [-5.0]
    """
    columns = ["participant_id", "session_bl", "session_fu", *by, "volume_bl", "volume_fu", "interval_years",
               "pct_change", "pct_per_year"]
    rows = []
    ordered = volumes.sort_values(["participant_id", *by, "visit_rank"], kind="stable")
    for key, group in ordered.groupby(["participant_id", *by], dropna=False, sort=True):
        records = group.to_dict("records")
        for before, after in zip(records, records[1:]):
            bl, fu = float(before["volume_ml"]), float(after["volume_ml"])
            interval = float(after["visit_years"]) - float(before["visit_years"])
            pct = 100.0 * (fu - bl) / bl if bl > 0 else np.nan
            per_year = pct / interval if np.isfinite(interval) and interval > 0 else np.nan
            rows.append({"participant_id": key[0], "session_bl": before["session_id"],
                         "session_fu": after["session_id"], **dict(zip(by, key[1:])), "volume_bl": bl,
                         "volume_fu": fu, "interval_years": interval, "pct_change": pct, "pct_per_year": per_year})
    return pd.DataFrame(rows, columns=columns)
