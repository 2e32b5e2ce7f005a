"""Volumetric agreement between an automated method and a reference (manual) method.

The conventions of :mod:`thalamus_bidsapp.stats` apply; every function here
takes the two measurement columns as the keyword-only ``reference`` and
``method``, and a difference is always ``method - reference``. Rows with a
missing value in either column are dropped. With fewer than
:data:`~thalamus_bidsapp.stats.MIN_N` complete pairs the statistics are
undefined: the functions then return NaN (and log a warning) instead of
raising, so a group analysis with few manual masks still finishes.

Functions
---------
- :func:`concordance_ccc`: Lin's concordance correlation coefficient, 95% CI.
- :func:`ols_agreement`: OLS of the method on the reference, the
  :func:`~thalamus_bidsapp.stats.regression.ols` table (slope, intercept,
  residual SD).
- :func:`icc`: the six Shrout-Fleiss intraclass correlations with F test and
  95% CI, via :func:`pingouin.intraclass_corr`.
- :func:`bland_altman`: bias ``method - reference``, SD, 95% limits of
  agreement, their standard errors and confidence intervals, and the
  proportional-bias slope.
- :func:`volumetric_agreement`: the above for a method against a reference, one row.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import MIN_N, check_columns, too_few
from thalamus_bidsapp.stats.icc import ICC_COLUMNS, ICC_FORMS, icc
from thalamus_bidsapp.stats.regression import INTERCEPT, OLS_COLUMNS, ols

logger = logging.getLogger(__name__)

__all__ = [
    "BLAND_ALTMAN_COLUMNS",
    "CCC_COLUMNS",
    "ICC_COLUMNS",
    "ICC_FORMS",
    "INTERCEPT",
    "MIN_N",
    "OLS_COLUMNS",
    "VOLUMETRIC_COLUMNS",
    "bland_altman",
    "concordance_ccc",
    "icc",
    "ols_agreement",
    "volumetric_agreement",
]


def _paired(data: pd.DataFrame, x: str, y: str, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """The complete pairs of two numeric columns, as float arrays."""
    check_columns(data, [x, y], caller)
    a = pd.to_numeric(data[x], errors="coerce").to_numpy(dtype=float)
    b = pd.to_numeric(data[y], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


#: Columns of the :func:`concordance_ccc` row, in order.
CCC_COLUMNS = ["n", "ccc", "ccc_ci_low", "ccc_ci_high", "pearson_r", "bias_correction", "scale_shift",
               "location_shift"]


def concordance_ccc(data: pd.DataFrame, *, reference: str, method: str, alpha: float = 0.05) -> pd.DataFrame:
    r"""Lin's concordance correlation coefficient with a Fisher-z confidence interval.

    .. math::

        \hat\rho_c = \frac{2 s_{xy}}{s_x^2 + s_y^2 + (\bar x - \bar y)^2}

    with ``x`` the reference and ``y`` the method, and the moments
    computed with divisor ``n`` as in Lin (1989). The CI is
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
    data : pandas.DataFrame
        One row per subject.
    reference, method : str
        Columns of the two measurements (e.g. manual and method volumes, mL).
    alpha : float
        For the (1 - alpha) confidence interval.

    Returns
    -------
    pandas.DataFrame
        One row, columns :data:`CCC_COLUMNS`: ``n``, ``ccc``, ``ccc_ci_low``,
        ``ccc_ci_high``, ``pearson_r``, ``bias_correction`` (C_b = rho_c / r,
        accuracy), ``scale_shift`` (s_method / s_reference) and
        ``location_shift`` (u, positive when the method reads higher).

    Examples
    --------
    A shift of 2 with variance 2: rho_c = 2 * 2 / (2 + 2 + 4) = 0.5.

    >>> df = pd.DataFrame({"manual": [8.0, 9, 10, 11, 12], "auto": [10.0, 11, 12, 13, 14]})
    >>> row = concordance_ccc(df, reference="manual", method="auto").iloc[0]
    >>> float(row["ccc"]), bool(row["location_shift"] > 0)
    (0.5, True)

    References
    ----------
    Lin LI (1989). A concordance correlation coefficient to evaluate
    reproducibility. Biometrics 45(1):255-268. doi:10.2307/2532051

    Lin LI (2000). A note on the concordance correlation coefficient.
    Biometrics 56(1):324-325.
    """
    x_arr, y_arr = _paired(data, reference, method, "concordance_ccc")
    n = x_arr.size
    row = {**dict.fromkeys(CCC_COLUMNS, np.nan), "n": n}
    if too_few(n, "concordance_ccc", logger):
        return pd.DataFrame([row], columns=CCC_COLUMNS)
    mx, my = x_arr.mean(), y_arr.mean()
    sx2, sy2 = x_arr.var(), y_arr.var()  # divisor n (Lin 1989)
    sxy = np.mean((x_arr - mx) * (y_arr - my))
    denom = sx2 + sy2 + (mx - my) ** 2
    if denom == 0 or sx2 == 0 or sy2 == 0:
        logger.warning("concordance_ccc: a constant variable; CCC undefined")
        return pd.DataFrame([row], columns=CCC_COLUMNS)
    rho_c = 2 * sxy / denom
    r = sxy / np.sqrt(sx2 * sy2)
    u = (my - mx) / (sx2 * sy2) ** 0.25
    row.update(
        ccc=float(rho_c),
        pearson_r=float(r),
        bias_correction=float(rho_c / r) if r != 0 else np.nan,
        scale_shift=float(np.sqrt(sy2 / sx2)),
        location_shift=float(u),
    )
    if abs(rho_c) < 1 and r != 0:
        var_z = (
            (1 - r**2) * rho_c**2 / ((1 - rho_c**2) * r**2)
            + 2 * rho_c**3 * (1 - rho_c) * u**2 / (r * (1 - rho_c**2) ** 2)
            - rho_c**4 * u**4 / (2 * r**2 * (1 - rho_c**2) ** 2)
        ) / (n - 2)
        if var_z >= 0:
            zcrit = stats.norm.ppf(1 - alpha / 2)
            z = np.arctanh(rho_c)
            half = zcrit * np.sqrt(var_z)
            row.update(ccc_ci_low=float(np.tanh(z - half)), ccc_ci_high=float(np.tanh(z + half)))
    else:
        # Perfect concordance: the interval degenerates to the point.
        row.update(ccc_ci_low=float(rho_c), ccc_ci_high=float(rho_c))
    return pd.DataFrame([row], columns=CCC_COLUMNS)


def ols_agreement(data: pd.DataFrame, *, reference: str, method: str, alpha: float = 0.05) -> pd.DataFrame:
    r"""Ordinary least squares of the method's measurement on the reference: the :func:`ols` table.

    .. math:: m_i = \beta_0 + \beta_1 r_i + \varepsilon_i,
              \qquad \mathrm{SD}_e = \sqrt{\textstyle\sum_i \hat\varepsilon_i^2 / (n-2)}

    A slope of 1 means the method preserves the reference's dynamic range;
    ``SD_e`` (``residual_sd``, same units, e.g. mL) measures its precision.
    This is :func:`~thalamus_bidsapp.stats.regression.ols` with ``x`` the
    reference and ``y`` the method (classical standard errors, t with
    ``n - 2`` degrees of freedom), so both OLS functions return the same table.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per subject.
    reference : str
        Column of the reference measurements (predictor), e.g. manual volumes in mL.
    method : str
        Column of the method measurements (outcome), same units.
    alpha : float
        For the (1 - alpha) confidence intervals.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`OLS_COLUMNS`: the ``Intercept`` row, then the
        ``reference`` row (the slope). With fewer than
        :data:`~thalamus_bidsapp.stats.MIN_N` complete pairs or a constant
        reference, one row with NaN statistics and the reason in ``note``.

    Examples
    --------
    Anscombe's (1973) data set I: y = 3.00 + 0.500 x.

    >>> df = pd.DataFrame({"x": [10, 8, 13, 9, 11, 14, 6, 4, 12, 7, 5],
    ...                    "y": [8.04, 6.95, 7.58, 8.81, 8.33, 9.96, 7.24, 4.26, 10.84, 4.82, 5.68]})
    >>> table = ols_agreement(df, reference="x", method="y").set_index("term")
    >>> round(float(table.loc["x", "beta"]), 3), round(float(table.loc["Intercept", "beta"]), 2)
    (0.5, 3.0)

    References
    ----------
    Ibrahim et al. (2026), NeuroImage: Clinical, section 2.7.3 (slope as a
    dynamic-range indicator, residual SD as a precision metric).
    """
    if reference == method:
        raise ValueError(f"ols_agreement: reference and method are the same column {reference!r}")
    x_arr, y_arr = _paired(data, reference, method, "ols_agreement")
    pairs = pd.DataFrame({reference: x_arr, method: y_arr})
    if too_few(x_arr.size, "ols_agreement", logger):
        row = {**dict.fromkeys(OLS_COLUMNS, np.nan), "term": reference, "n": x_arr.size,
               "n_excluded": len(data) - x_arr.size, "se_type": "classical",
               "note": f"fewer than {MIN_N} complete pairs"}
        return pd.DataFrame([row], columns=OLS_COLUMNS)
    table = ols(pairs, x=reference, y=method, alpha=alpha)
    table["n_excluded"] = len(data) - x_arr.size
    return table


def bland_altman(
    data: pd.DataFrame, *, reference: str, method: str, alpha: float = 0.05, loa_z: float = 1.96
) -> pd.DataFrame:
    r"""Bland-Altman agreement of a method with a reference: bias ``method - reference``, limits, their CIs.

    With differences :math:`d_i = m_i - r_i` (method minus reference, so a
    positive bias means the method reads higher) and means
    :math:`\bar x_i = (m_i + r_i)/2`:

    .. math::

        \mathrm{bias} = \bar d, \quad s = \sqrt{\textstyle\sum (d_i - \bar d)^2/(n-1)},
        \quad \mathrm{LoA} = \bar d \pm z\, s

    The standard error of the bias is :math:`\sqrt{s^2/n}` and that of each
    limit approximately :math:`\sqrt{3 s^2 / n}`; the confidence intervals
    are estimate :math:`\pm t_{n-1} \times SE` (Bland & Altman 1986 section 6,
    1999 section 2.3; Giavarina 2015). Proportional bias is the OLS slope of
    :math:`d` regressed on :math:`\bar x` (Bland & Altman 1999, section 3.2),
    with its t-based CI and p-value.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per subject.
    reference, method : str
        Columns of the two measurements, same units; the differences are
        ``method - reference``.
    alpha : float
        For the (1 - alpha) confidence intervals.
    loa_z : float
        Multiplier of SD for the limits of agreement (1.96 for 95%).

    Returns
    -------
    pandas.DataFrame
        One row, columns :data:`BLAND_ALTMAN_COLUMNS`: ``reference``,
        ``method`` (the column names), ``difference`` (``"method - reference"``
        spelled with them), ``n``, ``bias``, ``bias_se``, ``bias_ci_low``,
        ``bias_ci_high``, ``sd``, ``loa_low``, ``loa_high``, ``loa_se``,
        ``loa_low_ci_low``, ``loa_low_ci_high``, ``loa_high_ci_low``,
        ``loa_high_ci_high``, ``prop_slope``, ``prop_slope_ci_low``,
        ``prop_slope_ci_high``, ``prop_intercept``, ``prop_slope_p``.

    Examples
    --------
    Bland & Altman (1986), Table 1: Wright minus mini Wright peak flow meter,
    bias -2.1 l/min, SD 38.8, limits (2 SD) -79.7 to 75.5.

    >>> pefr = pd.DataFrame({
    ...     "wright": [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427],
    ...     "mini": [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]})
    >>> row = bland_altman(pefr, reference="mini", method="wright", loa_z=2).iloc[0]
    >>> row["difference"], round(float(row["bias"]), 1), round(float(row["sd"]), 1)
    ('wright - mini', -2.1, 38.8)
    >>> round(float(row["bias_se"]), 1), round(float(row["loa_se"]), 1)
    (9.4, 16.3)

    References
    ----------
    Bland JM, Altman DG (1986). Statistical methods for assessing agreement
    between two methods of clinical measurement. Lancet 327(8476):307-310.
    doi:10.1016/S0140-6736(86)90837-8

    Bland JM, Altman DG (1999). Measuring agreement in method comparison
    studies. Stat Methods Med Res 8(2):135-160.

    Giavarina D (2015). Understanding Bland Altman analysis. Biochem Med
    25(2):141-151. doi:10.11613/BM.2015.015
    """
    import statsmodels.api as sm

    a_arr, b_arr = _paired(data, method, reference, "bland_altman")
    n = a_arr.size
    row = {**dict.fromkeys(BLAND_ALTMAN_COLUMNS, np.nan), "reference": reference, "method": method,
           "difference": f"{method} - {reference}", "n": n}
    if n == 0:
        logger.warning("bland_altman: no complete pair; returning NaN")
        return pd.DataFrame([row], columns=BLAND_ALTMAN_COLUMNS)
    d = a_arr - b_arr
    m = (a_arr + b_arr) / 2
    bias = float(d.mean())
    row["bias"] = bias
    if n < 2:
        return pd.DataFrame([row], columns=BLAND_ALTMAN_COLUMNS)
    sd = float(d.std(ddof=1))
    bias_se = sd / np.sqrt(n)
    loa_se = np.sqrt(3 * sd**2 / n)
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    low, high = bias - loa_z * sd, bias + loa_z * sd
    row.update(
        sd=sd, bias_se=bias_se, bias_ci_low=bias - t * bias_se, bias_ci_high=bias + t * bias_se,
        loa_low=low, loa_high=high, loa_se=loa_se,
        loa_low_ci_low=low - t * loa_se, loa_low_ci_high=low + t * loa_se,
        loa_high_ci_low=high - t * loa_se, loa_high_ci_high=high + t * loa_se,
    )
    if too_few(n, "bland_altman proportional bias", logger) or np.ptp(m) == 0:
        return pd.DataFrame([row], columns=BLAND_ALTMAN_COLUMNS)
    fit = sm.OLS(d, sm.add_constant(m, has_constant="add")).fit()
    ci = np.asarray(fit.conf_int(alpha=alpha))
    row.update(
        prop_slope=float(fit.params[1]),
        prop_slope_ci_low=float(ci[1, 0]),
        prop_slope_ci_high=float(ci[1, 1]),
        prop_intercept=float(fit.params[0]),
        prop_slope_p=float(fit.pvalues[1]),
    )
    return pd.DataFrame([row], columns=BLAND_ALTMAN_COLUMNS)


#: Columns of the :func:`bland_altman` row, in order.
BLAND_ALTMAN_COLUMNS = [
    "reference", "method", "difference", "n", "bias", "bias_se", "bias_ci_low", "bias_ci_high", "sd", "loa_low",
    "loa_high", "loa_se", "loa_low_ci_low", "loa_low_ci_high", "loa_high_ci_low", "loa_high_ci_high",
    "prop_slope", "prop_slope_ci_low", "prop_slope_ci_high", "prop_intercept", "prop_slope_p",
]

#: Columns of the :func:`volumetric_agreement` row, in order.
VOLUMETRIC_COLUMNS = [
    "n", "mean_reference", "mean_method", "ccc", "ccc_ci_low", "ccc_ci_high", "slope", "slope_ci_low",
    "slope_ci_high", "intercept", "residual_sd", "icc3", "icc3_ci_low", "icc3_ci_high", "icc2", "icc2_ci_low",
    "icc2_ci_high", "bias", "bias_se", "bias_ci_low", "bias_ci_high", "sd", "loa_low", "loa_high", "loa_se",
    "loa_low_ci_low", "loa_low_ci_high", "loa_high_ci_low", "loa_high_ci_high", "prop_slope",
    "prop_slope_ci_low", "prop_slope_ci_high", "prop_intercept", "prop_slope_p",
]


def volumetric_agreement(data: pd.DataFrame, *, reference: str, method: str) -> pd.DataFrame:
    """All volumetric agreement statistics of a method against the reference, one row.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per subject (or session).
    reference : str
        Column of the reference (manual) volumes (mL).
    method : str
        Column of the method's volumes, same units.

    Returns
    -------
    pandas.DataFrame
        One row with the columns of :data:`VOLUMETRIC_COLUMNS`: ``n``;
        ``mean_reference``, ``mean_method``; Lin's CCC (``ccc*``,
        :func:`concordance_ccc`); the OLS of method on reference (``slope*``,
        ``intercept``, ``residual_sd``, :func:`ols_agreement`); ``icc3*``
        (ICC3 = ICC(3,1), consistency) and ``icc2*`` (ICC2 = ICC(2,1),
        absolute agreement) with reference and method as the two raters
        (:func:`icc`); Bland-Altman with differences method minus reference
        (``bias*``, ``sd``, ``loa*``, ``prop_*``, :func:`bland_altman`).

    Examples
    --------
    >>> vols = pd.DataFrame({"manual": [8.1, 9.0, 9.6, 10.4, 11.2, 12.0],
    ...                      "method": [8.9, 9.7, 10.5, 11.0, 12.1, 12.6]})
    >>> row = volumetric_agreement(vols, reference="manual", method="method").iloc[0]
    >>> round(float(row["bias"]), 2), bool(row["icc3"] > row["icc2"])
    (0.75, True)
    """
    check_columns(data, [method, reference], "volumetric_agreement")
    ref, meth = _paired(data, reference, method, "volumetric_agreement")
    pairs = pd.DataFrame({"reference": ref, "method": meth})
    c = concordance_ccc(pairs, reference="reference", method="method").iloc[0]
    o = ols_agreement(pairs, reference="reference", method="method").set_index("term")
    slope = o.loc["reference"] if "reference" in o.index else pd.Series(dtype=float)
    intercept = o.loc[INTERCEPT, "beta"] if INTERCEPT in o.index else np.nan
    long = pd.DataFrame({
        "target": np.tile(np.arange(ref.size), 2),
        "rater": np.repeat(["reference", "method"], ref.size),
        "rating": np.concatenate([ref, meth]),
    })
    forms = icc(long, "target", "rater", "rating").set_index("type")
    b = bland_altman(pairs, reference="reference", method="method").iloc[0]
    row: dict[str, object] = {
        "n": int(ref.size),
        "mean_reference": float(ref.mean()) if ref.size else np.nan,
        "mean_method": float(meth.mean()) if meth.size else np.nan,
    }
    row.update({k: c[k] for k in ("ccc", "ccc_ci_low", "ccc_ci_high")})
    row.update(slope=slope.get("beta", np.nan), slope_ci_low=slope.get("ci_low", np.nan),
               slope_ci_high=slope.get("ci_high", np.nan), intercept=intercept,
               residual_sd=slope.get("residual_sd", np.nan))
    for form in ("ICC3", "ICC2"):
        prefix = form.lower()
        row.update({prefix: forms.loc[form, "icc"], f"{prefix}_ci_low": forms.loc[form, "ci_low"],
                    f"{prefix}_ci_high": forms.loc[form, "ci_high"]})
    row.update({k: b[k] for k in VOLUMETRIC_COLUMNS if k in b.index})
    return pd.DataFrame([row], columns=VOLUMETRIC_COLUMNS)
