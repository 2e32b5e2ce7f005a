"""Longitudinal change: visit pairing, deltas, winsorising, ordinal EDSS change, correlations.

Deltas are follow-up minus baseline (Ibrahim et al. 2026, sections 2.3 and
2.6.3); percentage change is ``100 * delta / baseline``; the interval is in
years of 365.25 days.

References
----------
- Ibrahim et al. (2026). NeuroImage: Clinical, section 2.7.5 (longitudinal
  clinical associations and sensitivity analyses).
- Dixon, W. J. (1960). Simplified estimation from censored normal samples.
  Annals of Mathematical Statistics, 31(2), 385-391 (winsorising).
- Hyndman, R. J., & Fan, Y. (1996). Sample quantiles in statistical
  packages. The American Statistician, 50(4), 361-365 (type 7 quantiles).
- McCullagh, P. (1980). Regression models for ordinal data. Journal of the
  Royal Statistical Society B, 42(2), 109-142 (proportional odds model).

Pairwise Wilcoxon tests between methods are in
:func:`thalamus_bidsapp.stats.pairwise.pairwise_wilcoxon`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import MIN_N, check_columns
from thalamus_bidsapp.stats.ordinal import ORDINAL_COLUMNS, ordinal_logistic
from thalamus_bidsapp.stats.regression import complete_cases

LOGGER = logging.getLogger(__name__)

__all__ = [
    "DAYS_PER_YEAR",
    "EDSS_CHANGE_LEVELS",
    "MIN_N",
    "ORDINAL_COLUMNS",
    "PEARSON_COLUMNS",
    "SESSION",
    "SUBJECT",
    "WINSORIZE_METHODS",
    "describe",
    "edss_change_category",
    "interval_years",
    "order_visits",
    "ordinal_logistic",
    "paired_deltas",
    "parse_acq_time",
    "pearson",
    "select_visit_pairs",
    "winsorize",
]

#: Subject and session columns of the visit tables (BIDS names).
SUBJECT = "participant_id"
SESSION = "session_id"
#: Days in a year of :func:`interval_years`.
DAYS_PER_YEAR = 365.25
#: The categories of :func:`edss_change_category`, in order.
EDSS_CHANGE_LEVELS = ("better", "stable", "worse")
#: The rules of :func:`winsorize`.
WINSORIZE_METHODS = ("count", "percentile")


# ------------------------------------------------------------------ visit timing
def parse_acq_time(values: Sequence[object] | pd.Series) -> pd.Series:
    """Parse BIDS ``acq_time`` values (ISO 8601 date or date-time, UTC); unparseable -> NaT.

    Examples
    --------
    >>> parse_acq_time(["2020-01-01T10:00:00", "2020-03-01", "n/a"]).isna().tolist()
    [False, False, True]
    """
    series = pd.Series(values)
    parsed = pd.to_datetime(series.astype("string"), errors="coerce", format="ISO8601", utc=True)
    return pd.Series(parsed.to_numpy(), index=series.index)


def interval_years(start: pd.Series, end: pd.Series) -> pd.Series:
    """Years (of 365.25 days) from ``start`` to ``end``; both parsed with :func:`parse_acq_time`.

    Examples
    --------
    >>> interval_years(pd.Series(["2020-01-01"]), pd.Series(["2021-01-01"])).round(4).tolist()
    [1.0021]
    """
    t0 = parse_acq_time(start)
    t1 = parse_acq_time(end)
    days = (t1 - t0).dt.total_seconds() / 86400.0
    return (days / DAYS_PER_YEAR).astype(float)


def order_visits(
    sessions: pd.DataFrame,
    acq_time: str | None = None,
    time_years: str | None = None,
) -> pd.DataFrame:
    """Number each subject's sessions in time order and give each a time in years.

    Order: ``acq_time`` when every session of the subject has a parseable one,
    else ``time_years`` when all are present, else the session label
    (natural sort, so ``ses-10`` follows ``ses-9``).

    Parameters
    ----------
    sessions
        One row per (participant_id, session_id); extra columns are kept.
    acq_time, time_years
        Column names of the visit timing, or None when absent.

    Returns
    -------
    pandas.DataFrame
        ``sessions`` with ``visit_years`` (time in years on a per-subject
        origin, NaN when unknown), ``visit_time_source`` and ``visit_rank`` (0 = earliest).

    Examples
    --------
    >>> sessions = pd.DataFrame({"participant_id": ["sub-01"] * 3, "session_id": ["ses-10", "ses-2", "ses-9"]})
    >>> order_visits(sessions).sort_values("visit_rank")["session_id"].tolist()
    ['ses-2', 'ses-9', 'ses-10']
    """
    table = sessions.copy()
    table["visit_years"] = np.nan
    table["visit_time_source"] = "session label"
    if acq_time is not None and acq_time in table:
        parsed = parse_acq_time(table[acq_time])
        table["_acq"] = parsed
    else:
        table["_acq"] = pd.NaT
    years = pd.to_numeric(table[time_years], errors="coerce") if time_years and time_years in table else None
    table["_label_key"] = table[SESSION].map(_natural_key)
    parts = []
    for _, group in table.groupby(SUBJECT, sort=False):
        group = group.copy()
        acq = pd.Series(group["_acq"])
        if acq.notna().all():
            origin = acq.min()
            group["visit_years"] = ((acq - origin).dt.total_seconds() / 86400.0 / DAYS_PER_YEAR).to_numpy()
            group["visit_time_source"] = "acq_time"
            group = group.sort_values("visit_years", kind="stable")
        elif years is not None and years.loc[group.index].notna().all():
            group["visit_years"] = years.loc[group.index].to_numpy(dtype=float)
            group["visit_time_source"] = "time_years"
            group = group.sort_values("visit_years", kind="stable")
        else:
            group = group.sort_values("_label_key", kind="stable")
        group["visit_rank"] = np.arange(len(group))
        parts.append(group)
    if not parts:
        out = table.iloc[0:0].copy()
        out["visit_rank"] = pd.Series(dtype=int)
        return out.drop(columns=["_acq", "_label_key"])
    return pd.concat(parts).drop(columns=["_acq", "_label_key"])


def select_visit_pairs(ordered: pd.DataFrame, baseline: str = "first", followup: str = "next") -> pd.DataFrame:
    """Baseline and follow-up session of each subject with at least two sessions.

    Parameters
    ----------
    ordered
        Output of :func:`order_visits`.
    baseline
        ``"first"`` or a session label.
    followup
        ``"next"`` (the session after baseline), ``"last"`` or a session label.

    Returns
    -------
    pandas.DataFrame
        participant_id, session_bl, session_fu, interval_years (NaN when the
        visit times are unknown), interval_source.

    Examples
    --------
    >>> sessions = pd.DataFrame({"participant_id": ["sub-01"] * 3, "session_id": ["ses-1", "ses-2", "ses-3"],
    ...                          "years": [0.0, 1.0, 2.5]})
    >>> pairs = select_visit_pairs(order_visits(sessions, time_years="years"), "first", "last")
    >>> pairs[["session_bl", "session_fu", "interval_years"]].values.tolist()
    [['ses-1', 'ses-3', 2.5]]
    """
    rows = []
    for subject, group in ordered.sort_values([SUBJECT, "visit_rank"]).groupby(SUBJECT, sort=True):
        group = group.reset_index(drop=True)
        if baseline == "first":
            bl_pos = 0
        else:
            hits = np.flatnonzero(group[SESSION].to_numpy() == baseline)
            if not len(hits):
                continue
            bl_pos = int(hits[0])
        later = group.iloc[bl_pos + 1:]
        if later.empty:
            continue
        if followup == "next":
            fu = later.iloc[0]
        elif followup == "last":
            fu = later.iloc[-1]
        else:
            match = later[later[SESSION] == followup]
            if match.empty:
                continue
            fu = match.iloc[0]
        bl = group.iloc[bl_pos]
        source = bl["visit_time_source"] if bl["visit_time_source"] == fu["visit_time_source"] else "session label"
        interval = float(fu["visit_years"] - bl["visit_years"]) if source != "session label" else np.nan
        rows.append(
            {SUBJECT: subject, "session_bl": bl[SESSION], "session_fu": fu[SESSION],
             "interval_years": interval, "interval_source": source}
        )
    return pd.DataFrame(rows, columns=[SUBJECT, "session_bl", "session_fu", "interval_years", "interval_source"])


def paired_deltas(
    data: pd.DataFrame,
    pairs: pd.DataFrame,
    values: Sequence[str],
    by: Sequence[str] = (),
    pct: Sequence[str] = (),
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Baseline, follow-up and delta (follow-up minus baseline) of ``values`` per subject.

    Parameters
    ----------
    data
        Long table with participant_id, session_id, ``by`` and ``values``.
    pairs
        Output of :func:`select_visit_pairs`.
    values
        Columns to difference; output has ``<v>_bl``, ``<v>_fu``, ``delta_<v>``.
    by
        Extra keys (e.g. method, contrast): one output row per subject and key.
    pct
        Subset of ``values`` that also get ``pct_<v>`` = 100 * delta / baseline.
    keep
        Columns copied from the follow-up row unchanged with suffix ``_fu``
        and from the baseline with ``_bl`` (e.g. scanner).

    Examples
    --------
    >>> data = pd.DataFrame({"participant_id": ["sub-01", "sub-01"], "session_id": ["ses-1", "ses-2"],
    ...                      "volume_ml": [10.0, 9.9]})
    >>> pairs = pd.DataFrame({"participant_id": ["sub-01"], "session_bl": ["ses-1"], "session_fu": ["ses-2"]})
    >>> out = paired_deltas(data, pairs, ["volume_ml"], pct=["volume_ml"])
    >>> round(float(out["delta_volume_ml"].iloc[0]), 2), round(float(out["pct_volume_ml"].iloc[0]), 2)
    (-0.1, -1.0)
    """
    keys = [SUBJECT, *by]
    cols = list(dict.fromkeys([*keys, SESSION, *values, *keep]))
    sub = data.loc[:, cols]
    bl = pairs[[SUBJECT, "session_bl"]].merge(
        sub, left_on=[SUBJECT, "session_bl"], right_on=[SUBJECT, SESSION], how="inner"
    ).drop(columns=[SESSION])
    fu = pairs[[SUBJECT, "session_fu"]].merge(
        sub, left_on=[SUBJECT, "session_fu"], right_on=[SUBJECT, SESSION], how="inner"
    ).drop(columns=[SESSION])
    rename_bl = {v: f"{v}_bl" for v in dict.fromkeys([*values, *keep])}
    rename_fu = {v: f"{v}_fu" for v in dict.fromkeys([*values, *keep])}
    merged = bl.rename(columns=rename_bl).merge(fu.rename(columns=rename_fu), on=keys, how="inner")
    merged = pairs.merge(merged, on=[SUBJECT, "session_bl", "session_fu"], how="inner")
    for v in values:
        start = pd.to_numeric(merged[f"{v}_bl"], errors="coerce")
        end = pd.to_numeric(merged[f"{v}_fu"], errors="coerce")
        merged[f"delta_{v}"] = end - start
        if v in pct:
            with np.errstate(divide="ignore", invalid="ignore"):
                merged[f"pct_{v}"] = np.where(start != 0, 100.0 * (end - start) / start, np.nan)
    return merged.reset_index(drop=True)


