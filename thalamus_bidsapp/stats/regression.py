"""Ordinary least squares for one term of interest, with the HC3 rule, and FDR control.

Pingouin style: a DataFrame in, a one-row DataFrame out with named columns, so
the rows of a family of models (outcomes x methods) concatenate into one table.

References
----------
- MacKinnon, J. G., & White, H. (1985). Some heteroskedasticity-consistent
  covariance matrix estimators with improved finite sample properties.
  Journal of Econometrics, 29(3), 305-325 (HC3).
- Long, J. S., & Ervin, L. H. (2000). Using heteroscedasticity consistent
  standard errors in the linear regression model. The American Statistician,
  54(3), 217-224 (HC3 with t tests in small samples).
- Breusch, T. S., & Pagan, A. R. (1979). A simple test for heteroscedasticity
  and random coefficient variation. Econometrica, 47(5), 1287-1294; Koenker,
  R. (1981). A note on studentizing a test for heteroscedasticity. Journal of
  Econometrics, 17(1), 107-112.
- Benjamini, Y., & Hochberg, Y. (1995). Controlling the false discovery rate.
  Journal of the Royal Statistical Society B, 57(1), 289-300.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.diagnostic import het_breuschpagan

from thalamus_bidsapp.stats.multiplicity import p_adjust

LOGGER = logging.getLogger(__name__)

OLS_COLUMNS = [
    "term", "beta", "se", "ci_low", "ci_high", "t", "p", "r2", "n", "n_excluded", "hc3", "bp_p", "note",
]


def zscore(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    """Standardise to mean 0 and SD 1 (sample SD, ddof=1), ignoring missing values.

    A constant input gives zeros rather than NaN, so a covariate without
    spread simply carries no information instead of breaking a model.
    """
    arr = np.asarray(values, dtype=float)
    mean = np.nanmean(arr) if np.isfinite(arr).any() else np.nan
    sd = np.nanstd(arr, ddof=1) if np.isfinite(arr).sum() > 1 else np.nan
    if not np.isfinite(sd) or sd == 0:
        return np.where(np.isfinite(arr), 0.0, np.nan)
    return (arr - mean) / sd


def design_matrix(
    data: pd.DataFrame,
    x: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    constant: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Numeric design matrix: [const], ``x``, covariates; categorical ones dummy coded.

    Rows must already be complete. A categorical covariate's first level
    (sorted) is the reference. Covariates without variation in ``data`` are
    left out, because they are collinear with the intercept; their names are
    returned so callers can report them.

    Returns
    -------
    X, dropped
        The design matrix (index of ``data``) and the covariates left out.
    """
    columns: dict[str, pd.Series] = {}
    dropped: list[str] = []
    if constant:
        columns["const"] = pd.Series(1.0, index=data.index)
    columns[x] = pd.to_numeric(data[x]).astype(float)
    for name in covar:
        if name == x:
            continue
        values = data[name]
        if name in categorical:
            levels = sorted(pd.unique(values.astype(str)))
            if len(levels) < 2:
                dropped.append(name)
                continue
            for level in levels[1:]:
                columns[f"{name}[{level}]"] = (values.astype(str) == level).astype(float)
        else:
            numeric = pd.to_numeric(values).astype(float)
            if numeric.nunique() < 2:
                dropped.append(name)
                continue
            columns[name] = numeric
    return pd.DataFrame(columns, index=data.index), dropped


