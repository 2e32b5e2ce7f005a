"""DeepGRAI-style disability analysis: EDSS course, ANCOVA of thalamic change, logistic model.

References
----------
- Zivadinov, R., et al. (DeepGRAI Registry). Thalamic atrophy measured by
  artificial intelligence in a multicentre clinical routine real-world study
  is associated with disability progression. J Neurol Neurosurg Psychiatry:
  progression / improvement / stability compared
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
- Tukey, J. W. (1953) / Kramer, C. Y. (1956): studentized-range adjustment
  of all pairwise comparisons of (adjusted) means, as R's ``emmeans``
  ``adjust = "tukey"``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import check_columns
from thalamus_bidsapp.stats.fitcheck import mle_problem, observed_probabilities
from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.regression import complete_cases, formula_design, prepare_model, wald_table

LOGGER = logging.getLogger(__name__)

__all__ = [
    "ADJUSTED_MEANS_COLUMNS",
    "ANCOVA_COLUMNS",
    "COURSE_LEVELS",
    "DEFAULT_BANDS",
    "IMPROVEMENT",
    "LOGISTIC_COLUMNS",
    "PADJUST_METHODS",
    "PAIRWISE_COLUMNS",
    "PROGRESSION",
    "STABLE",
    "ancova",
    "ancova_adjusted_means",
    "ancova_pairwise",
    "classify_edss_course",
    "logistic",
    "progression_threshold",
]

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

    Examples
    --------
    >>> progression_threshold([0.0, 3.0, 6.5]).tolist()
    [1.5, 1.0, 0.5]
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
    """``dv ~ C(between) + covariates`` fitted with statsmodels' formula API, shared by the ANCOVA functions."""

    def __init__(self, data: pd.DataFrame, dv: str, between: str, covar: Sequence[str], categorical: Sequence[str]):
        import statsmodels.formula.api as smf

        self.between = between
        self.covar = [c for c in covar if c != between]
        check_columns(data, [dv, between, *self.covar], "ancova")
        used, self.n_excluded = complete_cases(data, [dv, between, *self.covar])
        self.design = formula_design(used, dv, [between, *self.covar], [between, *categorical], keep=[between])
        group = self.design.frame["v1"]
        self.levels = list(group.cat.categories)
        self.group = group
        self.y = self.design.frame["v0"].to_numpy(dtype=float)
        self.n_groups = len(self.levels)
        self.ok = False
        if self.n_groups < 2:
            return
        self.model = smf.ols(self.design.formula(), self.design.frame)
        exog = self.model.exog
        self.df_resid = exog.shape[0] - exog.shape[1]
        self.ok = self.df_resid > 0 and np.linalg.matrix_rank(exog) == exog.shape[1]
        if self.ok:
            self.fit = self.model.fit()
            self.params = np.asarray(self.fit.params)
            self.cov = np.asarray(self.fit.cov_params())

    def contrast_vector(self, level: object) -> np.ndarray:
        """Linear combination giving the group's mean at the covariates' sample means.

        Numeric covariates at their means, dummy-coded categorical ones at
        their sample proportions (SPSS's estimated marginal means).
        """
        names = self.model.exog_names
        vec = np.asarray(self.model.exog, dtype=float).mean(axis=0)
        for i, name in enumerate(names):
            if name.startswith("C(v1)[T."):
                vec[i] = 1.0 if name == f"C(v1)[T.{level}]" else 0.0
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

    ``dv ~ C(between) + covariates`` fitted with
    :func:`statsmodels.formula.api.ols` and tabulated with
    :func:`statsmodels.stats.anova.anova_lm` (``typ=2``).

    Parameters
    ----------
    data
        One row per subject.
    dv
        Dependent variable (e.g. % thalamic volume change).
    between
        Grouping column (e.g. EDSS course); levels in natural order
        (categorical order, numbers numerically).
    covar
        Covariates (e.g. age and follow-up years); those in ``categorical`` as ``C()``.

    Returns
    -------
    pandas.DataFrame
        source, ss, df, F, p, np2 (partial eta squared); the last row is the
        residual. Empty when there are fewer than two groups or too few rows.

    Notes
    -----
    Without interactions, type II and type III sums of squares coincide for
    every term, so this matches pingouin's ``ancova`` and SPSS's GLM.

    Examples
    --------
    Field (2013), chapter 11: dose F(2, 26) = 4.14, p = .027.

    >>> libido = [3, 2, 5, 2, 2, 2, 7, 2, 4, 7, 5, 3, 4, 4, 7, 5, 4, 9, 2, 6, 3, 4, 4, 4, 6, 4, 6, 2, 8, 5]
    >>> partner = [4, 1, 5, 1, 2, 2, 7, 4, 5, 5, 3, 1, 2, 2, 6, 4, 2, 1, 3, 5, 4, 3, 3, 2, 0, 1, 3, 0, 1, 0]
    >>> df = pd.DataFrame({"dose": [1] * 9 + [2] * 8 + [3] * 13, "libido": libido, "partner": partner})
    >>> table = ancova(df, "libido", "dose", ["partner"]).set_index("source")
    >>> round(float(table.loc["dose", "F"]), 2), round(float(table.loc["dose", "p"]), 3)
    (4.14, 0.027)
    """
    from statsmodels.stats.anova import anova_lm

    fit = _AncovaFit(data, dv, between, covar, categorical)
    if not fit.ok:
        return pd.DataFrame(columns=ANCOVA_COLUMNS)
    table = anova_lm(fit.fit, typ=2)
    ss_resid = float(table.loc["Residual", "sum_sq"])
    rows = []
    for name, rec in table.iterrows():
        source = "Residual" if name == "Residual" else fit.design.term_name(str(name))
        ss = float(rec["sum_sq"])
        last = name == "Residual"
        rows.append({"source": source, "ss": ss, "df": int(round(float(rec["df"]))),
                     "F": np.nan if last else float(rec["F"]), "p": np.nan if last else float(rec["PR(>F)"]),
                     "np2": np.nan if last else ss / (ss + ss_resid)})
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

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["a", "a", "a", "b", "b", "b"], "y": [1.0, 2, 3, 4, 5, 6],
    ...                    "age": [30.0, 40, 50, 30, 40, 50]})
    >>> ancova_adjusted_means(df, "y", "g", ["age"])["adj_mean"].round(3).tolist()
    [2.0, 5.0]
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


#: Columns of the :func:`ancova_pairwise` table, in order.
PAIRWISE_COLUMNS = [
    "A", "B", "diff", "se", "t", "df", "p", "p_bonferroni", "p_tukey", "p_adjusted", "ci_low", "ci_high", "padjust",
]

#: The adjustments :func:`ancova_pairwise` applies to ``p_adjusted`` and the interval.
PADJUST_METHODS = ("bonferroni", "tukey", "none")


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
    r"""Pairwise comparisons of ANCOVA-adjusted means with Bonferroni and Tukey adjustment.

    ``diff`` is adjusted mean A minus adjusted mean B, tested with t on the
    ANCOVA's residual degrees of freedom. Both adjusted p-values are given:
    Bonferroni, :math:`\min(1, m p)` over the :math:`m` pairs, and Tukey
    (Tukey-Kramer, the studentized range of the ``k`` group means:
    :math:`P(Q_{k,df} > \sqrt 2 |t|)`, as ``emmeans`` with
    ``adjust = "tukey"``; without covariates it equals Tukey's HSD).

    Parameters
    ----------
    padjust : {"bonferroni", "tukey", "none"}
        The adjustment of ``p_adjusted`` and of the simultaneous confidence
        interval ``ci_low`` / ``ci_high``: Bonferroni (t at alpha / m),
        Tukey (studentized range) or none.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PAIRWISE_COLUMNS`: A, B, diff (A - B), se, t, df,
        p (unadjusted), p_bonferroni, p_tukey (both always), p_adjusted (the
        one ``padjust`` names, ``p`` for ``"none"``), ci_low, ci_high,
        padjust (the adjustment used).

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
    ...                    "y": [1.0, 2, 3, 2, 4, 5, 6, 5, 2, 3, 4, 3]})
    >>> table = ancova_pairwise(df, "y", "g").set_index(["A", "B"])
    >>> table["diff"].round(6).tolist()
    [-3.0, -1.0, 2.0]
    >>> bool((table["p_tukey"] <= table["p_bonferroni"]).all())
    True
    >>> bool((table["p_adjusted"] == table["p_bonferroni"]).all())
    True
    """
    if padjust == "bonf":
        padjust = "bonferroni"
    if padjust not in PADJUST_METHODS:
        raise ValueError(f"ancova_pairwise: padjust must be one of {PADJUST_METHODS}, not {padjust!r}")
    fit = _AncovaFit(data, dv, between, covar, categorical)
    if not fit.ok:
        return pd.DataFrame(columns=PAIRWISE_COLUMNS)
    pairs = list(itertools.combinations(fit.levels, 2))
    k, df = len(fit.levels), fit.df_resid
    if padjust == "bonferroni":
        half_width = stats.t.ppf(1 - alpha / len(pairs) / 2, df)
    elif padjust == "tukey":
        half_width = stats.studentized_range.ppf(1 - alpha, k, df) / np.sqrt(2)
    else:
        half_width = stats.t.ppf(1 - alpha / 2, df)
    rows = []
    for a, b in pairs:
        vec = fit.contrast_vector(a) - fit.contrast_vector(b)
        diff = float(vec @ fit.params)
        se = float(np.sqrt(vec @ fit.cov @ vec))
        t = diff / se if se > 0 else np.nan  # a constant outcome has no residual variance: no test
        rows.append({"A": a, "B": b, "diff": diff, "se": se, "t": t, "df": df,
                     "p": float(2 * stats.t.sf(abs(t), df)),
                     "p_tukey": float(np.clip(stats.studentized_range.sf(abs(t) * np.sqrt(2), k, df), 0, 1)),
                     "ci_low": diff - half_width * se, "ci_high": diff + half_width * se, "padjust": padjust})
    table = pd.DataFrame(rows)
    table["p_bonferroni"] = p_adjust(table["p"], "bonferroni")
    table["p_adjusted"] = table[{"bonferroni": "p_bonferroni", "tukey": "p_tukey", "none": "p"}[padjust]]
    return table[PAIRWISE_COLUMNS]


# ---------------------------------------------------------------------- logistic
LOGISTIC_COLUMNS = [
    "term", "beta", "se", "ci_low", "ci_high", "z", "p", "odds_ratio", "n", "n_events", "n_excluded",
    "converged", "note",
]


def logistic(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    covar: Sequence[str] = (),
    categorical: Sequence[str] = (),
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Binary logistic regression (maximum likelihood) of ``y`` on ``x`` and covariates: the full table.

    Fitted with :func:`statsmodels.formula.api.logit` as ``y ~ x + covariates``.

    Parameters
    ----------
    data
        One row per subject.
    x, y
        Predictor of interest and 0/1 (or boolean) outcome, e.g. disability
        progression (keyword-only, as in :func:`~thalamus_bidsapp.stats.regression.ols`).
    covar, categorical
        As in :func:`thalamus_bidsapp.stats.regression.ols`.

    Returns
    -------
    pandas.DataFrame
        One row per term (``Intercept``, ``x``, covariates): term, beta
        (log-odds per unit), se, Wald ci_low/ci_high, z, p, odds_ratio; and
        on every row n, n_events, n_excluded, converged, note (separation,
        covariates without variation). A model that cannot be fitted (too few
        rows or a collinear design, perfect separation, a singular Hessian,
        no convergence) gives one row, for ``x``, with empty estimates and
        the reason in ``note``.

    Examples
    --------
    Spector & Mazzeo (1980) in Greene, Econometric Analysis, Table 21.1:
    PSI 2.378688 (SE 1.064564).

    >>> import statsmodels.api as sm
    >>> df = sm.datasets.spector.load_pandas().data
    >>> table = logistic(df, x="PSI", y="GRADE", covar=["GPA", "TUCE"]).set_index("term")
    >>> round(float(table.loc["PSI", "beta"]), 6), round(float(table.loc["PSI", "se"]), 6)
    (2.378688, 1.064564)
    """
    import statsmodels.formula.api as smf

    used, covar, row = prepare_model(data, x, y, covar, LOGISTIC_COLUMNS)
    endog = pd.to_numeric(used[y].astype(float)) if len(used) else pd.Series(dtype=float)
    row.update(n_events=int(endog.sum()) if len(used) else 0, converged=False, note="")
    if len(used) == 0 or endog.nunique() < 2:
        row["note"] = "outcome has fewer than two classes among complete rows"
        return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    design = formula_design(used.assign(**{y: endog}), y, [x, *covar], categorical, keep=[x])
    notes = [f"no variation in {', '.join(design.dropped)}"] if design.dropped else []
    model = smf.logit(design.formula(), design.frame)
    exog = model.exog
    if len(used) <= exog.shape[1] or np.linalg.matrix_rank(exog) < exog.shape[1]:
        row["note"] = "; ".join([*notes, "too few complete rows or collinear design"])
        return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = model.fit(disp=False, maxiter=200)
            problem = mle_problem(fit, observed_probabilities(fit.predict(), model.endog))
        except (np.linalg.LinAlgError, ValueError) as exc:
            # older statsmodels raise PerfectSeparationError, a ValueError subclass
            row["note"] = "; ".join([*notes, f"fit failed: {exc}"])
            return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    if problem is None and any("separation" in str(w.message).lower() for w in caught):
        problem = "perfect or quasi-perfect separation: no finite estimate exists"
    if problem is not None:
        row["note"] = "; ".join([*notes, f"not estimable: {problem} ({row['n_events']} events in {row['n']} rows)"])
        return pd.DataFrame([row], columns=LOGISTIC_COLUMNS)
    table = wald_table(fit, design, notes, alpha)
    for name in ("n", "n_events", "n_excluded"):
        table[name] = row[name]
    return table[LOGISTIC_COLUMNS]
