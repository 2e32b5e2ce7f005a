"""Ordinary least squares with the full coefficient table (classical, HC0 and HC3 SEs), and FDR control.

Pingouin style: a DataFrame and column names in, a DataFrame out with named
columns, so the tables of a family of models (outcomes x methods) concatenate
into one. Models are fitted with statsmodels' formula API
(:func:`statsmodels.formula.api.ols`), categorical covariates through
``C()``, their first level (:func:`~thalamus_bidsapp.stats._frame.ordered_levels`:
numbers numerically) the reference.

References
----------
- White, H. (1980). A heteroskedasticity-consistent covariance matrix
  estimator and a direct test for heteroskedasticity. Econometrica, 48(4),
  817-838 (HC0).
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
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.diagnostic import het_breuschpagan

from thalamus_bidsapp.stats._frame import as_ordered_categorical, check_columns
from thalamus_bidsapp.stats.multiplicity import p_adjust

LOGGER = logging.getLogger(__name__)

__all__ = ["INTERCEPT", "OLS_COLUMNS", "SE_TYPES", "adjust_family", "complete_cases", "ols", "zscore"]

#: Columns of the :func:`ols` table, in order.
OLS_COLUMNS = [
    "term", "beta", "se", "se_type", "se_classical", "se_hc0", "se_hc3", "ci_low", "ci_high", "t", "p", "df_resid",
    "residual_sd", "r2", "n", "n_excluded", "bp_p", "note",
]

#: The standard errors :func:`ols` computes; ``se=`` picks the one used for inference.
SE_TYPES = ("classical", "hc0", "hc3")

#: Name of the intercept row in every coefficient table.
INTERCEPT = "Intercept"


def zscore(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    """Standardise to mean 0 and SD 1 (sample SD, ddof=1), ignoring missing values.

    A constant input gives zeros rather than NaN, so a covariate without
    spread simply carries no information instead of breaking a model.

    Examples
    --------
    >>> zscore([1.0, 2.0, 3.0, float("nan")]).tolist()
    [-1.0, 0.0, 1.0, nan]
    """
    arr = np.asarray(values, dtype=float)
    mean = np.nanmean(arr) if np.isfinite(arr).any() else np.nan
    sd = np.nanstd(arr, ddof=1) if np.isfinite(arr).sum() > 1 else np.nan
    if not np.isfinite(sd) or sd == 0:
        return np.where(np.isfinite(arr), 0.0, np.nan)
    return (arr - mean) / sd


def complete_cases(data: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Rows of ``data`` with every one of ``columns`` present and finite; and how many were left out.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", "y", None]})
    >>> used, n_excluded = complete_cases(df, ["a", "b"])
    >>> len(used), n_excluded
    (1, 2)
    """
    check_columns(data, columns, "complete_cases")
    sub = data.loc[:, list(dict.fromkeys(columns))]
    ok = pd.Series(True, index=data.index)
    for name in sub.columns:
        col = sub[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            ok &= np.isfinite(col.astype(float))
        else:
            ok &= col.notna()
    return data.loc[ok], int((~ok).sum())


@dataclass
class FormulaDesign:
    """A model's columns under safe aliases (``v0``, ``v1``...) for statsmodels' formula API.

    Column names need not be valid Python names (``delta_9hpt``, ``age (y)``):
    the formula uses the aliases and :meth:`term_name` maps statsmodels' term
    names back (``C(v2)[T.male]`` -> ``sex[T.male]``).
    """

    frame: pd.DataFrame
    outcome: str
    terms: list[str]
    names: dict[str, str]
    dropped: list[str]

    def formula(self, intercept: bool = True) -> str:
        rhs = " + ".join(self.terms) if self.terms else "1"
        return f"{self.outcome} ~ {rhs}" + ("" if intercept else " - 1")

    def term_name(self, name: str) -> str:
        match = re.fullmatch(r"C\((v\d+)\)(?:\[(.*)\])?", name)
        if match:
            level = match.group(2)
            return self.names[match.group(1)] + (f"[{level}]" if level is not None else "")
        return self.names.get(name, name)

    def term_order(self, name: str) -> int:
        """Sort key of a statsmodels term: the intercept, then the predictors in the order given.

        patsy puts categorical terms before numeric ones; tables follow the
        caller's order instead (``x`` first).
        """
        match = re.fullmatch(r"(?:C\()?v(\d+)\)?(?:\[.*\])?", name)
        return int(match.group(1)) if match else 0


def formula_design(
    used: pd.DataFrame, y: str, predictors: Sequence[str], categorical: Sequence[str] = (), *, keep: Sequence[str] = ()
) -> FormulaDesign:
    """Aliased frame and formula terms of ``y ~ predictors`` on complete rows ``used``.

    Predictors in ``categorical`` enter as ``C()`` with their levels in
    natural order (the first is the reference); the others as numbers.
    Predictors without variation are left out (collinear with the intercept)
    and listed in ``dropped``, except those in ``keep``.
    """
    frame = pd.DataFrame(index=used.index)
    names: dict[str, str] = {}
    terms: list[str] = []
    dropped: list[str] = []
    if isinstance(used[y].dtype, pd.CategoricalDtype):
        frame["v0"] = used[y]
    else:
        frame["v0"] = pd.to_numeric(used[y]).astype(float)
    names["v0"] = y
    for i, name in enumerate(dict.fromkeys(predictors), start=1):
        alias = f"v{i}"
        values = used[name]
        if name in categorical:
            coded = as_ordered_categorical(values)
            varies = len(coded.cat.categories) >= 2
            frame[alias] = coded
            term = f"C({alias})"
        else:
            numeric = pd.to_numeric(values).astype(float)
            varies = numeric.nunique() >= 2
            frame[alias] = numeric
            term = alias
        names[alias] = name
        if varies or name in keep:
            terms.append(term)
        else:
            dropped.append(name)
    return FormulaDesign(frame, "v0", terms, names, dropped)


def prepare_model(
    data: pd.DataFrame, x: str, y: str, covar: Sequence[str], columns: Sequence[str]
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
    check_columns(data, [y, x, *covar], "model")
    used, n_excluded = complete_cases(data, [y, x, *covar])
    row: dict[str, object] = dict.fromkeys(columns, np.nan)
    row.update(term=x, n=len(used), n_excluded=n_excluded)
    return used, covar, row


def wald_table(fit: object, design: FormulaDesign, notes: Sequence[str], alpha: float = 0.05,
               kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """Wald inference for every coefficient of a fitted maximum-likelihood (log-odds) model.

    Returns
    -------
    pandas.DataFrame
        One row per parameter: term (original column names), kind (from
        ``kinds``, default ``coefficient``), beta, se, ci_low, ci_high (normal),
        z, p (two-sided, normal), odds_ratio (``exp(beta)``), converged,
        note (``notes`` joined by "; ", plus non-convergence).
    """
    converged = bool(getattr(fit, "mle_retvals", {}).get("converged", False))
    notes = [*notes, *([] if converged else ["optimiser did not converge"])]
    zcrit = stats.norm.ppf(1 - alpha / 2)
    params = pd.Series(fit.params)
    bse = pd.Series(fit.bse, index=params.index)
    rows = []
    for name in sorted(params.index, key=lambda n: design.term_order(str(n))):
        beta = params[name]
        se = float(bse[name])
        z = beta / se if se > 0 and np.isfinite(se) else np.nan
        rows.append({
            "term": design.term_name(str(name)), "kind": (kinds or {}).get(str(name), "coefficient"),
            "beta": float(beta), "se": se, "ci_low": beta - zcrit * se, "ci_high": beta + zcrit * se, "z": z,
            "p": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
            "odds_ratio": float(np.exp(beta)), "converged": converged, "note": "; ".join(notes),
        })
    return pd.DataFrame(rows)


def breusch_pagan(resid: np.ndarray, exog: np.ndarray) -> float:
    """p-value of Koenker's studentised Breusch-Pagan test of heteroscedasticity."""
    try:
        return float(het_breuschpagan(np.asarray(resid), np.asarray(exog), robust=True)[1])
    except (ValueError, np.linalg.LinAlgError):
        return float("nan")


def ols(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    se: str = "classical",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """OLS of ``y`` on ``x`` and covariates: the full coefficient table.

    Fitted with :func:`statsmodels.formula.api.ols` as ``y ~ x + covariates``
    (categorical covariates as ``C()``). Rows with a missing value in any
    model column are left out and counted (``n_excluded``). Inference uses
    the t distribution with the residual degrees of freedom, also with a
    robust standard error (Long & Ervin 2000). ``x`` and ``y`` are
    keyword-only: a positional call cannot regress one on the other by mistake.

    Parameters
    ----------
    data
        One row per observation.
    x, y
        Predictor of interest and outcome (column names).
    covar
        Adjustment covariates; those in ``categorical`` enter as ``C()``
        (first level in natural order is the reference).
    se
        The standard error behind ``se``, ``ci_low``, ``ci_high``, ``t`` and
        ``p``: ``"classical"`` (default, the textbook table), ``"hc0"``
        (White 1980) or ``"hc3"`` (MacKinnon & White 1985). All three are
        reported whichever is chosen, with the Breusch-Pagan p-value as a
        diagnostic; the choice never depends on the data.
    alpha
        For the (1 - alpha) confidence intervals.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`OLS_COLUMNS`, one row per term (``Intercept``, ``x``,
        then the covariates, a categorical one as ``name[T.level]``): term,
        beta, se (the standard error ``se`` chose), se_type (that choice),
        se_classical, se_hc0, se_hc3, ci_low, ci_high, t, p, df_resid; and,
        the same on every row, residual_sd (square root of the residual mean
        square), r2 (unadjusted R²), n, n_excluded, bp_p (studentised
        Breusch-Pagan p-value), note (why the model could not be fitted, or
        covariates left out for lack of variation). A model that cannot be
        fitted gives one row, for ``x``, with NaN statistics and the reason
        in ``note``.

    Examples
    --------
    NIST StRD Longley (certified values): GNP coefficient -0.0358 (SE
    0.0335), residual SD 304.854; SAS's HC3 SE of GNP 0.05562.

    >>> import statsmodels.api as sm
    >>> df = sm.datasets.longley.load_pandas().data
    >>> table = ols(df, x="GNP", y="TOTEMP", covar=["GNPDEFL", "UNEMP", "ARMED", "POP", "YEAR"])
    >>> table["term"].tolist()
    ['Intercept', 'GNP', 'GNPDEFL', 'UNEMP', 'ARMED', 'POP', 'YEAR']
    >>> gnp = table.set_index("term").loc["GNP"]
    >>> round(float(gnp["se"]), 4), round(float(gnp["se_classical"]), 4), round(float(gnp["se_hc3"]), 5)
    (0.0335, 0.0335, 0.05562)
    >>> round(float(gnp["beta"]), 4), round(float(gnp["residual_sd"]), 3)
    (-0.0358, 304.854)
    """
    import statsmodels.formula.api as smf

    if se not in SE_TYPES:
        raise ValueError(f"ols: se must be one of {SE_TYPES}, not {se!r}")
    used, covar, row = prepare_model(data, x, y, covar, OLS_COLUMNS)
    row.update(se_type=se, note="")
    if len(used) == 0:
        row["note"] = "no complete rows"
        return pd.DataFrame([row], columns=OLS_COLUMNS)
    design = formula_design(used, y, [x, *covar], categorical, keep=[x])
    notes = [f"no variation in {', '.join(design.dropped)}"] if design.dropped else []
    model = smf.ols(design.formula(), design.frame)
    exog = model.exog
    if exog.shape[0] <= exog.shape[1] or np.linalg.matrix_rank(exog) < exog.shape[1]:
        row["note"] = "; ".join([*notes, f"too few complete rows ({len(used)}) or collinear design"])
        return pd.DataFrame([row], columns=OLS_COLUMNS)
    classical = model.fit()
    errors = {"classical": classical.bse, "hc0": classical.HC0_se, "hc3": classical.HC3_se}
    bp_p = breusch_pagan(classical.resid, exog)
    df_resid = float(classical.df_resid)
    tcrit = stats.t.ppf(1 - alpha / 2, df_resid)
    rows = []
    for name in sorted(classical.params.index, key=design.term_order):
        beta = classical.params[name]
        chosen = float(errors[se][name])
        tval = beta / chosen if chosen > 0 else np.nan
        rows.append({
            "term": design.term_name(str(name)), "beta": float(beta), "se": chosen, "se_type": se,
            **{f"se_{kind}": float(values[name]) for kind, values in errors.items()},
            "ci_low": beta - tcrit * chosen, "ci_high": beta + tcrit * chosen, "t": tval,
            "p": float(2 * stats.t.sf(abs(tval), df_resid)) if np.isfinite(tval) else np.nan,
            "df_resid": df_resid, "residual_sd": float(np.sqrt(classical.scale)), "r2": float(classical.rsquared),
            "n": len(used), "n_excluded": row["n_excluded"], "bp_p": bp_p, "note": "; ".join(notes),
        })
    return pd.DataFrame(rows, columns=OLS_COLUMNS)


def adjust_family(
    table: pd.DataFrame,
    p: str = "p",
    method: str = "fdr_bh",
    out: str = "p_fdr",
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Add a column of adjusted p-values over the whole table (or within ``by`` groups).

    Parameters
    ----------
    table
        Any table with a p-value column.
    p
        Name of the unadjusted p-value column.
    method
        :func:`~thalamus_bidsapp.stats.multiplicity.p_adjust` method
        (``"fdr_bh"``, ``"bonferroni"``...).
    out
        Name of the new column (``p_fdr`` for Benjamini-Hochberg, by convention).
    by
        Columns whose groups are separate families; None: one family.

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with column ``out``.

    Examples
    --------
    >>> table = pd.DataFrame({"g": ["a", "a", "b"], "p": [0.01, 0.04, 0.03]})
    >>> adjust_family(table, by=["g"])["p_fdr"].tolist()
    [0.02, 0.04, 0.03]
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