def complete_cases(data: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Rows of ``data`` with every one of ``columns`` present and finite; and how many were left out."""
    sub = data.loc[:, list(dict.fromkeys(columns))]
    ok = pd.Series(True, index=data.index)
    for name in sub.columns:
        col = sub[name]
        if pd.api.types.is_numeric_dtype(col):
            ok &= np.isfinite(col.astype(float))
        else:
            ok &= col.notna()
    return data.loc[ok], int((~ok).sum())


def prepare_model(
    data: pd.DataFrame, y: str, x: str, covar: Sequence[str], columns: Sequence[str]
) -> tuple[pd.DataFrame, list[str], dict[str, object]]:
    """Complete cases of a model of ``y`` on ``x`` and ``covar``, and its result row before fitting.

    Returns
    -------
    used, covar, row
        The rows of ``data`` complete in ``y``, ``x`` and the covariates;
        the covariates without ``x``; a row with every one of ``columns`` NaN
        but ``term`` (``x``), ``n`` (complete rows) and ``n_excluded``.
    """
    covar = [c for c in covar if c != x]
    used, n_excluded = complete_cases(data, [y, x, *covar])
    row: dict[str, object] = dict.fromkeys(columns, np.nan)
    row.update(term=x, n=len(used), n_excluded=n_excluded)
    return used, covar, row


def wald_log_odds(fit: object, x: str, notes: Sequence[str], alpha: float = 0.05) -> dict[str, object]:
    """Wald inference for the coefficient of ``x`` in a fitted maximum-likelihood (log-odds) model.

    Parameters
    ----------
    fit
        A statsmodels likelihood-model result (``params``, ``bse``, ``mle_retvals``).
    x
        The term of interest.
    notes
        Notes so far; "optimiser did not converge" is added when the fit did not.
    alpha
        For the (1 - alpha) normal confidence interval.

    Returns
    -------
    dict
        beta, se, ci_low, ci_high, z, p (two-sided, normal), odds_ratio
        (``exp(beta)``), converged and note (the notes joined by "; ").
    """
    converged = bool(fit.mle_retvals.get("converged", False))
    notes = [*notes, *([] if converged else ["optimiser did not converge"])]
    beta = float(fit.params[x])
    se = float(fit.bse[x])
    zcrit = stats.norm.ppf(1 - alpha / 2)
    z = beta / se if se > 0 and np.isfinite(se) else np.nan
    return {
        "beta": beta, "se": se, "ci_low": beta - zcrit * se, "ci_high": beta + zcrit * se, "z": z,
        "p": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
        "odds_ratio": float(np.exp(beta)), "converged": converged, "note": "; ".join(notes),
    }


def breusch_pagan(resid: np.ndarray, exog: np.ndarray) -> float:
    """p-value of Koenker's studentised Breusch-Pagan test of heteroscedasticity."""
    try:
        return float(het_breuschpagan(np.asarray(resid), np.asarray(exog), robust=True)[1])
    except (ValueError, np.linalg.LinAlgError):
        return float("nan")


def ols(
    data: pd.DataFrame,
    y: str,
    x: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    hc3: str | bool = "auto",
    hc3_alpha: float = 0.05,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """OLS of ``y`` on ``x`` and covariates; the coefficient of ``x`` as one row.

    Rows with a missing value in any model column are left out and counted
    (``n_excluded``). Inference uses the t distribution with the residual
    degrees of freedom, also with HC3 (Long & Ervin 2000).

    Parameters
    ----------
    data
        One row per observation.
    y, x
        Outcome and predictor of interest.
    covar
        Adjustment covariates; those in ``categorical`` are dummy coded.
    hc3
        ``"auto"``: HC3 standard errors when the studentised Breusch-Pagan
        test has p < ``hc3_alpha``; ``"always"``/True or ``"never"``/False.
    alpha
        For the (1 - alpha) confidence interval.

    Returns
    -------
    pandas.DataFrame
        One row: term, beta, se, ci_low, ci_high, t, p, r2 (unadjusted R²), n,
        n_excluded, hc3 (bool: whether HC3 was used), bp_p (Breusch-Pagan
        p-value), note (why the model could not be fitted, or covariates left
        out for lack of variation).

    Examples
    --------
    >>> import statsmodels.api as sm
    >>> df = sm.datasets.longley.load_pandas().data
    >>> row = ols(df, "TOTEMP", "GNP", ["GNPDEFL", "UNEMP", "ARMED", "POP", "YEAR"], hc3="always")
    >>> round(float(row["se"].iloc[0]), 5)  # SAS HC3 standard error, see statsmodels' tests
    0.05562
    """
    policy = _hc3_policy(hc3)
    used, covar, row = prepare_model(data, y, x, covar, OLS_COLUMNS)
    row.update(hc3=False, note="")
    if len(used) == 0:
        row["note"] = "no complete rows"
        return pd.DataFrame([row], columns=OLS_COLUMNS)
    X, dropped = design_matrix(used, x, covar, categorical)
    notes = [f"no variation in {', '.join(dropped)}"] if dropped else []
    endog = pd.to_numeric(used[y]).astype(float)
    if X.shape[0] <= X.shape[1] or np.linalg.matrix_rank(X.to_numpy()) < X.shape[1]:
        row["note"] = "; ".join([*notes, f"too few complete rows ({len(used)}) or collinear design"])
        return pd.DataFrame([row], columns=OLS_COLUMNS)
    model = sm.OLS(endog, X)
    fit = model.fit()
    bp_p = breusch_pagan(fit.resid, X.to_numpy())
    use_hc3 = policy == "always" or (policy == "auto" and np.isfinite(bp_p) and bp_p < hc3_alpha)
    if use_hc3:
        fit = model.fit(cov_type="HC3", use_t=True)
    beta = float(fit.params[x])
    se = float(fit.bse[x])
    tcrit = stats.t.ppf(1 - alpha / 2, fit.df_resid)
    tval = beta / se if se > 0 else np.nan
    row.update(
        beta=beta,
        se=se,
        ci_low=beta - tcrit * se,
        ci_high=beta + tcrit * se,
        t=tval,
        p=float(2 * stats.t.sf(abs(tval), fit.df_resid)) if np.isfinite(tval) else np.nan,
        r2=float(fit.rsquared),
        hc3=bool(use_hc3),
        bp_p=bp_p,
        note="; ".join(notes),
    )
    return pd.DataFrame([row], columns=OLS_COLUMNS)


def adjust_family(
    table: pd.DataFrame,
    p: str = "p",
    method: str = "fdr_bh",
    out: str = "p_fdr",
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Add a column of adjusted p-values over the whole table (or within ``by`` groups).

    Returns a copy of ``table`` with column ``out``.
    """
    result = table.copy()
    result[out] = np.nan
    if result.empty:
        return result
    if by:
        for _, index in result.groupby(list(by), sort=False, dropna=False).groups.items():
            result.loc[index, out] = p_adjust(result.loc[index, p], method)
    else:
        result[out] = p_adjust(result[p], method)
    return result


def _hc3_policy(hc3: str | bool) -> str:
    if hc3 is True:
        return "always"
    if hc3 is False:
        return "never"
    if hc3 not in ("auto", "always", "never"):
        raise ValueError(f"hc3 must be 'auto', 'always', 'never' or a bool, not {hc3!r}")
    return hc3
