"""Tests of a batch (site or scanner) effect on one measurement, adjusted for protected covariates.

Used before and after harmonisation (:mod:`thalamus_bidsapp.stats.harmonization`)
to show what it removed. Each row of the table is one batch:

- ``n``, ``mean``, ``variance``: the batch's sessions and the raw values' mean
  and variance (ddof 1);
- ``resid_mean``, ``resid_variance``: the same for the residuals of the
  covariate model (the value less the protected covariates' effects, fitted
  on every batch together);
- ``p_anova``: F test of the batch term in ``value ~ covariates + batch``
  against ``value ~ covariates`` (least squares; repeated sessions of a
  subject are treated as independent, so with them the p-value is a
  description, not an exact test);
- ``p_kruskal``: Kruskal-Wallis test of the covariate-model residuals across batches;
- ``p_levene``: Brown-Forsythe (median-centred Levene) test of equal variance
  of those residuals across batches (the multiplicative effect).

The three p-values are the same on every row of one measurement.

References
----------
- Kruskal, W. H., Wallis, W. A. (1952). Use of ranks in one-criterion variance
  analysis. JASA, 47(260), 583-621.
- Brown, M. B., Forsythe, A. B. (1974). Robust tests for the equality of
  variances. JASA, 69(346), 364-367.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import check_columns, ordered_levels
from thalamus_bidsapp.stats.harmonization import covariate_matrix

__all__ = ["BATCH_EFFECT_COLUMNS", "batch_effect_tests"]

BATCH_EFFECT_COLUMNS = ("batch", "n", "mean", "variance", "resid_mean", "resid_variance", "p_anova", "p_kruskal",
                        "p_levene")


def batch_effect_tests(data: pd.DataFrame, value: str, batch: str,
                       encoding: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per batch: size, mean and variance of ``value`` and its residuals; the batch-effect tests.

    Parameters
    ----------
    data
        One row per session.
    value
        The measurement (numeric column).
    batch
        Column of batch labels.
    encoding
        The protected covariates, as
        :func:`~thalamus_bidsapp.stats.harmonization.encode_covariates` returns
        them (None: no covariates, the tests compare the raw values).

    Returns
    -------
    DataFrame
        :data:`BATCH_EFFECT_COLUMNS`, one row per batch with a usable value;
        p-values NaN when fewer than two batches have two values.

    Examples
    --------
    >>> data = pd.DataFrame({"site": ["a"] * 3 + ["b"] * 3, "x": [1.0, 2, 3, 11, 12, 13]})
    >>> table = batch_effect_tests(data, "x", "site")
    >>> table[["batch", "n", "mean", "variance"]].values.tolist()
    [['a', 3, 2.0, 1.0], ['b', 3, 12.0, 1.0]]
    >>> bool(table["p_anova"].iloc[0] < 0.001)
    True
    """
    check_columns(data, [value, batch], "batch_effect_tests")
    encoding = encoding or {"continuous": [], "categorical": {}, "smooth": {}}
    covars, _ = covariate_matrix(data, encoding)
    y = pd.to_numeric(data[value], errors="coerce").to_numpy(float)
    ok = np.isfinite(y) & data[batch].notna().to_numpy() & np.isfinite(covars).all(axis=1)
    y, covars, labels = y[ok], covars[ok], data.loc[ok, batch].astype(object).to_numpy()
    levels = ordered_levels(pd.Series(labels, dtype=object))
    base = np.column_stack([np.ones(len(y)), covars])
    resid = y - base @ np.linalg.lstsq(base, y, rcond=None)[0] if len(y) else y
    rows = []
    for level in levels:
        sel = labels == level
        rows.append({"batch": level, "n": int(sel.sum()), "mean": _mean(y[sel]), "variance": _var(y[sel]),
                     "resid_mean": _mean(resid[sel]), "resid_variance": _var(resid[sel])})
    table = pd.DataFrame(rows, columns=list(BATCH_EFFECT_COLUMNS[:6]))
    groups = [resid[labels == level] for level in levels if (labels == level).sum() >= 2]
    testable = len(groups) >= 2
    table["p_anova"] = _anova_p(y, base, labels, levels) if testable else np.nan
    table["p_kruskal"] = _safe_p(stats.kruskal, groups) if testable else np.nan
    table["p_levene"] = _safe_p(lambda *g: stats.levene(*g, center="median"), groups) if testable else np.nan
    return table


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _var(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if len(x) >= 2 else float("nan")


def _anova_p(y: np.ndarray, base: np.ndarray, labels: np.ndarray, levels: list[object]) -> float:
    """F test of the batch indicators added to the covariate model."""
    full = np.column_stack([base, *[(labels == level).astype(float) for level in levels[1:]]])
    rss0 = float(((y - base @ np.linalg.lstsq(base, y, rcond=None)[0]) ** 2).sum())
    rss1 = float(((y - full @ np.linalg.lstsq(full, y, rcond=None)[0]) ** 2).sum())
    df1 = np.linalg.matrix_rank(full) - np.linalg.matrix_rank(base)
    df2 = len(y) - np.linalg.matrix_rank(full)
    if df1 <= 0 or df2 <= 0:
        return float("nan")
    if rss1 <= 0:
        return 0.0 if rss0 > 0 else 1.0
    f = max((rss0 - rss1) / df1 / (rss1 / df2), 0.0)
    return float(stats.f.sf(f, df1, df2))


def _safe_p(test, groups: list[np.ndarray]) -> float:
    try:
        return float(test(*groups).pvalue)
    except ValueError:  # every value identical
        return float("nan")
