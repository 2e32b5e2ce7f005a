"""DeepGRAI-style disability analysis: EDSS course, ANCOVA of thalamic change, logistic model.

References
----------
- Zivadinov, R., et al. (DeepGRAI Registry). Thalamic atrophy measured by
  artificial intelligence in a multicentre clinical routine real-world study
  is associated with disability progression. J Neurol Neurosurg Psychiatry
  (reference 000 of the SPEC): progression / improvement / stability compared
  by age- and follow-up-adjusted ANCOVA with Bonferroni-adjusted pairwise
  comparisons; logistic model with scanner change, age, sex, disease
  duration and follow-up time.
- Kappos, L., et al. (2018). Greater sensitivity to multiple sclerosis
  disability worsening and progression events using a roving versus a fixed
  reference value. Multiple Sclerosis Journal, 24(7), 963-973: EDSS change of
  >= 1.5 from 0, >= 1.0 from 1.0-5.5, >= 0.5 above 5.5.
- Field, A. (2013). Discovering Statistics Using IBM SPSS Statistics, 4th ed.,
  chapter 11 (ANCOVA, adjusted means at the covariate mean, Bonferroni
  pairwise comparisons); the tests reproduce its Viagra example.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.regression import complete_cases, design_matrix, prepare_model, wald_log_odds

LOGGER = logging.getLogger(__name__)

PROGRESSION = "progression"
IMPROVEMENT = "improvement"
STABLE = "stable"
COURSE_LEVELS = (PROGRESSION, IMPROVEMENT, STABLE)

#: (max_baseline, change): the first band with baseline EDSS <= max_baseline applies.
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((0.0, 1.5), (5.5, 1.0), (10.0, 0.5))


def progression_threshold(
    baseline_edss: Sequence[float] | pd.Series | np.ndarray,
    bands: Sequence[tuple[float, float]] | Sequence[object] = DEFAULT_BANDS,
) -> np.ndarray:
    """EDSS change that counts as progression (or, downwards, improvement) for each baseline.

    Parameters
    ----------
    baseline_edss
        Baseline EDSS values.
    bands
        ``(max_baseline, change)`` pairs (or objects with those attributes),
        sorted by ``max_baseline``. Default: +1.5 from 0, +1.0 up to 5.5,
        +0.5 above 5.5.

    Returns
    -------
    numpy.ndarray
        The threshold per subject; NaN for a missing or out-of-range baseline.
    """
    pairs = [(float(b.max_baseline), float(b.change)) if hasattr(b, "change") else (float(b[0]), float(b[1]))
             for b in bands]
    base = np.asarray(baseline_edss, dtype=float)
    out = np.full(base.shape, np.nan)
    assigned = ~np.isfinite(base)
    for max_baseline, change in pairs:
        # EDSS has 0.5 steps; the tolerance keeps floating point noise from changing band
        hit = ~assigned & (base <= max_baseline + 1e-9)
        out[hit] = change
        assigned |= hit
    return out


def classify_edss_course(
    baseline: Sequence[float] | pd.Series,
    followup: Sequence[float] | pd.Series,
    bands: Sequence[tuple[float, float]] | Sequence[object] = DEFAULT_BANDS,
) -> pd.Series:
    """Disability course per subject: progression, improvement or stable.

    Progression when follow-up - baseline >= threshold(baseline), improvement
    when it is <= -threshold(baseline), stable otherwise (thresholds from
    :func:`progression_threshold`). Missing EDSS gives a missing course.

    Examples
    --------
    >>> classify_edss_course([0, 0, 2.0, 6.0, 6.0], [1.5, 1.0, 1.0, 6.5, 5.5]).tolist()
    ['progression', 'stable', 'improvement', 'progression', 'improvement']
    """
    b = pd.Series(baseline, dtype=float)
    f = pd.Series(followup, dtype=float).set_axis(b.index)
    threshold = progression_threshold(b, bands)
    delta = (f - b).to_numpy()
    ok = np.isfinite(delta) & np.isfinite(threshold)
    eps = 1e-9
    labels = np.where(
        ~ok, None,
        np.where(delta >= threshold - eps, PROGRESSION, np.where(delta <= -threshold + eps, IMPROVEMENT, STABLE)),
    )
    return pd.Series(pd.Categorical(labels, categories=list(COURSE_LEVELS)), index=b.index)


# ------------------------------------------------------------------------ ANCOVA
class _AncovaFit:
    """Least-squares fit of dv ~ C(between) + covariates shared by the ANCOVA functions."""

    def __init__(self, data: pd.DataFrame, dv: str, between: str, covar: Sequence[str], categorical: Sequence[str]):
        self.between = between
        self.covar = [c for c in covar if c != between]
        used, self.n_excluded = complete_cases(data, [dv, between, *self.covar])
        self.data = used
        group = used[between]
        if isinstance(group.dtype, pd.CategoricalDtype):
            levels = [lvl for lvl in group.cat.categories if (group == lvl).any()]
        else:
            levels = sorted(pd.unique(group.astype(str)))
            group = group.astype(str)
        self.levels = levels
        self.group = group
        self.y = pd.to_numeric(used[dv]).to_numpy(dtype=float)
        dummies = pd.DataFrame({f"{between}[{lvl}]": (group == lvl).astype(float) for lvl in levels[1:]}, index=used.index)
        if self.covar:
            cov_X, self.dropped = design_matrix(used, self.covar[0], self.covar[1:], categorical, constant=False)
        else:
            cov_X, self.dropped = pd.DataFrame(index=used.index), []
        self.cov_X = cov_X
        self.X = pd.concat([pd.Series(1.0, index=used.index, name="const"), dummies, cov_X], axis=1)
        self.n_groups = len(levels)
        self.df_resid = len(self.y) - self.X.shape[1]
        self.ok = self.n_groups >= 2 and self.df_resid > 0 and np.linalg.matrix_rank(self.X.to_numpy()) == self.X.shape[1]
        if self.ok:
            xtx_inv = np.linalg.inv(self.X.T.to_numpy() @ self.X.to_numpy())
            self.params = xtx_inv @ self.X.T.to_numpy() @ self.y
            resid = self.y - self.X.to_numpy() @ self.params
            self.sse = float(resid @ resid)
            self.mse = self.sse / self.df_resid
            self.cov = xtx_inv * self.mse

    def sse_without(self, columns: Sequence[str]) -> float:
        X = self.X.drop(columns=list(columns)).to_numpy()
        beta, *_ = np.linalg.lstsq(X, self.y, rcond=None)
        resid = self.y - X @ beta
        return float(resid @ resid)

    def contrast_vector(self, level: object) -> np.ndarray:
        """Linear combination giving the group's mean at the covariates' sample means."""
        vec = np.zeros(self.X.shape[1])
        vec[0] = 1.0
        names = list(self.X.columns)
        if level != self.levels[0]:
            vec[names.index(f"{self.between}[{level}]")] = 1.0
        for name in self.cov_X.columns:
            vec[names.index(name)] = float(self.cov_X[name].mean())
        return vec


ANCOVA_COLUMNS = ["source", "ss", "df", "F", "p", "np2"]


def ancova(
    data: pd.DataFrame,
    dv: str,
    between: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """One-way ANCOVA table with type II sums of squares.

    Parameters
    ----------
    data
        One row per subject.
    dv
        Dependent variable (e.g. % thalamic volume change).
    between
        Grouping column (e.g. EDSS course).
    covar
        Covariates (e.g. age and follow-up years); those in ``categorical`` dummy coded.

    Returns
    -------
    pandas.DataFrame
        source, ss, df, F, p, np2 (partial eta squared); the last row is the residual.

    Notes
    -----
    Without interactions, type II and type III sums of squares coincide for
    every term, so this matches pingouin's ``ancova`` and SPSS's GLM.
    """
    fit = _AncovaFit(data, dv, between, covar, categorical)
    if not fit.ok:
        return pd.DataFrame(columns=ANCOVA_COLUMNS)
    rows = []
    dummy_cols = [c for c in fit.X.columns if c.startswith(f"{between}[")]
    terms: list[tuple[str, list[str]]] = [(between, dummy_cols)]
    for name in fit.covar:
        cols = [c for c in fit.cov_X.columns if c == name or c.startswith(f"{name}[")]
        if cols:
            terms.append((name, cols))
    for source, cols in terms:
        ss = fit.sse_without(cols) - fit.sse
        df = len(cols)
        F = (ss / df) / fit.mse
        rows.append({"source": source, "ss": ss, "df": df, "F": F,
                     "p": float(stats.f.sf(F, df, fit.df_resid)), "np2": ss / (ss + fit.sse)})
    rows.append({"source": "Residual", "ss": fit.sse, "df": fit.df_resid, "F": np.nan, "p": np.nan, "np2": np.nan})
    return pd.DataFrame(rows, columns=ANCOVA_COLUMNS)


ADJUSTED_MEANS_COLUMNS = ["group", "n", "mean", "sd", "adj_mean", "se", "ci_low", "ci_high"]


def ancova_adjusted_means(
    data: pd.DataFrame,
    dv: str,
    between: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Covariate-adjusted group means (estimated marginal means) of a one-way ANCOVA.

    Each group's mean is predicted with the covariates at their sample means
    over all groups (SPSS's "estimated marginal means"; dummy-coded
    categorical covariates at their sample proportions).

    Returns
    -------
    pandas.DataFrame
        group, n, mean and sd (raw), adj_mean, se, ci_low, ci_high (t with the residual df).
    """
    fit = _AncovaFit(data, dv, between, covar, categorical)
    if not fit.ok:
        return pd.DataFrame(columns=ADJUSTED_MEANS_COLUMNS)
    tcrit = stats.t.ppf(1 - alpha / 2, fit.df_resid)
    rows = []
    for level in fit.levels:
        vec = fit.contrast_vector(level)
        est = float(vec @ fit.params)
        se = float(np.sqrt(vec @ fit.cov @ vec))
        raw = fit.y[(fit.group == level).to_numpy()]
        rows.append({"group": level, "n": len(raw), "mean": raw.mean(), "sd": raw.std(ddof=1) if len(raw) > 1 else np.nan,
                     "adj_mean": est, "se": se, "ci_low": est - tcrit * se, "ci_high": est + tcrit * se})
    return pd.DataFrame(rows, columns=ADJUSTED_MEANS_COLUMNS)