# ------------------------------------------------------------------ winsorising
def winsorize(
    values: Sequence[float] | pd.Series | np.ndarray,
    limits: tuple[float, float] = (0.01, 0.01),
    *,
    method: str = "count",
) -> np.ndarray:
    """Winsorise: pull the lowest and highest fractions in to a cut-off. Missing values stay missing.

    Parameters
    ----------
    values
        The numbers.
    limits
        Fractions cut at the bottom and at the top (0.05, 0.05: 5 % each side).
    method
        ``"count"`` (default): of the n non-missing values, ``int(n * lower)``
        smallest are set to the next smallest value and ``int(n * upper)``
        largest to the next largest (Dixon 1960), exactly the rule of
        :func:`scipy.stats.mstats.winsorize` (``int`` of the floating-point
        product, so n = 100 and 0.29 clip 28 values, as ``100 * 0.29`` is
        28.999...). ``"percentile"``: values are clipped to the ``lower`` and
        ``1 - upper`` quantiles, interpolated linearly (Hyndman & Fan 1996
        type 7, R's ``quantile`` default and ``DescTools::Winsorize``), so the
        cut-offs need not be data values.

    Examples
    --------
    The 90% winsorisation example of Wikipedia ("Winsorizing"): -40 becomes -5
    and 1053 becomes 101.

    >>> x = [92, 19, 101, 58, 1053, 91, 26, 78, 10, 13, -40, 101, 86, 85, 15, 89, 89, 28, -5, 41]
    >>> float(winsorize(x, (0.05, 0.05)).mean())
    55.65

    With percentiles, 1..10 at 10 % each side: the type-7 quantiles are
    1 + 0.1 * 9 = 1.9 and 1 + 0.9 * 9 = 9.1.

    >>> winsorize(range(1, 11), (0.1, 0.1), method="percentile").round(6).tolist()
    [1.9, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.1]
    """
    if method not in WINSORIZE_METHODS:
        raise ValueError(f"winsorize: method must be one of {WINSORIZE_METHODS}, not {method!r}")
    arr = np.asarray(values, dtype=float).copy()
    ok = np.isfinite(arr)
    n = int(ok.sum())
    lower, upper = limits
    if not (0 <= lower < 1 and 0 <= upper < 1 and lower + upper < 1):
        raise ValueError(f"winsorize: limits {limits} must be fractions in [0, 1) that add up to less than 1")
    if n == 0:
        return arr
    if method == "percentile":
        low_value, high_value = np.quantile(arr[ok], [lower, 1 - upper])
        arr[ok] = np.clip(arr[ok], low_value, high_value)
        return arr
    sorted_vals = np.sort(arr[ok])
    # scipy.stats.mstats.winsorize: lowidx = int(low_limit * n), upidx = n - int(n * up_limit)
    k_low = int(lower * n)
    k_high = int(n * upper)
    if k_low + k_high >= n:
        raise ValueError(f"winsorising limits {limits} leave no values of {n}")
    low_value = sorted_vals[k_low]
    high_value = sorted_vals[n - 1 - k_high]
    arr[ok] = np.clip(arr[ok], low_value, high_value)
    return arr


