"""ComBat harmonisation of multi-site measurements: empirical Bayes, GAM age term, longitudinal.

Each feature ``y`` (a column of the table, one row per session) follows the
ComBat model (Johnson et al. 2007; Fortin et al. 2018)::

    y = alpha + X beta + gamma_b + delta_b * e

with ``X`` the protected covariates (the effects kept), ``gamma_b`` and
``delta_b`` the additive and multiplicative effects of batch ``b`` (site or
scanner). The features are standardised with the pooled fit (batch
indicators plus covariates, least squares; ``alpha`` is the sample-weighted
mean of the batch intercepts and the pooled variance the mean squared
residual, as neuroCombat does), the batch effects are estimated per batch and
shrunk towards their across-feature means by empirical Bayes (normal prior on
``gamma``, inverse-gamma prior on ``delta^2``, hyperparameters by the method
of moments, posterior means by fixed-point iteration until the relative
change is below ``tol``) and removed::

    y* = sqrt(var_pooled) * (z - gamma*_b) / sqrt(delta*_b) + alpha + X beta

Variants: ``smooth`` covariates enter as a restricted cubic spline (the
non-linear age term of ComBat-GAM; Pomponio et al. 2020); ``subject`` fits a
linear mixed model with a random intercept per subject instead of least
squares, and keeps each subject's intercept in the harmonised data
(longitudinal ComBat; Beer et al. 2020). ``ref_batch`` harmonises to one
batch instead of the pool: it keeps its values, and the others are mapped to
its mean and variance (as neuroCombat's ``ref_batch``). With fewer than two features the
empirical Bayes step has no across-feature prior: the per-batch estimates are
used as they are (location/scale adjustment).

Rows with a missing batch label or covariate come back NaN; a missing
feature value is skipped for that feature only.

References
----------
- Johnson, W. E., Li, C., Rabinovic, A. (2007). Adjusting batch effects in
  microarray expression data using empirical Bayes methods. Biostatistics,
  8(1), 118-127.
- Fortin, J.-P., et al. (2018). Harmonization of cortical thickness
  measurements across scanners and sites. NeuroImage, 167, 104-120.
- Pomponio, R., et al. (2020). Harmonization of large MRI datasets for the
  analysis of brain imaging patterns throughout the lifespan. NeuroImage,
  208, 116450 (ComBat-GAM).
- Beer, J. C., et al. (2020). Longitudinal ComBat: A method for harmonizing
  longitudinal multi-scanner imaging data. NeuroImage, 220, 117129.
- Harrell, F. E. (2015). Regression Modeling Strategies, 2nd ed., section
  2.4.5 (restricted cubic splines and their default knots).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from thalamus_bidsapp.stats._frame import check_columns, ordered_levels
from thalamus_bidsapp.stats._mixed import random_intercept_fit

LOGGER = logging.getLogger(__name__)

__all__ = ["CONFOUNDED_R2", "HarmonizationResult", "BatchProblem", "apply_combat", "batch_problems", "combat",
           "encode_covariates", "covariate_matrix", "spline_knots"]

#: Knot quantiles of a restricted cubic spline, by number of knots (Harrell 2015, table 2.3).
KNOT_QUANTILES = {3: (0.10, 0.50, 0.90), 4: (0.05, 0.35, 0.65, 0.95), 5: (0.05, 0.275, 0.50, 0.725, 0.95)}
#: Share of a batch indicator's variance the protected covariates may explain before the batch counts as confounded.
CONFOUNDED_R2 = 0.99


class BatchProblem(ValueError):
    """A batch that ComBat cannot estimate: too few sessions, or confounded with protected covariates."""

    def __init__(self, batch: object, message: str) -> None:
        super().__init__(message)
        self.batch = batch


@dataclass(frozen=True)
class HarmonizationResult:
    """What :func:`combat` returns.

    Attributes
    ----------
    data
        The harmonised features, same index and columns as the features given
        (NaN where a row was not used).
    used
        Boolean Series (same index): the rows that entered the model.
    model
        The fitted parameters as plain JSON data (see :func:`combat`); give it
        to :func:`apply_combat` to harmonise new sessions the same way.
    """

    data: pd.DataFrame
    used: pd.Series
    model: dict[str, Any]


# ------------------------------------------------------------------ covariates
def spline_knots(values: Sequence[float] | pd.Series, n_knots: int = 4) -> list[float]:
    """Knots of a restricted cubic spline at Harrell's quantiles of ``values`` (NaN ignored).

    Examples
    --------
    >>> spline_knots(range(101))
    [5.0, 35.0, 65.0, 95.0]
    """
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), float)
    if n_knots not in KNOT_QUANTILES:
        raise ValueError(f"spline_knots: n_knots must be one of {sorted(KNOT_QUANTILES)}")
    knots = np.unique(np.quantile(x, KNOT_QUANTILES[n_knots])) if x.size else np.array([])
    if knots.size < 3:
        raise ValueError(f"spline_knots: the values have fewer than 3 distinct quantiles ({knots.tolist()})")
    return [float(k) for k in knots]


def _rcs_terms(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """The non-linear columns of a restricted cubic spline (linear beyond the outer knots), scaled by range^2."""
    t = np.asarray(knots, float)
    k = t.size

    def cube(u: np.ndarray) -> np.ndarray:
        return np.clip(u, 0, None) ** 3

    last, before = t[-1], t[-2]
    cols = [(cube(x - t[j]) - cube(x - before) * (last - t[j]) / (last - before)
             + cube(x - last) * (before - t[j]) / (last - before)) / (last - t[0]) ** 2 for j in range(k - 2)]
    return np.column_stack(cols)


def encode_covariates(data: pd.DataFrame, continuous: Sequence[str] = (), categorical: Sequence[str] = (),
                      smooth: Sequence[str] = (), n_knots: int = 4) -> dict[str, Any]:
    """How the protected covariates become design columns, as plain JSON data.

    ``continuous`` columns enter linearly, ``categorical`` ones as indicators
    of every level but the first (:func:`~thalamus_bidsapp.stats._frame.ordered_levels`),
    ``smooth`` ones (also listed in ``continuous``, or added to them) with the
    extra restricted cubic spline columns at :func:`spline_knots`.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [30, 40, 50], "sex": ["F", "M", "F"]})
    >>> encode_covariates(frame, ["age"], ["sex"])
    {'continuous': ['age'], 'categorical': {'sex': ['F', 'M']}, 'smooth': {}}
    """
    check_columns(data, [*continuous, *categorical, *smooth], "encode_covariates")
    continuous = list(dict.fromkeys([*continuous, *smooth]))
    return {
        "continuous": continuous,
        "categorical": {c: [_plain(v) for v in ordered_levels(data[c].astype(object))] for c in categorical},
        "smooth": {c: spline_knots(data[c], n_knots) for c in smooth},
    }


def covariate_matrix(data: pd.DataFrame, encoding: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The design columns of the protected covariates (no intercept) and their names.

    A row with a missing covariate, or a categorical level the encoding does
    not know, has NaN in the columns of that covariate.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [30, 40, 50], "sex": ["F", "M", "F"]})
    >>> matrix, names = covariate_matrix(frame, encode_covariates(frame, ["age"], ["sex"]))
    >>> names, matrix.tolist()
    (['sex[M]', 'age'], [[0.0, 30.0], [1.0, 40.0], [0.0, 50.0]])
    """
    cols, names = [], []
    for column, levels in encoding["categorical"].items():
        values = data[column].astype(object).map(_plain)
        known = values.isin(levels) & values.notna()
        for level in levels[1:]:
            cols.append(np.where(known, (values == level).astype(float), np.nan))
            names.append(f"{column}[{level}]")
    for column in encoding["continuous"]:
        x = pd.to_numeric(data[column], errors="coerce").to_numpy(float)
        cols.append(x)
        names.append(column)
        if column in encoding["smooth"]:
            terms = _rcs_terms(x, encoding["smooth"][column])
            cols.extend(terms.T)
            names.extend(f"{column}_spline{j + 1}" for j in range(terms.shape[1]))
    matrix = np.column_stack(cols) if cols else np.zeros((len(data), 0))
    return matrix, names


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value  # numpy scalars are not JSON data