PAIRWISE_COLUMNS = ["A", "B", "diff", "se", "t", "df", "p_unc", "p_adj", "padjust", "ci_low", "ci_high"]


def ancova_pairwise(
    data: pd.DataFrame,
    dv: str,
    between: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    padjust: str = "bonferroni",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Pairwise comparisons of ANCOVA-adjusted means, p-values adjusted (Bonferroni by default).

    ``diff`` is adjusted mean A minus adjusted mean B, tested with t on the
    ANCOVA's residual degrees of freedom; the confidence interval is
    Bonferroni-widened (alpha / number of pairs) when ``padjust`` is Bonferroni.

    Returns
    -------
    pandas.DataFrame
        A, B, diff, se, t, df, p_unc, p_adj, padjust, ci_low, ci_high.
    """
    fit = _AncovaFit(data, dv, between, covar, categorical)
    if not fit.ok:
        return pd.DataFrame(columns=PAIRWISE_COLUMNS)
    pairs = list(itertools.combinations(fit.levels, 2))
    level_alpha = alpha / len(pairs) if padjust in ("bonf", "bonferroni") else alpha
    tcrit = stats.t.ppf(1 - level_alpha / 2, fit.df_resid)
    rows = []
    for a, b in pairs:
        vec = fit.contrast_vector(a) - fit.contrast_vector(b)
        diff = float(vec @ fit.params)
        se = float(np.sqrt(vec @ fit.cov @ vec))
        t = diff / se
        rows.append({"A": a, "B": b, "diff": diff, "se": se, "t": t, "df": fit.df_resid,
                     "p_unc": float(2 * stats.t.sf(abs(t), fit.df_resid)), "padjust": padjust,
                     "ci_low": diff - tcrit * se, "ci_high": diff + tcrit * se})
    table = pd.DataFrame(rows)
    table["p_adj"] = p_adjust(table["p_unc"], "bonferroni" if padjust == "bonf" else padjust)
    return table[PAIRWISE_COLUMNS]


# ---------------------------------------------------------------------- logistic
LOGISTIC_COLUMNS = [
    "term", "beta", "se", "ci_low", "ci_high", "z", "p", "odds_ratio", "n", "n_events", "n_excluded",
    "converged", "note",
]


def logistic(
    data: pd.DataFrame,
    y: str,
    x: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Binary logistic regression (maximum likelihood); the coefficient of ``x`` as one row.

    Parameters
    ----------
    data
        One row per subject.
    y
        0/1 (or boolean) outcome, e.g. disability progression.
    x, covar, categorical
        As in :func:`thalamus_bidsapp.stats.regression.ols`.

    Returns
    -------
    pandas.DataFrame
        term, beta (log-odds per unit of ``x``), se, Wald ci_low/ci_high, z, p,
        odds_ratio, n, n_events, n_excluded, converged, note (separation,
        non-convergence, covariates without variation).
    """
    used, covar, row = prepare_model(data, y, x, covar, LOGISTIC_COLUMNS)
    endog = pd.to_numeric(used[y].astype(float)) if len(used) else pd.Series(dtype=float)
    row.update(n_events=int(endog.sum()) if len(used) else 0, converged=False, note="")
    if len(used) == 0 or endog.nunique() < 2:
        row["note"] = "outcome has fewer than two classes among complete rows"
        return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    X, dropped = design_matrix(used, x, covar, categorical)
    notes = [f"no variation in {', '.join(dropped)}"] if dropped else []
    if len(used) <= X.shape[1] or np.linalg.matrix_rank(X.to_numpy()) < X.shape[1]:
        row["note"] = "; ".join([*notes, "too few complete rows or collinear design"])
        return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.Logit(endog.to_numpy(), X).fit(disp=False, maxiter=200)
        except (np.linalg.LinAlgError, ValueError) as exc:
            # older statsmodels raise PerfectSeparationError, a ValueError subclass
            row["note"] = "; ".join([*notes, f"fit failed: {exc}"])
            return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    for w in caught:
        if "separation" in str(w.message).lower():
            notes.append("perfect or quasi-perfect separation: estimates unreliable")
            break
    row.update(wald_log_odds(fit, x, notes, alpha))
    return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