# --------------------------------------------------------------- EDSS categories
def edss_change_category(
    delta: Sequence[float] | pd.Series,
    min_change: float | Sequence[float] | pd.Series = 0.5,
) -> pd.Series:
    """Ordered categories of EDSS change: better < stable < worse.

    ``worse`` when delta >= ``min_change``, ``better`` when delta <=
    -``min_change``, ``stable`` otherwise; ``min_change`` may be one value or
    one per subject (e.g. baseline-dependent thresholds). Missing stays missing.

    Examples
    --------
    >>> edss_change_category([1.0, 0.0, -0.5]).tolist()
    ['worse', 'stable', 'better']
    """
    d = pd.Series(delta, dtype=float)
    threshold = np.broadcast_to(np.asarray(min_change, dtype=float), d.shape)
    # EDSS steps are 0.5 points; the tolerance keeps 0.5 - 1e-12 from counting as stable
    eps = 1e-9
    labels = np.where(
        ~np.isfinite(d), None,
        np.where(d >= threshold - eps, "worse", np.where(d <= -threshold + eps, "better", "stable")),
    )
    return pd.Series(pd.Categorical(labels, categories=list(EDSS_CHANGE_LEVELS), ordered=True), index=d.index)


# ------------------------------------------------------------------ correlation
#: Columns of the :func:`pearson` row, in order.
PEARSON_COLUMNS = ["x", "y", "n", "n_excluded", "r", "ci_low", "ci_high", "p", "note"]


