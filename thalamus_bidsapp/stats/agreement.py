"""Volumetric agreement between an automated method and a reference (manual) method.

One statistic per function, in pingouin's style: paired arrays in (``x`` the
reference, e.g. manual volumes; ``y`` the method under test, same units), a
one-row :class:`pandas.DataFrame` with named columns out. Pairs with a missing
value in either array are dropped. With fewer than three complete pairs the
statistics are undefined: the functions then return NaN (and log a warning)
instead of raising, so a group analysis with few manual masks still finishes.

Functions
---------
- :func:`concordance_ccc`: Lin's concordance correlation coefficient, 95% CI.
- :func:`ols_agreement`: OLS of ``y`` on ``x``: slope (95% CI), intercept,
  residual SD.
- :func:`icc3` / :func:`icc3_long`: ICC(3,1) (two-way mixed, single rater,
  consistency) with 95% CI, via :func:`pingouin.intraclass_corr`.
- :func:`bland_altman`: bias, SD, 95% limits of agreement and the
  proportional-bias slope.
- :func:`volumetric_agreement`: all of the above in one row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

__all__ = [
    "bland_altman",
    "concordance_ccc",
    "icc3",
    "icc3_long",
    "ols_agreement",
    "volumetric_agreement",
]

#: Smallest number of complete pairs for which the statistics are computed:
#: the OLS residual SD and Lin's CCC variance both have n - 2 degrees of freedom.
MIN_PAIRS = 3


def _paired(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _too_few(n: int, what: str) -> bool:
    if n < MIN_PAIRS:
        logger.warning("%s: %d complete pair(s), at least %d needed; returning NaN", what, n, MIN_PAIRS)
        return True
    return False


def concordance_ccc(x: npt.ArrayLike, y: npt.ArrayLike, confidence: float = 0.95) -> pd.DataFrame:
    r"""Lin's concordance correlation coefficient with a Fisher-z confidence interval.

    .. math::

        \hat\rho_c = \frac{2 s_{xy}}{s_x^2 + s_y^2 + (\bar x - \bar y)^2}

    with the moments computed with divisor ``n`` as in Lin (1989). The CI is
    built on :math:`Z = \operatorname{atanh}(\hat\rho_c)` with Lin's (1989)
    asymptotic variance (as corrected in Lin 2000):

    .. math::

        \sigma_Z^2 = \frac{1}{n-2}\left[
            \frac{(1-r^2)\rho_c^2}{(1-\rho_c^2)r^2}
            + \frac{2\rho_c^3(1-\rho_c)u^2}{r(1-\rho_c^2)^2}
            - \frac{\rho_c^4 u^4}{2r^2(1-\rho_c^2)^2}\right],
        \qquad u = \frac{\bar y - \bar x}{\sqrt{s_x s_y}}

    and back-transformed with ``tanh``. This matches ``epiR::epi.ccc`` and
    ``DescTools::CCC`` with ``ci = "z-transform"``.

    Parameters
    ----------
    x : array_like, shape (n,)
        Reference measurements (e.g. manual volumes, mL).
    y : array_like, shape (n,)
        Measurements of the method under test, same units.
    confidence : float
        Confidence level of the interval.

    Returns
    -------
    pandas.DataFrame
        One row: ``n``, ``ccc``, ``ccc_ci_low``, ``ccc_ci_high``, ``pearson_r``,
        ``bias_correction`` (C_b = rho_c / r, accuracy), ``scale_shift``
        (s_y / s_x) and ``location_shift`` (u).

    References
    ----------
    Lin LI (1989). A concordance correlation coefficient to evaluate
    reproducibility. Biometrics 45(1):255-268. doi:10.2307/2532051

    Lin LI (2000). A note on the concordance correlation coefficient.
    Biometrics 56(1):324-325.
    """
    x, y = _paired(x, y)
    n = x.size
    row = dict.fromkeys(
        ["ccc", "ccc_ci_low", "ccc_ci_high", "pearson_r", "bias_correction", "scale_shift", "location_shift"],
        np.nan,
    )
    row = {"n": n, **row}
    if _too_few(n, "concordance_ccc"):
        return pd.DataFrame([row])
    mx, my = x.mean(), y.mean()
    sx2, sy2 = x.var(), y.var()  # divisor n (Lin 1989)
    sxy = np.mean((x - mx) * (y - my))
    denom = sx2 + sy2 + (mx - my) ** 2
    if denom == 0 or sx2 == 0 or sy2 == 0:
        logger.warning("concordance_ccc: a constant variable; CCC undefined")
        return pd.DataFrame([row])
    rho_c = 2 * sxy / denom
    r = sxy / np.sqrt(sx2 * sy2)
    u = (my - mx) / (sx2 * sy2) ** 0.25
    row.update(
        ccc=rho_c,
        pearson_r=r,
        bias_correction=rho_c / r if r != 0 else np.nan,
        scale_shift=np.sqrt(sy2 / sx2),
        location_shift=u,
    )
    if abs(rho_c) < 1 and r != 0:
        var_z = (
            (1 - r**2) * rho_c**2 / ((1 - rho_c**2) * r**2)
            + 2 * rho_c**3 * (1 - rho_c) * u**2 / (r * (1 - rho_c**2) ** 2)
            - rho_c**4 * u**4 / (2 * r**2 * (1 - rho_c**2) ** 2)
        ) / (n - 2)
        if var_z >= 0:
            zcrit = stats.norm.ppf(0.5 + confidence / 2)
            z = np.arctanh(rho_c)
            half = zcrit * np.sqrt(var_z)
            row.update(ccc_ci_low=np.tanh(z - half), ccc_ci_high=np.tanh(z + half))
    else:
        # Perfect concordance: the interval degenerates to the point.
        row.update(ccc_ci_low=rho_c, ccc_ci_high=rho_c)
    return pd.DataFrame([row])


def ols_agreement(x: npt.ArrayLike, y: npt.ArrayLike, confidence: float = 0.95) -> pd.DataFrame:
    r"""Ordinary least squares of the method's measurement on the reference.

    .. math:: y_i = \beta_0 + \beta_1 x_i + \varepsilon_i,
              \qquad \mathrm{SD}_e = \sqrt{\textstyle\sum_i \hat\varepsilon_i^2 / (n-2)}

    A slope of 1 means the method preserves the reference's dynamic range;
    ``SD_e`` (same units as ``y``, e.g. mL) measures its precision. Fitted
    with :class:`statsmodels.regression.linear_model.OLS`; the slope CI uses
    the t distribution with ``n - 2`` degrees of freedom.

    Parameters
    ----------
    x : array_like, shape (n,)
        Reference measurements (predictor), e.g. manual volumes in mL.
    y : array_like, shape (n,)
        Method measurements (outcome), same units.
    confidence : float
        Confidence level of the slope interval.

    Returns
    -------
    pandas.DataFrame
        One row: ``n``, ``slope``, ``slope_ci_low``, ``slope_ci_high``,
        ``slope_se``, ``intercept``, ``residual_sd``, ``r2``.

    References
    ----------
    Ibrahim et al. (2026), NeuroImage: Clinical, section 2.7.3 (slope as a
    dynamic-range indicator, residual SD as a precision metric).
    """
    import statsmodels.api as sm

    x, y = _paired(x, y)
    n = x.size
    row = {"n": n, **dict.fromkeys(
        ["slope", "slope_ci_low", "slope_ci_high", "slope_se", "intercept", "residual_sd", "r2"], np.nan
    )}
    if _too_few(n, "ols_agreement"):
        return pd.DataFrame([row])
    if np.ptp(x) == 0:
        logger.warning("ols_agreement: constant predictor; slope undefined")
        return pd.DataFrame([row])
    fit = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    ci = np.asarray(fit.conf_int(alpha=1 - confidence))
    row.update(
        slope=fit.params[1],
        slope_ci_low=ci[1, 0],
        slope_ci_high=ci[1, 1],
        slope_se=fit.bse[1],
        intercept=fit.params[0],
        residual_sd=float(np.sqrt(fit.scale)),
        r2=fit.rsquared,
    )
    return pd.DataFrame([row])


@contextlib.contextmanager
def _pingouin_unrounded() -> Iterator[None]:
    """Switch off pingouin's default 2-decimal rounding of ``CI95`` while inside."""
    import pingouin as pg

    key = "round.column.CI95"
    had = key in pg.options
    old = pg.options.get(key)
    pg.options[key] = None
    try:
        yield
    finally:
        if had:
            pg.options[key] = old
        else:
            pg.options.pop(key, None)