# ------------------------------------------------------------------ checks
def batch_problems(batch: pd.Series, covariates: np.ndarray, names: Sequence[str] = (),
                   min_sessions: int = 2) -> list[BatchProblem]:
    """Batches ComBat cannot estimate: fewer than ``min_sessions`` rows, or predicted by the covariates.

    A batch is confounded when the covariates (with an intercept) explain at
    least :data:`CONFOUNDED_R2` of the variance of its indicator, for
    example every patient on one scanner with diagnosis protected; the
    message names the covariate columns that do so on their own, if any.

    Examples
    --------
    >>> [problem.batch for problem in batch_problems(pd.Series(["a", "a", "b"]), np.zeros((3, 0)))]
    ['b']
    """
    problems: list[BatchProblem] = []
    labels = batch.astype(object).to_numpy()
    levels = ordered_levels(batch.astype(object))
    for level in levels:
        n = int((labels == level).sum())
        if n < min_sessions:
            problems.append(BatchProblem(level, f"batch {level!r} has {n} session(s); ComBat needs at least "
                                                f"{min_sessions} per batch to estimate its mean and variance"))
    if len(levels) < 2 or covariates.shape[1] == 0:
        return problems
    for level in levels:
        indicator = (labels == level).astype(float)
        if _explained(indicator, covariates) < CONFOUNDED_R2:
            continue
        alone = [name for j, name in enumerate(names) if _explained(indicator, covariates[:, [j]]) >= CONFOUNDED_R2]
        which = ", ".join(alone) if alone else "the protected covariates together"
        problems.append(BatchProblem(level, f"batch {level!r} is confounded with {which}: the protected "
                                            "covariates predict which sessions belong to it, so its effect "
                                            "cannot be told apart from theirs"))
    return problems


