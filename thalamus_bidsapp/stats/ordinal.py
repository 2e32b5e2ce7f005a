"""Ordinal logistic regression (proportional odds), e.g. of EDSS change categories on thalamic change.

Re-exported by :mod:`thalamus_bidsapp.stats.longitudinal`, where the
longitudinal analyses use it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats.fitcheck import mle_problem, observed_probabilities
from thalamus_bidsapp.stats.regression import formula_design, prepare_model, wald_table

LOGGER = logging.getLogger(__name__)

__all__ = ["ORDINAL_COLUMNS", "ordinal_logistic"]


#: Columns of the :func:`ordinal_logistic` table, in order.
ORDINAL_COLUMNS = [
    "term", "kind", "beta", "threshold", "se", "ci_low", "ci_high", "z", "p", "odds_ratio", "n", "n_excluded",
    "n_categories", "category_counts", "loglik", "aic", "converged", "note",
]


def ordinal_logistic(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    alpha: float = 0.05,
) -> pd.DataFrame:
    r"""Proportional-odds (ordinal logistic) regression of ``y`` on ``x`` and covariates: the full table.

    Fitted with :class:`statsmodels.miscmodels.ordinal_model.OrderedModel`
    (``distr="logit"``, formula ``y ~ x + covariates``, the intercept replaced
    by the thresholds) as R's ``MASS::polr`` and ``ordinal::clm``:
    :math:`\operatorname{logit} P(Y \le j) = \theta_j - x^T\beta`. A positive
    ``beta`` means higher ``x`` goes with higher categories (log cumulative
    odds ratio per unit of ``x``). The thresholds :math:`\theta_j` are
    reported on R's scale (statsmodels estimates the first and the logs of
    the increments); their standard errors by the delta method.

    Parameters
    ----------
    data
        One row per subject.
    x, y
        Predictor of interest and outcome (keyword-only); ``y`` an ordered
        categorical column (unused categories are dropped).
    covar, categorical
        As in :func:`thalamus_bidsapp.stats.regression.ols`.
    alpha
        For the (1 - alpha) Wald confidence intervals.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ORDINAL_COLUMNS`: one row per coefficient (``kind``
        ``coefficient``: ``x``, then the covariates) and per threshold
        (``kind`` ``threshold``, term ``"lower|upper"`` as in R): term, kind,
        beta (coefficients only), threshold (thresholds only, so a column
        holds one kind of estimate), se, ci_low, ci_high (Wald, normal), z, p,
        odds_ratio (coefficients only) of the row's estimate; and on every
        row n, n_excluded, n_categories, category_counts, loglik
        (log-likelihood), aic, converged, note. A model that cannot be fitted
        (too few rows or a collinear design, perfect separation, a singular
        Hessian, no convergence) gives one row, for ``x``, with empty
        estimates and the reason in ``note``.

    Examples
    --------
    R ``ordinal::clm(rating ~ temp + contact, data = wine)`` (Christensen,
    clm tutorial): tempwarm 2.5031 (SE 0.5287), threshold 1|2 -1.3444
    (SE 0.5171), log-likelihood -86.49, AIC 184.98.

    >>> counts = {("cold", "no"): [4, 9, 5, 0, 0], ("cold", "yes"): [1, 7, 8, 2, 0],
    ...           ("warm", "no"): [0, 5, 8, 3, 2], ("warm", "yes"): [0, 1, 5, 7, 5]}
    >>> wine = pd.DataFrame([(t, c, r) for (t, c), k in counts.items() for r, m in enumerate(k, 1)
    ...                      for _ in range(m)], columns=["temp", "contact", "rating"])
    >>> wine["rating"] = pd.Categorical(wine["rating"], ordered=True)
    >>> table = ordinal_logistic(wine, x="temp", y="rating", covar=["contact"], categorical=["temp", "contact"])
    >>> table.set_index("term")["beta"].dropna().round(4).tolist()
    [2.5031, 1.5278]
    >>> table.set_index("term")["threshold"].dropna().round(4).tolist()
    [-1.3444, 1.2508, 3.4669, 5.0064]
    >>> round(float(table["loglik"].iloc[0]), 2), round(float(table["aic"].iloc[0]), 2)
    (-86.49, 184.98)
    """
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    used, covar, row = prepare_model(data, x, y, covar, ORDINAL_COLUMNS)
    row.update(kind="coefficient", converged=False, note="", category_counts="")
    endog = used[y]
    if not isinstance(endog.dtype, pd.CategoricalDtype) or not endog.cat.ordered:
        raise ValueError(f"{y} must be an ordered categorical column")
    endog = endog.cat.remove_unused_categories()
    used = used.assign(**{y: endog})
    counts = endog.value_counts(sort=False)
    row["n_categories"] = len(counts)
    row["category_counts"] = ", ".join(f"{k}: {v}" for k, v in counts.items())
    design = formula_design(used, y, [x, *covar], categorical, keep=[x])
    notes = [f"no variation in {', '.join(design.dropped)}"] if design.dropped else []

    def unfitted(reason: str) -> pd.DataFrame:
        row["note"] = "; ".join([*notes, reason])
        return pd.DataFrame([row], columns=ORDINAL_COLUMNS)

    if len(counts) < 2 or len(used) == 0:
        return unfitted("fewer than two outcome categories among complete rows")
    try:
        model = OrderedModel.from_formula(design.formula(), design.frame, distr="logit")
    except ValueError as exc:
        return unfitted(f"model could not be set up: {exc}")
    exog = np.asarray(model.exog)
    n_params = exog.shape[1] + len(counts) - 1
    if len(used) <= n_params or np.linalg.matrix_rank(exog) < exog.shape[1]:
        return unfitted("too few rows or collinear design")
    try:
        with warnings.catch_warnings():
            # the reason (singular Hessian, no convergence) goes into the note, not the log
            warnings.simplefilter("ignore")
            fit = model.fit(method="bfgs", disp=False, maxiter=2000, gtol=1e-8)
            fit = _newton_from(model, fit)
            problem = mle_problem(fit, observed_probabilities(fit.predict(), np.asarray(model.endog)))
    except (np.linalg.LinAlgError, ValueError) as exc:
        return unfitted(f"fit failed: {exc}")
    if problem is not None:
        return unfitted(f"not estimable: {problem} (category counts {row['category_counts']})")
    k_exog = exog.shape[1]
    coefficients = wald_table(_Subset(fit, slice(0, k_exog)), design, notes, alpha)
    thresholds = _threshold_table(fit, k_exog, [str(c) for c in counts.index], alpha)
    thresholds["converged"] = coefficients["converged"].iloc[0]
    thresholds["note"] = coefficients["note"].iloc[0]
    coefficients["threshold"] = np.nan
    table = pd.concat([coefficients, thresholds], ignore_index=True)
    for name in ("n", "n_excluded", "n_categories", "category_counts"):
        table[name] = row[name]
    table["loglik"] = float(fit.llf)
    table["aic"] = float(fit.aic)
    return table[ORDINAL_COLUMNS]


def _newton_from(model: object, fit: object) -> object:
    """Newton steps from where BFGS stopped: the optimum itself, whichever statsmodels' BFGS stopped short of it.

    statsmodels 0.15's BFGS stalls on a flat ridge of the thresholds where 0.14's did not. Where Newton cannot
    step (a singular Hessian) or does not converge, the BFGS fit stands, and its checks give the reason.
    """
    try:
        polished = model.fit(method="newton", start_params=np.asarray(fit.params), disp=False, maxiter=100)
    except (np.linalg.LinAlgError, ValueError):
        return fit
    return polished if polished.mle_retvals.get("converged", False) else fit


class _Subset:
    """The coefficients (not the threshold parameters) of an OrderedModel fit, for :func:`wald_table`."""

    def __init__(self, fit: object, part: slice) -> None:
        self.params = pd.Series(fit.params).iloc[part]
        self.bse = pd.Series(fit.bse, index=pd.Series(fit.params).index).iloc[part]
        self.mle_retvals = fit.mle_retvals


def _threshold_table(fit: object, k_exog: int, levels: Sequence[str], alpha: float) -> pd.DataFrame:
    """Thresholds theta_1 < ... on R's scale with delta-method standard errors.

    statsmodels parameterises theta_1 and log(theta_j - theta_(j-1)), so
    theta_j = theta_1 + sum_(i<=j) exp(c_i) and d theta_j / d c_i = exp(c_i).
    """
    params = np.asarray(fit.params, dtype=float)[k_exog:]
    cov = np.asarray(fit.cov_params(), dtype=float)[k_exog:, k_exog:]
    m = params.size
    jac = np.zeros((m, m))
    jac[:, 0] = 1.0
    for j in range(1, m):
        jac[j, 1:j + 1] = np.exp(params[1:j + 1])
    theta = np.cumsum(np.r_[params[0], np.exp(params[1:])])
    se = np.sqrt(np.clip(np.diag(jac @ cov @ jac.T), 0, None))
    zcrit = stats.norm.ppf(1 - alpha / 2)
    z = np.where(se > 0, theta / np.where(se > 0, se, 1), np.nan)
    return pd.DataFrame({
        "term": [f"{levels[j]}|{levels[j + 1]}" for j in range(m)], "kind": "threshold", "beta": np.nan,
        "threshold": theta, "se": se,
        "ci_low": theta - zcrit * se, "ci_high": theta + zcrit * se, "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
        "odds_ratio": np.nan,
    })