def icc3_long(data: pd.DataFrame, targets: str, raters: str, ratings: str) -> pd.DataFrame:
    r"""ICC(3,1) from a long table: two-way mixed effects, single rater, consistency.

    .. math:: \mathrm{ICC}(3,1) = \frac{MS_R - MS_E}{MS_R + (k-1) MS_E}

    with :math:`MS_R` the between-targets and :math:`MS_E` the residual mean
    squares of the two-way ANOVA, ``k`` raters. Computed with
    :func:`pingouin.intraclass_corr`; in pingouin 0.7 ICC3 is the row
    ``Type == "ICC(C,1)"`` (McGraw and Wong's notation), whose F-based 95% CI
    is returned unrounded. Targets with a missing rating are dropped.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table, one row per target and rater.
    targets, raters, ratings : str
        Column names: subject identifier, rater (e.g. ``"manual"`` /
        ``"freesurfer"``), and the numeric rating (e.g. volume in mL).

    Returns
    -------
    pandas.DataFrame
        One row: ``n`` (targets), ``icc``, ``icc_ci_low``, ``icc_ci_high``,
        ``F``, ``df1``, ``df2``, ``pval``.

    References
    ----------
    Shrout PE, Fleiss JL (1979). Intraclass correlations: uses in assessing
    rater reliability. Psychol Bull 86(2):420-428. doi:10.1037/0033-2909.86.2.420

    McGraw KO, Wong SP (1996). Forming inferences about some intraclass
    correlation coefficients. Psychol Methods 1(1):30-46.

    Koo TK, Li MY (2016). A guideline of selecting and reporting intraclass
    correlation coefficients for reliability research. J Chiropr Med 15(2):155-163.
    """
    import pingouin as pg

    wide = data.pivot_table(index=targets, columns=raters, values=ratings, observed=True).dropna()
    n = int(wide.shape[0])
    row = {"n": n, **dict.fromkeys(["icc", "icc_ci_low", "icc_ci_high", "F", "df1", "df2", "pval"], np.nan)}
    if _too_few(n, "icc3") or wide.shape[1] < 2:
        return pd.DataFrame([row])
    if np.allclose(wide.to_numpy().std(axis=0), 0):
        logger.warning("icc3: constant ratings; ICC undefined")
        return pd.DataFrame([row])
    long = wide.reset_index().melt(id_vars=targets, value_name=ratings)
    with _pingouin_unrounded(), np.errstate(divide="ignore", invalid="ignore"):
        res = pg.intraclass_corr(data=long, targets=targets, raters=raters, ratings=ratings)
    sel = res.loc[res["Type"] == "ICC(C,1)"]
    if sel.empty:  # pingouin < 0.7 names it ICC3
        sel = res.loc[res["Type"] == "ICC3"]
    rec = sel.iloc[0]
    ci = np.asarray(rec["CI95"], dtype=float)
    row.update(
        icc=float(rec["ICC"]),
        icc_ci_low=float(ci[0]),
        icc_ci_high=float(ci[1]),
        F=float(rec["F"]),
        df1=float(rec["df1"]),
        df2=float(rec["df2"]),
        pval=float(rec["pval"]),
    )
    return pd.DataFrame([row])


