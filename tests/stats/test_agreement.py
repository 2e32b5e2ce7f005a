"""Volumetric agreement statistics against published reference values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from thalamus_bidsapp.stats.agreement import (
    bland_altman,
    concordance_ccc,
    icc3,
    icc3_long,
    ols_agreement,
    volumetric_agreement,
)

# Bland JM, Altman DG (1986). Lancet 327:307-310, Table 1: peak expiratory
# flow rate (l/min) of 17 subjects, first reading with the Wright peak flow
# meter and with the mini Wright meter.
PEFR_WRIGHT = np.array([494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427.0])
PEFR_MINI = np.array([512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451.0])

# Anscombe FJ (1973). Graphs in statistical analysis. Am Stat 27(1):17-21, data set I.
ANSCOMBE_X = np.array([10, 8, 13, 9, 11, 14, 6, 4, 12, 7, 5.0])
ANSCOMBE_Y = np.array([8.04, 6.95, 7.58, 8.81, 8.33, 9.96, 7.24, 4.26, 10.84, 4.82, 5.68])

# Shrout PE, Fleiss JL (1979). Psychol Bull 86(2):420-428, Table 2: 6 targets
# rated by 4 judges.
SF_RATINGS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_bland_altman_pefr_published():
    """Bland & Altman (1986): mean difference Wright - mini -2.1 l/min, SD 38.8, limits -79.7 to 75.5 (2 SD)."""
    res = bland_altman(PEFR_MINI, PEFR_WRIGHT, loa_z=2.0).iloc[0]  # y - x = Wright - mini
    assert res["n"] == 17
    assert res["bias"] == pytest.approx(-2.1, abs=0.05)
    assert res["sd"] == pytest.approx(38.8, abs=0.05)
    # The paper rounds bias and SD before forming the limits, hence 0.15.
    assert res["loa_low"] == pytest.approx(-79.7, abs=0.15)
    assert res["loa_high"] == pytest.approx(75.5, abs=0.15)
    # Default limits are bias +/- 1.96 SD.
    res196 = bland_altman(PEFR_MINI, PEFR_WRIGHT).iloc[0]
    assert res196["loa_high"] - res196["bias"] == pytest.approx(1.96 * res196["sd"])
    # The paper's plot shows no relation between difference and mean.
    assert res196["prop_slope_ci_low"] < 0 < res196["prop_slope_ci_high"]
    assert res196["prop_pval"] > 0.05


def test_bland_altman_proportional_bias_exact():
    """y = 1.1 x: d = 0.1 x and m = 1.05 x, so d = (0.1 / 1.05) m exactly."""
    x = np.array([7.0, 8.0, 9.5, 10.0, 12.0, 13.5])
    res = bland_altman(x, 1.1 * x).iloc[0]
    assert res["prop_slope"] == pytest.approx(0.1 / 1.05, rel=1e-9)
    assert res["prop_intercept"] == pytest.approx(0.0, abs=1e-9)
    assert res["bias"] == pytest.approx(0.1 * x.mean())


def test_ccc_pefr_data():
    """Lin's CCC on Bland & Altman's PEFR data.

    Bland & Altman (1986) report Pearson r = 0.94 for these data; Lin's
    rho_c = r * C_b. The CI is checked against Lin's (1989, corrected 2000)
    asymptotic variance of atanh(rho_c) written out independently here in
    the form used by epiR::epi.ccc (Stevenson et al.).
    """
    res = concordance_ccc(PEFR_WRIGHT, PEFR_MINI).iloc[0]
    assert res["pearson_r"] == pytest.approx(0.94, abs=0.005)
    assert res["ccc"] == pytest.approx(res["pearson_r"] * res["bias_correction"])
    assert res["ccc"] == pytest.approx(0.9427, abs=1e-4)

    x, y, n = PEFR_WRIGHT, PEFR_MINI, PEFR_WRIGHT.size
    sx2, sy2 = x.var(), y.var()
    r = np.corrcoef(x, y)[0, 1]
    p = 2 * r * np.sqrt(sx2 * sy2) / (sx2 + sy2 + (x.mean() - y.mean()) ** 2)
    u = (y.mean() - x.mean()) / (sx2 * sy2) ** 0.25
    sep = np.sqrt(
        ((1 - r**2) * p**2 * (1 - p**2) / r**2 + 2 * p**3 * (1 - p) * u**2 / r - 0.5 * p**4 * u**4 / r**2) / (n - 2)
    )
    set_ = sep / (1 - p**2)
    z = np.arctanh(p)
    q = stats.norm.ppf(0.975)
    assert res["ccc_ci_low"] == pytest.approx(np.tanh(z - q * set_), rel=1e-10)
    assert res["ccc_ci_high"] == pytest.approx(np.tanh(z + q * set_), rel=1e-10)
    assert res["ccc_ci_low"] < res["ccc"] < res["ccc_ci_high"]


def test_ccc_penalises_bias_and_perfect_agreement():
    x = np.array([8.0, 9.0, 10.0, 11.0, 12.0])
    assert concordance_ccc(x, x).iloc[0]["ccc"] == pytest.approx(1.0)
    shifted = concordance_ccc(x, x + 2).iloc[0]
    assert shifted["pearson_r"] == pytest.approx(1.0)
    # Shift of 2 with variance 2: rho_c = 2*2 / (2 + 2 + 4) = 0.5.
    assert shifted["ccc"] == pytest.approx(0.5)


def test_ols_anscombe_published():
    """Anscombe (1973): y = 3.00 + 0.500 x, SE(slope) 0.118, residual SS 13.75, r = 0.82."""
    res = ols_agreement(ANSCOMBE_X, ANSCOMBE_Y).iloc[0]
    assert res["slope"] == pytest.approx(0.500, abs=5e-4)
    assert res["intercept"] == pytest.approx(3.00, abs=5e-3)
    assert res["slope_se"] == pytest.approx(0.118, abs=5e-4)
    assert res["residual_sd"] == pytest.approx(np.sqrt(13.75 / 9), abs=1e-3)
    assert np.sqrt(res["r2"]) == pytest.approx(0.82, abs=0.005)
    t = stats.t.ppf(0.975, 9)
    assert res["slope_ci_low"] == pytest.approx(res["slope"] - t * res["slope_se"])
    assert res["slope_ci_high"] == pytest.approx(res["slope"] + t * res["slope_se"])


def test_icc3_shrout_fleiss_published():
    """Shrout & Fleiss (1979) Table 2 data: ICC(3,1) = 0.71 (and the F-based CI of their Table 4)."""
    long = pd.DataFrame(
        [(t, j, SF_RATINGS[t, j]) for t in range(6) for j in range(4)], columns=["target", "judge", "rating"]
    )
    res = icc3_long(long, "target", "judge", "rating").iloc[0]
    assert res["n"] == 6
    assert res["icc"] == pytest.approx(0.71, abs=0.005)
    # CI for ICC(3,1), Shrout & Fleiss (1979) eq. for case 3: F_L = F0 / F(1-a/2; n-1, (n-1)(k-1)).
    n, k, f0 = 6, 4, res["F"]
    fl = f0 / stats.f.ppf(0.975, n - 1, (n - 1) * (k - 1))
    fu = f0 * stats.f.ppf(0.975, (n - 1) * (k - 1), n - 1)
    assert res["icc_ci_low"] == pytest.approx((fl - 1) / (fl + k - 1), rel=1e-9)
    assert res["icc_ci_high"] == pytest.approx((fu - 1) / (fu + k - 1), rel=1e-9)
    # Unrounded, unlike pingouin's default 2-decimal CI95 display.
    assert res["icc_ci_low"] != round(res["icc_ci_low"], 2)


def test_icc3_two_raters_matches_formula():
    x, y = PEFR_WRIGHT, PEFR_MINI
    res = icc3(x, y).iloc[0]
    # Two-way ANOVA by hand: ICC(3,1) = (MSR - MSE) / (MSR + MSE) for k = 2.
    data = np.column_stack([x, y])
    n, k = data.shape
    grand = data.mean()
    msr = k * ((data.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    resid = data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    assert res["icc"] == pytest.approx((msr - mse) / (msr + mse), rel=1e-9)


def test_volumetric_agreement_row_and_small_n():
    row = volumetric_agreement(PEFR_WRIGHT, PEFR_MINI).iloc[0]
    assert row["n"] == 17
    assert row["bias"] == pytest.approx(2.1, abs=0.05)
    assert row["ccc"] == pytest.approx(0.9427, abs=1e-4)
    for key in ("slope", "icc3", "residual_sd", "prop_slope", "loa_low", "loa_high"):
        assert np.isfinite(row[key])
    # Missing pairs are dropped; fewer than 3 pairs give NaN, not an exception.
    small = volumetric_agreement([1.0, 2.0, np.nan], [1.1, np.nan, 3.0]).iloc[0]
    assert small["n"] == 1
    assert np.isnan(small["ccc"]) and np.isnan(small["slope"]) and np.isnan(small["icc3"])
    assert small["bias"] == pytest.approx(0.1)
    empty = volumetric_agreement([], []).iloc[0]
    assert empty["n"] == 0 and np.isnan(empty["bias"])


def test_constant_values_do_not_crash():
    row = volumetric_agreement([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]).iloc[0]
    assert np.isnan(row["ccc"]) and np.isnan(row["slope"]) and np.isnan(row["icc3"])
    assert row["bias"] == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        concordance_ccc([1, 2, 3], [1, 2])