def pearson(data: pd.DataFrame, x: str, y: str, *, alpha: float = 0.05) -> pd.DataFrame:
    """Pearson correlation with Fisher-z confidence interval, on complete pairs.

    r and its p-value need :data:`MIN_N` complete pairs with variation; the
    Fisher-z interval (standard error 1 / sqrt(n - 3)) needs one more.

    Returns
    -------
    pandas.DataFrame
        One row: x, y, n, n_excluded, r, ci_low, ci_high, p, note.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1.0, 2, 3, 4, 5, None], "b": [2.0, 4, 5, 4, 5, 1]})
    >>> row = pearson(df, "a", "b").iloc[0]
    >>> int(row["n"]), int(row["n_excluded"]), round(float(row["r"]), 3)
    (5, 1, 0.775)
    """
    check_columns(data, [x, y], "pearson")
    used, n_excluded = complete_cases(data, [x, y])
    row = {"x": x, "y": y, "n": len(used), "n_excluded": n_excluded, "r": np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "note": ""}
    a = used[x].to_numpy(dtype=float)
    b = used[y].to_numpy(dtype=float)
    if len(used) < MIN_N or np.ptp(a) == 0 or np.ptp(b) == 0:
        row["note"] = f"fewer than {MIN_N} complete pairs or no variation"
        return pd.DataFrame([row], columns=PEARSON_COLUMNS)
    res = stats.pearsonr(a, b)
    row.update(r=float(res.statistic), p=float(res.pvalue))
    if len(used) > MIN_N:
        ci = res.confidence_interval(confidence_level=1 - alpha)
        row.update(ci_low=float(ci.low), ci_high=float(ci.high))
    else:
        row["note"] = f"confidence interval needs more than {MIN_N} complete pairs"
    return pd.DataFrame([row], columns=PEARSON_COLUMNS)