def _explained(target: np.ndarray, columns: np.ndarray) -> float:
    """R^2 of ``target`` on ``columns`` plus an intercept."""
    design = np.column_stack([np.ones(len(target)), columns])
    fitted = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    total = float(((target - target.mean()) ** 2).sum())
    return 1.0 - float(((target - fitted) ** 2).sum()) / total if total > 0 else 1.0


# ------------------------------------------------------------------ fit
def combat(data: pd.DataFrame, features: Sequence[str], batch: str, *, continuous: Sequence[str] = (),
           categorical: Sequence[str] = (), smooth: Sequence[str] = (), subject: str | None = None,
           eb: bool = True, ref_batch: object | None = None, tol: float = 1e-4,
           max_iter: int = 1000) -> HarmonizationResult:
    """Harmonise ``features`` across the levels of ``batch``, keeping the protected covariates' effects.

    Parameters
    ----------
    data
        One row per session: the feature columns, the batch column, the
        covariate columns (and ``subject`` for longitudinal ComBat).
    features
        Columns to harmonise (numeric).
    batch
        Column of batch labels (site or scanner).
    continuous, categorical, smooth
        Protected covariates: linear, indicator-coded, and with a restricted
        cubic spline (ComBat-GAM) respectively.
    subject
        Column of subject labels: fit a random subject intercept (longitudinal ComBat).
    eb
        Empirical Bayes shrinkage of the batch effects (needs two features or more).
    ref_batch
        A batch to harmonise the others to (as neuroCombat's ``ref_batch``):
        its rows come back unchanged, the grand mean is its intercept and the
        pooled variance its residual variance. None: the pooled mean and
        variance of all batches.
    tol, max_iter
        Convergence of the empirical Bayes iteration (relative change).

    Returns
    -------
    HarmonizationResult
        ``model`` holds ``kind`` (combat, combat-gam, longitudinal-combat,
        longitudinal-combat-gam),
        ``batches`` and ``n_per_batch``, ``covariates`` (the encoding of
        :func:`encode_covariates`, plus ``names``), ``eb``, and per feature
        ``alpha`` (grand mean), ``beta`` (covariate coefficients by name),
        ``var_pooled``, ``gamma_hat``/``delta_hat`` (per-batch estimates),
        ``gamma_star``/``delta_star`` (after shrinkage), ``priors`` per batch
        (``gamma_bar``, ``tau2``, ``a``, ``b``), ``ref_batch`` (None without
        one) and, for longitudinal ComBat, ``random_intercepts`` by subject.

    Raises
    ------
    BatchProblem
        The first batch with fewer than 2 usable rows, or confounded with the
        protected covariates (:func:`batch_problems`); fewer than 2 batches.

    Examples
    --------
    Site b measures 10 mL more, with the same spread: both sites end at the
    pooled mean (7), the spread scaled to the pooled variance.

    >>> data = pd.DataFrame({"site": ["a"] * 3 + ["b"] * 3, "x": [1.0, 2, 3, 11, 12, 13],
    ...                      "y": [2.0, 3, 4, 2, 3, 4]})
    >>> result = combat(data, ["x", "y"], "site", eb=False)
    >>> result.data["x"].round(4).tolist()
    [6.1835, 7.0, 7.8165, 6.1835, 7.0, 7.8165]
    """
    check_columns(data, [*features, batch, *continuous, *categorical, *smooth, *([subject] if subject else [])],
                  "combat")
    encoding = encode_covariates(data, continuous, categorical, smooth)
    covars, names = covariate_matrix(data, encoding)
    used = data[batch].notna().to_numpy() & np.isfinite(covars).all(axis=1)
    if subject is not None:
        used &= data[subject].notna().to_numpy()
    labels = data.loc[used, batch].astype(object)
    levels = ordered_levels(labels)
    if len(levels) < 2:
        raise BatchProblem(levels[0] if levels else None,
                           f"only {len(levels)} batch ({', '.join(map(str, levels)) or 'none'}) among the usable "
                           "rows: there is nothing to harmonise")
    problems = batch_problems(labels, covars[used], names)
    if problems:
        raise problems[0]
    ref = _reference(levels, ref_batch)
    onehot = np.column_stack([(labels.to_numpy() == level).astype(float) for level in levels])
    y = data.loc[used, list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    groups = data.loc[used, subject].astype(str).to_numpy() if subject else None
    fits = [_standardise(y[:, f], onehot, covars[used], groups, ref) for f in range(y.shape[1])]
    z = np.column_stack([fit["z"] for fit in fits])
    estimates = _batch_estimates(z, onehot, eb=eb and len(features) >= 2, tol=tol, max_iter=max_iter)
    if ref is not None:  # the reference keeps its values: no location or scale change
        estimates["gamma_star"][ref], estimates["delta_star"][ref] = 0.0, 1.0
    out = np.full((len(data), len(features)), np.nan)
    member = onehot.argmax(axis=1)
    for f, fit in enumerate(fits):
        gamma, delta = estimates["gamma_star"][member, f], estimates["delta_star"][member, f]
        out[used, f] = np.sqrt(fit["var_pooled"]) * (z[:, f] - gamma) / np.sqrt(delta) + fit["kept"]
        if ref is not None:
            out[np.flatnonzero(used)[member == ref], f] = y[member == ref, f]
    model = _model_json(features, levels, onehot, encoding, names, fits, estimates, subject, smooth)
    model["ref_batch"] = None if ref is None else str(levels[ref])
    return HarmonizationResult(pd.DataFrame(out, index=data.index, columns=list(features)),
                               pd.Series(used, index=data.index), model)


def _reference(levels: list[object], ref_batch: object | None) -> int | None:
    """Index of the reference batch among ``levels`` (matched as text), None without one."""
    if ref_batch is None:
        return None
    names = [str(level) for level in levels]
    if str(ref_batch) not in names:
        raise BatchProblem(ref_batch, f"the reference batch {ref_batch!r} is not among the usable batches "
                                      f"({', '.join(names)})")
    return names.index(str(ref_batch))


def _standardise(y: np.ndarray, onehot: np.ndarray, covars: np.ndarray, groups: np.ndarray | None,
                 ref: int | None = None) -> dict[str, Any]:
    """Pooled fit of one feature; its standardised values ``z`` and what the harmonised values keep.

    With a reference batch ``ref`` the grand mean is its intercept and the
    pooled variance the mean squared residual of its rows (neuroCombat's ``ref_batch``).
    """
    finite = np.isfinite(y)
    design = np.column_stack([onehot, covars])
    random = np.zeros(len(y))
    intercepts: dict[str, float] = {}
    if groups is None:
        x, yy = design[finite], y[finite]
        beta = np.linalg.solve(x.T @ x, x.T @ yy)
        var_pooled = float(np.mean((yy - x @ beta) ** 2))
    else:
        beta, var_pooled, intercepts = random_intercept_fit(y[finite], onehot[finite], covars[finite], groups[finite])
        random = np.array([intercepts.get(g, 0.0) for g in groups])
    n_batch = onehot.shape[1]
    weights = onehot[finite].sum(axis=0) / finite.sum()
    alpha = float(weights @ beta[:n_batch]) if ref is None else float(beta[ref])
    if ref is not None:
        in_ref = finite & (onehot[:, ref] == 1)
        var_pooled = float(np.mean((y[in_ref] - design[in_ref] @ beta - random[in_ref]) ** 2))
    covariate_part = covars @ beta[n_batch:]
    var_pooled = var_pooled if var_pooled > 0 else 1.0
    kept = alpha + covariate_part + random
    return {"z": (y - kept) / np.sqrt(var_pooled), "kept": kept, "alpha": alpha, "beta": beta[n_batch:],
            "batch_beta": beta[:n_batch], "var_pooled": var_pooled, "random_intercepts": intercepts}


def _batch_estimates(z: np.ndarray, onehot: np.ndarray, *, eb: bool, tol: float, max_iter: int) -> dict[str, Any]:
    """Per-batch location and scale of the standardised data, shrunk by empirical Bayes when ``eb``."""
    n_batch, n_feat = onehot.shape[1], z.shape[1]
    gamma_hat = np.empty((n_batch, n_feat))
    delta_hat = np.empty((n_batch, n_feat))
    counts = np.empty((n_batch, n_feat))
    for b in range(n_batch):
        block = z[onehot[:, b] == 1]
        counts[b] = np.isfinite(block).sum(axis=0)
        gamma_hat[b] = np.nanmean(block, axis=0)
        delta_hat[b] = np.nanvar(block, axis=0, ddof=1)
    delta_hat[delta_hat == 0] = 1.0
    priors: list[dict[str, float]] = []
    if not eb:
        return {"gamma_hat": gamma_hat, "delta_hat": delta_hat, "gamma_star": gamma_hat.copy(),
                "delta_star": delta_hat.copy(), "priors": priors, "eb": False}
    gamma_star, delta_star = np.empty_like(gamma_hat), np.empty_like(delta_hat)
    for b in range(n_batch):
        gamma_bar, tau2 = gamma_hat[b].mean(), gamma_hat[b].var(ddof=1)
        mean_d, var_d = delta_hat[b].mean(), delta_hat[b].var(ddof=1)
        a_prior = (2 * var_d + mean_d ** 2) / var_d
        b_prior = (mean_d * var_d + mean_d ** 3) / var_d
        gamma_star[b], delta_star[b] = _posterior(z[onehot[:, b] == 1], gamma_hat[b], delta_hat[b], counts[b],
                                                  (gamma_bar, tau2, a_prior, b_prior), tol, max_iter)
        priors.append({"gamma_bar": float(gamma_bar), "tau2": float(tau2), "a": float(a_prior), "b": float(b_prior)})
    return {"gamma_hat": gamma_hat, "delta_hat": delta_hat, "gamma_star": gamma_star, "delta_star": delta_star,
            "priors": priors, "eb": True}


def _posterior(block: np.ndarray, gamma_hat: np.ndarray, delta_hat: np.ndarray, n: np.ndarray,
               prior: tuple[float, float, float, float], tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Johnson et al.'s fixed-point iteration for the posterior batch location and scale of each feature."""
    gamma_bar, tau2, a_prior, b_prior = prior
    gamma_old, delta_old = gamma_hat.copy(), delta_hat.copy()
    for _ in range(max_iter):
        gamma_new = (tau2 * n * gamma_hat + delta_old * gamma_bar) / (tau2 * n + delta_old)
        sum2 = np.nansum((block - gamma_new) ** 2, axis=0)
        delta_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
        # The reference implementations (sva's ComBat, neuroCombat) divide by the signed previous value;
        # kept as they do so that the same data give the same estimates.
        with np.errstate(divide="ignore", invalid="ignore"):
            change = max(np.nanmax(np.abs(gamma_new - gamma_old) / gamma_old),
                         np.nanmax(np.abs(delta_new - delta_old) / delta_old))
        gamma_old, delta_old = gamma_new, delta_new
        if change <= tol:
            break
    else:
        LOGGER.warning("combat: the empirical Bayes estimates did not converge in %d iterations", max_iter)
    return gamma_old, delta_old


def _model_json(features: Sequence[str], levels: list[object], onehot: np.ndarray, encoding: dict[str, Any],
                names: list[str], fits: list[dict[str, Any]], estimates: dict[str, Any], subject: str | None,
                smooth: Sequence[str]) -> dict[str, Any]:
    """The fitted parameters as plain JSON data (see :func:`combat`)."""
    batches = [str(level) for level in levels]
    per_feature = {}
    for f, (name, fit) in enumerate(zip(features, fits)):
        entry = {"alpha": fit["alpha"], "beta": dict(zip(names, map(float, fit["beta"]))),
                 "var_pooled": fit["var_pooled"]}
        for key in ("gamma_hat", "delta_hat", "gamma_star", "delta_star"):
            entry[key] = dict(zip(batches, map(float, estimates[key][:, f])))
        if subject is not None:
            entry["random_intercepts"] = fit["random_intercepts"]
        per_feature[str(name)] = entry
    kind = ("longitudinal-" if subject else "") + ("combat-gam" if smooth else "combat")
    return {"kind": kind, "batches": batches, "n_per_batch": dict(zip(batches, map(int, onehot.sum(axis=0)))),
            "covariates": {**encoding, "names": names}, "subject": subject, "eb": estimates["eb"],
            "priors": dict(zip(batches, estimates["priors"])), "features": per_feature}


# ------------------------------------------------------------------ new sessions
def apply_combat(data: pd.DataFrame, model: Mapping[str, Any], batch: str, subject: str | None = None) -> pd.DataFrame:
    """Harmonise new rows with a fitted model (:func:`combat`'s ``model``), feature by feature.

    A subject the longitudinal model did not see gets a random intercept of 0
    (its own level is then scaled with the residual). Rows with a missing
    covariate come back NaN.

    Raises
    ------
    ValueError
        A batch the model was not fitted on (named), or a missing column.

    Examples
    --------
    >>> data = pd.DataFrame({"site": ["a"] * 3 + ["b"] * 3, "x": [1.0, 2, 3, 11, 12, 13],
    ...                      "y": [2.0, 3, 4, 2, 3, 4]})
    >>> model = combat(data, ["x", "y"], "site", eb=False).model
    >>> apply_combat(pd.DataFrame({"site": ["b"], "x": [12.0], "y": [3.0]}), model, "site")["x"].round(4).tolist()
    [7.0]
    """
    features = list(model["features"])
    check_columns(data, [*features, batch, *([subject] if subject else [])], "apply_combat")
    labels = data[batch].astype(object).map(lambda v: None if pd.isna(v) else str(v))
    unknown = sorted(set(labels.dropna()) - set(model["batches"]))
    if unknown:
        raise ValueError(f"apply_combat: batch(es) {', '.join(unknown)} not in the model "
                         f"(fitted on {', '.join(model['batches'])})")
    covars, names = covariate_matrix(data, model["covariates"])
    out = pd.DataFrame(np.nan, index=data.index, columns=features)
    for name in features:
        p = model["features"][name]
        beta = np.array([p["beta"][n] for n in names])
        kept = p["alpha"] + covars @ beta
        if subject is not None and "random_intercepts" in p:
            kept = kept + data[subject].astype(str).map(p["random_intercepts"]).fillna(0.0).to_numpy(float)
        gamma = labels.map(p["gamma_star"]).to_numpy(float)
        delta = labels.map(p["delta_star"]).to_numpy(float)
        y = pd.to_numeric(data[name], errors="coerce").to_numpy(float)
        sd = np.sqrt(p["var_pooled"])
        out[name] = (y - kept - sd * gamma) / np.sqrt(delta) + kept
    return out