def icc3(x: npt.ArrayLike, y: npt.ArrayLike) -> pd.DataFrame:
    """ICC(3,1) of paired arrays, ``x`` and ``y`` as the two raters (see :func:`icc3_long`).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Ratings of the same ``n`` targets by two raters (e.g. manual and
        method volumes in mL).
    """
    x, y = _paired(x, y)
    n = x.size
    long = pd.DataFrame(
        {
            "target": np.tile(np.arange(n), 2),
            "rater": np.repeat(["x", "y"], n),
            "rating": np.concatenate([x, y]),
        }
    )
    return icc3_long(long, "target", "rater", "rating")


def bland_altman(x: npt.ArrayLike, y: npt.ArrayLike, confidence: float = 0.95, loa_z: float = 1.96) -> pd.DataFrame:
    r"""Bland-Altman agreement: bias, SD, limits of agreement, proportional bias.

    With differences :math:`d_i = y_i - x_i` (method minus reference) and
    means :math:`m_i = (x_i + y_i)/2`:

    .. math::

        \mathrm{bias} = \bar d, \quad SD = \sqrt{\textstyle\sum (d_i - \bar d)^2/(n-1)},
        \quad \mathrm{LoA} = \bar d \pm 1.96\, SD

    Proportional bias is the OLS slope of :math:`d` regressed on :math:`m`
    (Bland and Altman 1999, section 3.2), with its t-based CI and p-value.

    Parameters
    ----------
    x : array_like, shape (n,)
        Reference measurements (e.g. manual volumes, mL).
    y : array_like, shape (n,)
        Method measurements, same units.
    confidence : float
        Confidence level of the proportional-bias slope interval.
    loa_z : float
        Multiplier of SD for the limits of agreement (1.96 for 95%).

    Returns
    -------
    pandas.DataFrame
        One row: ``n``, ``bias``, ``sd``, ``loa_low``, ``loa_high``,
        ``prop_slope``, ``prop_slope_ci_low``, ``prop_slope_ci_high``,
        ``prop_intercept``, ``prop_pval``.

    References
    ----------
    Bland JM, Altman DG (1986). Statistical methods for assessing agreement
    between two methods of clinical measurement. Lancet 327(8476):307-310.
    doi:10.1016/S0140-6736(86)90837-8

    Bland JM, Altman DG (1999). Measuring agreement in method comparison
    studies. Stat Methods Med Res 8(2):135-160.
    """
    import statsmodels.api as sm

    x, y = _paired(x, y)
    n = x.size
    cols = [
        "bias", "sd", "loa_low", "loa_high", "prop_slope", "prop_slope_ci_low",
        "prop_slope_ci_high", "prop_intercept", "prop_pval",
    ]
    row = {"n": n, **dict.fromkeys(cols, np.nan)}
    if n == 0:
        logger.warning("bland_altman: no complete pair; returning NaN")
        return pd.DataFrame([row])
    d = y - x
    m = (x + y) / 2
    bias = d.mean()
    sd = d.std(ddof=1) if n > 1 else np.nan
    row.update(bias=bias, sd=sd, loa_low=bias - loa_z * sd, loa_high=bias + loa_z * sd)
    if _too_few(n, "bland_altman proportional bias") or np.ptp(m) == 0:
        return pd.DataFrame([row])
    fit = sm.OLS(d, sm.add_constant(m, has_constant="add")).fit()
    ci = np.asarray(fit.conf_int(alpha=1 - confidence))
    row.update(
        prop_slope=fit.params[1],
        prop_slope_ci_low=ci[1, 0],
        prop_slope_ci_high=ci[1, 1],
        prop_intercept=fit.params[0],
        prop_pval=fit.pvalues[1],
    )
    return pd.DataFrame([row])


