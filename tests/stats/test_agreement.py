"""Volumetric agreement statistics against published reference values."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from thalamus_bidsapp.stats import MIN_N
from thalamus_bidsapp.stats.agreement import (
    OLS_COLUMNS,
    bland_altman,
    concordance_ccc,
    icc,
    ols_agreement,
    volumetric_agreement,
)
from thalamus_bidsapp.stats.regression import ols

# Bland JM, Altman DG (1986). Lancet 327:307-310, Table 1: peak expiratory
# flow rate (l/min) of 17 subjects, first reading with the Wright peak flow
# meter and with the mini Wright meter.
PEFR_WRIGHT = np.array([494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427.0])
PEFR_MINI = np.array([512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451.0])
PEFR = pd.DataFrame({"wright": PEFR_WRIGHT, "mini": PEFR_MINI})

# Anscombe FJ (1973). Graphs in statistical analysis. Am Stat 27(1):17-21, data set I.
ANSCOMBE = pd.DataFrame({
    "x": [10, 8, 13, 9, 11, 14, 6, 4, 12, 7, 5.0],
    "y": [8.04, 6.95, 7.58, 8.81, 8.33, 9.96, 7.24, 4.26, 10.84, 4.82, 5.68],
})

# Shrout PE, Fleiss JL (1979). Psychol Bull 86(2):420-428, Table 2: 6 targets
# rated by 4 judges.
SF_RATINGS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
SF_LONG = pd.DataFrame(
    [(t, j, SF_RATINGS[t, j]) for t in range(6) for j in range(4)], columns=["target", "judge", "rating"]
)
# Shrout & Fleiss (1979), Table 4: the six ICC estimates for these data (two decimals), with the 95%
# confidence intervals for ICC(1,1), ICC(2,1), ICC(3,1), ICC(1,4) and ICC(3,4) (two decimals). The
# F statistics follow from their Table 3 mean squares: BMS/WMS = 11.24/6.26 for case 1 and
# BMS/EMS = 11.24/1.02 for cases 2 and 3. (The estimates are the paper's well-known values; the
# interval bounds were taken from the paper from memory, as the search tool could not retrieve its
# text: they agree with the F-based formulas checked exactly in test_icc3_confidence_interval_formula.)
SF_TABLE4 = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}
SF_CI = {"ICC1": (-0.13, 0.72), "ICC2": (0.02, 0.76), "ICC3": (0.34, 0.95), "ICC1k": (-0.88, 0.91),
         "ICC3k": (0.68, 0.99)}


def test_bland_altman_pefr_published():
    """Bland & Altman (1986): mean difference Wright - mini -2.1 l/min, SD 38.8, limits -79.7 to 75.5 (2 SD)."""
    res = bland_altman(PEFR, reference="mini", method="wright", loa_z=2.0).iloc[0]  # Wright - mini
    assert (res["reference"], res["method"], res["difference"]) == ("mini", "wright", "wright - mini")
    assert res["n"] == 17
    assert res["bias"] == pytest.approx(-2.1, abs=0.05)
    assert res["sd"] == pytest.approx(38.8, abs=0.05)
    # The paper rounds bias and SD before forming the limits, hence 0.15.
    assert res["loa_low"] == pytest.approx(-79.7, abs=0.15)
    assert res["loa_high"] == pytest.approx(75.5, abs=0.15)
    # Default limits are bias +/- 1.96 SD.
    res196 = bland_altman(PEFR, reference="mini", method="wright").iloc[0]
    assert res196["loa_high"] - res196["bias"] == pytest.approx(1.96 * res196["sd"])
    # The paper's plot shows no relation between difference and mean.
    assert res196["prop_slope_ci_low"] < 0 < res196["prop_slope_ci_high"]
    assert res196["prop_slope_p"] > 0.05
    # Swapping the columns flips the sign of the bias and of the limits.
    swapped = bland_altman(PEFR, reference="wright", method="mini").iloc[0]
    assert swapped["bias"] == pytest.approx(-res196["bias"]) and swapped["loa_low"] == pytest.approx(-res196["loa_high"])


def test_bland_altman_confidence_intervals_published():
    """Bland & Altman (1986), section 6 "Precision of estimated limits of agreement", PEFR data.

    SE of the mean difference sqrt(s^2/n) = 9.4 l/min, SE of each limit
    sqrt(3 s^2/n) = 16.3 l/min, t = 2.12 (16 df); 95% CI of the bias -22.0 to
    17.8, of the lower limit -114.3 to -45.1, of the upper limit 40.9 to
    110.1 (limits at 2 SD; the paper rounds bias, SD and SEs before
    multiplying, hence the tolerance). The same formulas are those of Bland &
    Altman (1999) section 2.3 and Giavarina (2015). (Figures from the
    paper's text, which the search tool could not retrieve here; they follow
    from its rounded SD 38.8, n = 17 and t = 2.12, and the exact formula is
    checked below.)
    """
    res = bland_altman(PEFR, reference="mini", method="wright", loa_z=2.0).iloc[0]
    assert res["bias_se"] == pytest.approx(9.4, abs=0.05)
    assert res["loa_se"] == pytest.approx(16.3, abs=0.05)
    assert (res["bias_ci_low"], res["bias_ci_high"]) == pytest.approx((-22.0, 17.8), abs=0.1)
    assert (res["loa_low_ci_low"], res["loa_low_ci_high"]) == pytest.approx((-114.3, -45.1), abs=0.2)
    assert (res["loa_high_ci_low"], res["loa_high_ci_high"]) == pytest.approx((40.9, 110.1), abs=0.2)
    # exactly: estimate +/- t(0.975, n - 1) * SE
    t = stats.t.ppf(0.975, 16)
    assert res["bias_ci_high"] - res["bias"] == pytest.approx(t * res["sd"] / np.sqrt(17))
    assert res["loa_high_ci_high"] - res["loa_high"] == pytest.approx(t * np.sqrt(3 * res["sd"] ** 2 / 17))
    # the bias CI is the one-sample t interval of the differences
    ci = stats.ttest_1samp(PEFR_WRIGHT - PEFR_MINI, 0).confidence_interval()
    assert (res["bias_ci_low"], res["bias_ci_high"]) == pytest.approx((ci.low, ci.high))


def test_bland_altman_proportional_bias_exact():
    """y = 1.1 x: d = 0.1 x and m = 1.05 x, so d = (0.1 / 1.05) m exactly."""
    x = np.array([7.0, 8.0, 9.5, 10.0, 12.0, 13.5])
    res = bland_altman(pd.DataFrame({"method": 1.1 * x, "ref": x}), reference="ref", method="method").iloc[0]
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
    res = concordance_ccc(PEFR, reference="wright", method="mini").iloc[0]
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
    df = pd.DataFrame({"x": x, "same": x, "shifted": x + 2})
    assert concordance_ccc(df, reference="x", method="same").iloc[0]["ccc"] == pytest.approx(1.0)
    shifted = concordance_ccc(df, reference="x", method="shifted").iloc[0]
    assert shifted["pearson_r"] == pytest.approx(1.0)
    # Shift of 2 with variance 2: rho_c = 2*2 / (2 + 2 + 4) = 0.5.
    assert shifted["ccc"] == pytest.approx(0.5)
    # the method reads higher: a positive location shift, which a swap negates
    assert shifted["location_shift"] > 0
    back = concordance_ccc(df, reference="shifted", method="x").iloc[0]
    assert back["location_shift"] == pytest.approx(-shifted["location_shift"]) and back["ccc"] == pytest.approx(0.5)


def test_ols_anscombe_published():
    """Anscombe (1973): y = 3.00 + 0.500 x, SE(slope) 0.118, residual SS 13.75, r = 0.82."""
    table = ols_agreement(ANSCOMBE, reference="x", method="y")
    assert list(table.columns) == OLS_COLUMNS and list(table["term"]) == ["Intercept", "x"]
    res = table.set_index("term").loc["x"]
    assert res["beta"] == pytest.approx(0.500, abs=5e-4)
    assert table.set_index("term").loc["Intercept", "beta"] == pytest.approx(3.00, abs=5e-3)
    assert res["se"] == pytest.approx(0.118, abs=5e-4) and res["se_type"] == "classical"
    assert res["residual_sd"] == pytest.approx(np.sqrt(13.75 / 9), abs=1e-3)
    assert np.sqrt(res["r2"]) == pytest.approx(0.82, abs=0.005)
    t = stats.t.ppf(0.975, 9)
    assert res["ci_low"] == pytest.approx(res["beta"] - t * res["se"])
    assert res["ci_high"] == pytest.approx(res["beta"] + t * res["se"])


def test_both_ols_functions_return_the_same_table():
    """ols_agreement is ols with x the reference and y the method: same columns, same numbers."""
    agreement = ols_agreement(ANSCOMBE, reference="x", method="y")
    pd.testing.assert_frame_equal(agreement, ols(ANSCOMBE, x="x", y="y"))
    few = ols_agreement(ANSCOMBE.head(2), reference="x", method="y")
    assert list(few.columns) == OLS_COLUMNS and few["beta"].isna().all() and "fewer than 3" in few["note"].iloc[0]
    with pytest.raises(ValueError, match="same column"):
        ols_agreement(ANSCOMBE, reference="x", method="x")


def test_icc_all_six_forms_shrout_fleiss_table4():
    table = icc(SF_LONG, "target", "judge", "rating").set_index("type")
    assert list(table.index) == ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    assert list(table["mcgraw_wong"]) == ["ICC(1,1)", "ICC(A,1)", "ICC(C,1)", "ICC(1,k)", "ICC(A,k)", "ICC(C,k)"]
    assert (table["n"] == 6).all() and (table["k"] == 4).all()
    for form, value in SF_TABLE4.items():
        assert table.loc[form, "icc"] == pytest.approx(value, abs=0.005), form
    for form, (low, high) in SF_CI.items():
        assert table.loc[form, "ci_low"] == pytest.approx(low, abs=0.005), form
        assert table.loc[form, "ci_high"] == pytest.approx(high, abs=0.005), form
    # F tests: case 1 F = BMS / WMS on (n - 1, n(k - 1)) df, cases 2 and 3 BMS / EMS on (n - 1, (n - 1)(k - 1))
    assert table.loc["ICC1", "F"] == pytest.approx(11.24 / 6.26, abs=0.005)
    assert table.loc["ICC3", "F"] == pytest.approx(11.24 / 1.02, rel=0.005)
    assert (table.loc["ICC1", "df1"], table.loc["ICC1", "df2"]) == (5, 18)
    assert (table.loc["ICC3", "df1"], table.loc["ICC3", "df2"]) == (5, 15)
    assert table.loc["ICC1", "p"] == pytest.approx(stats.f.sf(table.loc["ICC1", "F"], 5, 18))
    assert table.loc["ICC3", "p"] == pytest.approx(stats.f.sf(table.loc["ICC3", "F"], 5, 15))
    # the k forms are the Spearman-Brown step-up of the single forms
    for single in ("ICC1", "ICC2", "ICC3"):
        r = table.loc[single, "icc"]
        assert table.loc[f"{single}k", "icc"] == pytest.approx(4 * r / (1 + 3 * r))


def test_icc3_confidence_interval_formula():
    """Shrout & Fleiss (1979) case 3: F_L = F0 / F(1-a/2; n-1, (n-1)(k-1)), unrounded."""
    res = icc(SF_LONG, "target", "judge", "rating").set_index("type").loc["ICC3"]
    n, k, f0 = 6, 4, res["F"]
    fl = f0 / stats.f.ppf(0.975, n - 1, (n - 1) * (k - 1))
    fu = f0 * stats.f.ppf(0.975, (n - 1) * (k - 1), n - 1)
    assert res["ci_low"] == pytest.approx((fl - 1) / (fl + k - 1), rel=1e-9)
    assert res["ci_high"] == pytest.approx((fu - 1) / (fu + k - 1), rel=1e-9)
    # Unrounded, unlike pingouin's default 2-decimal CI95 display.
    assert res["ci_low"] != round(res["ci_low"], 2)


def test_icc_two_raters_matches_formula():
    long = PEFR.reset_index().melt(id_vars="index", var_name="meter", value_name="pefr")
    table = icc(long, "index", "meter", "pefr").set_index("type")
    # Two-way ANOVA by hand: ICC(3,1) = (MSR - MSE) / (MSR + MSE) for k = 2.
    data = np.column_stack([PEFR_WRIGHT, PEFR_MINI])
    n, k = data.shape
    grand = data.mean()
    msr = k * ((data.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((data.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    assert table.loc["ICC3", "icc"] == pytest.approx((msr - mse) / (msr + mse), rel=1e-9)
    assert table.loc["ICC2", "icc"] == pytest.approx((msr - mse) / (msr + mse + k * (msc - mse) / n), rel=1e-9)


def test_icc_raises_on_duplicate_ratings_naming_them():
    dup = pd.concat([SF_LONG, SF_LONG.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"target=1, judge=1"):
        icc(dup, "target", "judge", "rating")
    with pytest.raises(KeyError, match="score"):
        icc(SF_LONG, "target", "judge", "score")


def test_icc_missing_rating_drops_the_target():
    partial = SF_LONG.drop(index=0)
    table = icc(partial, "target", "judge", "rating")
    assert (table["n"] == 5).all()


def test_volumetric_agreement_row_and_small_n():
    row = volumetric_agreement(PEFR, reference="wright", method="mini").iloc[0]
    assert row["n"] == 17
    assert row["bias"] == pytest.approx(2.1, abs=0.05)  # method minus reference
    assert row["ccc"] == pytest.approx(0.9427, abs=1e-4)
    for key in ("slope", "icc3", "icc2", "residual_sd", "prop_slope", "loa_low", "loa_high", "bias_ci_low",
                "loa_high_ci_high"):
        assert np.isfinite(row[key])
    # Missing pairs are dropped; fewer than 3 pairs give NaN, not an exception.
    small_df = pd.DataFrame({"ref": [1.0, 2.0, np.nan], "method": [1.1, np.nan, 3.0]})
    small = volumetric_agreement(small_df, reference="ref", method="method").iloc[0]
    assert small["n"] == 1
    assert np.isnan(small["ccc"]) and np.isnan(small["slope"]) and np.isnan(small["icc3"])
    assert small["bias"] == pytest.approx(0.1)
    empty = volumetric_agreement(pd.DataFrame({"ref": [], "method": []}), reference="ref", method="method").iloc[0]
    assert empty["n"] == 0 and np.isnan(empty["bias"])


def test_constant_values_do_not_crash():
    row = volumetric_agreement(pd.DataFrame({"a": [5.0] * 4, "b": [5.0] * 4}), reference="b", method="a").iloc[0]
    assert np.isnan(row["ccc"]) and np.isnan(row["slope"]) and np.isnan(row["icc3"])
    assert row["bias"] == 0.0


def test_inputs_are_a_dataframe_and_column_names():
    with pytest.raises(KeyError, match="nope"):
        concordance_ccc(PEFR, reference="wright", method="nope")
    with pytest.raises(TypeError, match="DataFrame"):
        bland_altman(PEFR_WRIGHT, reference="a", method="b")


@pytest.mark.parametrize("func", [bland_altman, concordance_ccc, ols_agreement, volumetric_agreement])
def test_reference_and_method_are_keyword_only(func) -> None:
    """One order for all four: a positional call (which once meant method first for two of them) raises."""
    with pytest.raises(TypeError, match="positional"):
        func(PEFR, "wright", "mini")
    params = list(inspect.signature(func).parameters.values())
    assert [p.name for p in params[1:3]] == ["reference", "method"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_differences_are_method_minus_reference_everywhere() -> None:
    over = pd.DataFrame({"manual": [8.0, 9.0, 10.0, 11.0, 12.5], "auto": [9.1, 10.2, 10.9, 12.1, 13.4]})
    ba = bland_altman(over, reference="manual", method="auto").iloc[0]
    vol = volumetric_agreement(over, reference="manual", method="auto").iloc[0]
    ccc = concordance_ccc(over, reference="manual", method="auto").iloc[0]
    assert ba["bias"] > 0 and vol["bias"] == pytest.approx(ba["bias"]) and ccc["location_shift"] > 0
    assert vol["mean_method"] > vol["mean_reference"]


def test_one_minimum_sample_size() -> None:
    """MIN_N complete pairs are enough for every agreement statistic; one fewer gives NaN."""
    assert MIN_N == 3
    three = PEFR.head(MIN_N)
    row = volumetric_agreement(three, reference="wright", method="mini").iloc[0]
    assert np.isfinite(row["ccc"]) and np.isfinite(row["slope"]) and np.isfinite(row["icc3"])
    two = volumetric_agreement(PEFR.head(MIN_N - 1), reference="wright", method="mini").iloc[0]
    assert np.isnan(two["ccc"]) and np.isnan(two["slope"]) and np.isnan(two["icc3"])


def test_icc_alpha_is_keyword_only_and_95_percent() -> None:
    with pytest.raises(ValueError, match="alpha 0.1"):
        icc(SF_LONG, "target", "judge", "rating", alpha=0.1)
    with pytest.raises(TypeError):
        icc(SF_LONG, "target", "judge", "rating", 0.95)