# ------------------------------------------------------------------ descriptives
def describe(data: pd.DataFrame, value: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """n, mean, SD, median, quartiles, min and max of ``value`` (overall or per ``by`` group).

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["x", "x", "y"], "v": [1.0, 3.0, None]})
    >>> describe(df, "v", ["g"])[["g", "n", "mean", "n_missing"]].values.tolist()
    [['x', 2, 2.0, 0], ['y', 0, nan, 1]]
    """
    def summary(series: pd.Series) -> dict[str, float]:
        s = pd.to_numeric(series, errors="coerce").dropna()
        return {
            "n": int(len(s)), "n_missing": int(series.isna().sum()),
            "mean": s.mean() if len(s) else np.nan, "sd": s.std(ddof=1) if len(s) > 1 else np.nan,
            "median": s.median() if len(s) else np.nan, "q1": s.quantile(0.25) if len(s) else np.nan,
            "q3": s.quantile(0.75) if len(s) else np.nan, "min": s.min() if len(s) else np.nan,
            "max": s.max() if len(s) else np.nan,
        }

    if not by:
        return pd.DataFrame([{"variable": value, **summary(data[value])}])
    rows = []
    for key, group in data.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "variable": value, **summary(group[value])})
    return pd.DataFrame(rows)


def _natural_key(label: object) -> tuple:
    text = "" if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))