def volumetric_agreement(x: npt.ArrayLike, y: npt.ArrayLike) -> pd.DataFrame:
    """All volumetric agreement statistics of a method against the reference, one row.

    Parameters
    ----------
    x : array_like, shape (n,)
        Reference volumes (manual masks), mL.
    y : array_like, shape (n,)
        Method volumes, mL.

    Returns
    -------
    pandas.DataFrame
        One row: ``n``, ``mean_reference``, ``mean_method``, ``ccc``,
        ``ccc_ci_low``, ``ccc_ci_high``, ``slope``, ``slope_ci_low``,
        ``slope_ci_high``, ``intercept``, ``residual_sd``, ``icc3``,
        ``icc3_ci_low``, ``icc3_ci_high``, ``bias``, ``sd``, ``loa_low``,
        ``loa_high``, ``prop_slope``, ``prop_slope_ci_low``,
        ``prop_slope_ci_high``, ``prop_intercept``, ``prop_pval``.
    """
    xp, yp = _paired(x, y)
    c = concordance_ccc(xp, yp).iloc[0]
    o = ols_agreement(xp, yp).iloc[0]
    i = icc3(xp, yp).iloc[0]
    b = bland_altman(xp, yp).iloc[0]
    row = {
        "n": int(xp.size),
        "mean_reference": float(xp.mean()) if xp.size else np.nan,
        "mean_method": float(yp.mean()) if yp.size else np.nan,
        "ccc": c["ccc"],
        "ccc_ci_low": c["ccc_ci_low"],
        "ccc_ci_high": c["ccc_ci_high"],
        "slope": o["slope"],
        "slope_ci_low": o["slope_ci_low"],
        "slope_ci_high": o["slope_ci_high"],
        "intercept": o["intercept"],
        "residual_sd": o["residual_sd"],
        "icc3": i["icc"],
        "icc3_ci_low": i["icc_ci_low"],
        "icc3_ci_high": i["icc_ci_high"],
        "bias": b["bias"],
        "sd": b["sd"],
        "loa_low": b["loa_low"],
        "loa_high": b["loa_high"],
        "prop_slope": b["prop_slope"],
        "prop_slope_ci_low": b["prop_slope_ci_low"],
        "prop_slope_ci_high": b["prop_slope_ci_high"],
        "prop_intercept": b["prop_intercept"],
        "prop_pval": b["prop_pval"],
    }
    return pd.DataFrame([row])
