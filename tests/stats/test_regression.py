"""OLS with classical, HC0 and HC3 standard errors and multiple-testing adjustment, against published values."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.regression import OLS_COLUMNS, SE_TYPES, adjust_family, ols, zscore

LONGLEY_TERMS = ["GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]
# NIST StRD Longley certified coefficients (https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml)
LONGLEY_BETA = [15.0618722713733, -0.358191792925910e-01, -2.02022980381683, -1.03322686717359,
                -0.511041056535807e-01, 1829.15146461355]
# HC3 standard errors computed with SAS, as published in statsmodels' test suite
# (statsmodels/regression/tests/results/results_regression.py, class Longley, HC3_se)
LONGLEY_HC3_SE = [91.11939, 0.05562, 0.82213, 0.29879, 0.32491, 922.80784]
# HC0 (White 1980) standard errors computed with SAS, same statsmodels results file (Longley.HC0_se)
LONGLEY_HC0_SE = [51.22035, 0.02458, 0.38324, 0.14625, 0.15821, 428.38438]
LONGLEY_B0_HC0_SE = 832212
# NIST certified standard deviations of the estimates (classical OLS)
LONGLEY_SE = [84.9149257747669, 0.334910077722432e-01, 0.488399681651699, 0.214274163161675,
              0.226073200069370, 455.478499142212]
# NIST certified intercept (B0) and its SD, residual SD and R-squared
LONGLEY_B0, LONGLEY_B0_SE = -3482258.63459582, 890420.383607373
LONGLEY_RESIDUAL_SD = 304.854073561965
LONGLEY_R2 = 0.995479004577296
# SAS HC3 SE of the intercept (same statsmodels results file)
LONGLEY_B0_HC3_SE = 1799477


def _term(table: pd.DataFrame, term: str) -> pd.Series:
    return table.set_index("term").loc[term]


@pytest.fixture(scope="module")
def longley() -> pd.DataFrame:
    return sm.datasets.longley.load_pandas().data


@pytest.mark.parametrize("i", range(len(LONGLEY_TERMS)))
def test_hc3_standard_errors_match_sas_longley(longley: pd.DataFrame, i: int) -> None:
    term = LONGLEY_TERMS[i]
    row = _term(ols(longley, x=term, y="TOTEMP", covar=[t for t in LONGLEY_TERMS if t != term], se="hc3"), term)
    assert row["se_type"] == "hc3"
    assert row["beta"] == pytest.approx(LONGLEY_BETA[i], rel=1e-6)
    assert row["se"] == pytest.approx(LONGLEY_HC3_SE[i], abs=1e-4 if i else 1e-4, rel=1e-5)
    assert row["n"] == 16
    assert row["r2"] == pytest.approx(0.995479004577296, rel=1e-9)  # NIST certified R-squared


@pytest.mark.parametrize("i", range(len(LONGLEY_TERMS)))
def test_classical_standard_errors_match_nist(longley: pd.DataFrame, i: int) -> None:
    term = LONGLEY_TERMS[i]
    row = _term(ols(longley, x=term, y="TOTEMP", covar=[t for t in LONGLEY_TERMS if t != term]), term)
    assert row["se_type"] == "classical"  # the default
    assert row["se"] == pytest.approx(LONGLEY_SE[i], rel=1e-6)
    # the confidence interval is beta +/- t(0.975, 9) * se
    assert row["ci_high"] - row["beta"] == pytest.approx(2.2621571627982 * row["se"], rel=1e-9)


def test_full_table_matches_nist_longley(longley: pd.DataFrame) -> None:
    """Every term of one fit: NIST certified estimates and SDs, residual SD and R2; SAS HC3 SEs beside."""
    table = ols(longley, x="GNPDEFL", y="TOTEMP", covar=LONGLEY_TERMS[1:])
    assert list(table.columns) == OLS_COLUMNS
    assert list(table["term"]) == ["Intercept", *LONGLEY_TERMS]
    assert table["beta"].tolist() == pytest.approx([LONGLEY_B0, *LONGLEY_BETA], rel=1e-7)
    assert table["se_classical"].tolist() == pytest.approx([LONGLEY_B0_SE, *LONGLEY_SE], rel=1e-7)
    assert (table["se"] == table["se_classical"]).all()
    assert table["se_hc3"].tolist() == pytest.approx([LONGLEY_B0_HC3_SE, *LONGLEY_HC3_SE], rel=1e-6, abs=5e-6)  # SAS: 5 decimals
    assert table["se_hc0"].tolist() == pytest.approx([LONGLEY_B0_HC0_SE, *LONGLEY_HC0_SE], rel=1e-6, abs=5e-6)
    assert table["residual_sd"].tolist() == pytest.approx([LONGLEY_RESIDUAL_SD] * 7, rel=1e-9)
    assert table["r2"].tolist() == pytest.approx([LONGLEY_R2] * 7, rel=1e-9)
    assert (table["n"] == 16).all() and (table["n_excluded"] == 0).all() and (table["df_resid"] == 9).all()
    t = table["beta"] / table["se"]
    assert table["t"].tolist() == pytest.approx(t.tolist())
    assert table["ci_low"].tolist() == pytest.approx((table["beta"] - 2.2621571627982 * table["se"]).tolist())
    robust = ols(longley, x="GNPDEFL", y="TOTEMP", covar=LONGLEY_TERMS[1:], se="hc3")
    assert (robust["se"] == robust["se_hc3"]).all() and (robust["se_type"] == "hc3").all()
    # the estimates and the other SEs do not depend on the choice
    for column in ("beta", "se_classical", "se_hc0", "se_hc3", "residual_sd", "bp_p"):
        assert robust[column].tolist() == table[column].tolist(), column


@pytest.mark.parametrize("i", range(len(LONGLEY_TERMS)))
def test_hc0_standard_errors_match_sas_longley(longley: pd.DataFrame, i: int) -> None:
    term = LONGLEY_TERMS[i]
    row = _term(ols(longley, x=term, y="TOTEMP", covar=[t for t in LONGLEY_TERMS if t != term], se="hc0"), term)
    assert row["se_type"] == "hc0"
    assert row["se"] == pytest.approx(LONGLEY_HC0_SE[i], abs=5e-6, rel=1e-5)
    # still t with the residual df (Long & Ervin 2000), with the chosen SE
    assert row["ci_high"] - row["beta"] == pytest.approx(2.2621571627982 * row["se"], rel=1e-9)


def test_hc0_is_the_sandwich_and_hc3_its_leverage_correction(longley: pd.DataFrame) -> None:
    """White (1980) by hand: (X'X)^-1 X' diag(e^2) X (X'X)^-1; HC3 divides e^2 by (1 - h)^2."""
    table = ols(longley, x="GNP", y="TOTEMP", covar=["UNEMP"])
    X = np.column_stack([np.ones(16), longley["GNP"], longley["UNEMP"]])
    y = longley["TOTEMP"].to_numpy()
    bread = np.linalg.inv(X.T @ X)
    e = y - X @ (bread @ X.T @ y)
    h = np.einsum("ij,jk,ik->i", X, bread, X)
    hc0 = np.sqrt(np.diag(bread @ (X.T * e**2) @ X @ bread))
    hc3 = np.sqrt(np.diag(bread @ (X.T * (e / (1 - h)) ** 2) @ X @ bread))
    assert table["se_hc0"].tolist() == pytest.approx(hc0.tolist(), rel=1e-8)
    assert table["se_hc3"].tolist() == pytest.approx(hc3.tolist(), rel=1e-8)


def test_x_and_y_are_keyword_only(longley: pd.DataFrame) -> None:
    """The old positional order (data, y, x) cannot silently regress x on y: positions raise."""
    with pytest.raises(TypeError, match="positional"):
        ols(longley, "TOTEMP", "GNP")
    with pytest.raises(TypeError, match="positional"):
        ols(longley, "GNP", "TOTEMP")
    params = inspect.signature(ols).parameters
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("x", "y", "covar", "se", "alpha"))


def test_se_choice_is_explicit_never_switched(longley: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match="hc3"):
        ols(longley, x="GNP", y="TOTEMP", hc3="auto")  # the data-driven switch is gone
    with pytest.raises(ValueError, match="se must be one of"):
        ols(longley, x="GNP", y="TOTEMP", se="auto")
    assert SE_TYPES == ("classical", "hc0", "hc3")


def test_numeric_category_levels_sort_numerically() -> None:
    # scanner labels 1, 2, 10: the reference is 1 (text sorting would make "1" < "10" < "2" and still 1, so
    # use 2, 10, 30 where text sorting would pick "10")
    rng = np.random.default_rng(2)
    scanner = np.repeat(["2", "10", "30"], 20)
    df = pd.DataFrame({"x": rng.normal(size=60), "scanner": scanner})
    df["y"] = df["x"] + (df["scanner"] == "30") * 2.0 + rng.normal(0, 0.1, 60)
    table = ols(df, x="x", y="y", covar=["scanner"], categorical=["scanner"])
    assert list(table["term"]) == ["Intercept", "x", "scanner[T.10]", "scanner[T.30]"]
    assert _term(table, "scanner[T.30]")["beta"] == pytest.approx(2.0, abs=0.1)


def test_breusch_pagan_is_reported_but_does_not_pick_the_se() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 300)
    homo = pd.DataFrame({"x": x, "y": 1 + 0.5 * x + rng.normal(0, 1, 300)})
    hetero = pd.DataFrame({"x": x, "y": 1 + 0.5 * x + rng.normal(0, 1, 300) * x})
    r_homo = _term(ols(homo, x="x", y="y"), "x")
    r_het = _term(ols(hetero, x="x", y="y"), "x")
    assert r_homo["bp_p"] > 0.05 and r_het["bp_p"] < 0.05
    # heteroscedastic or not, the default table is the classical one
    assert r_het["se"] == r_het["se_classical"] and r_homo["se"] == r_homo["se_classical"]
    assert r_het["se_type"] == r_homo["se_type"] == "classical"
    assert _term(ols(homo, x="x", y="y", se="hc3"), "x")["se"] == r_homo["se_hc3"]


def test_missing_rows_are_counted_and_categorical_covariates_coded() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=50), "sex": rng.choice(["female", "male"], 50)})
    df["y"] = 2 * df["x"] + (df["sex"] == "male") * 1.0 + rng.normal(0, 0.1, 50)
    df.loc[[0, 1, 2], "y"] = np.nan
    df.loc[3, "sex"] = None
    table = ols(df, x="x", y="y", covar=["sex"], categorical=["sex"])
    row = _term(table, "x")
    assert list(table["term"]) == ["Intercept", "x", "sex[T.male]"]
    assert row["n"] == 46 and row["n_excluded"] == 4
    assert row["ci_low"] < 2 < row["ci_high"]


def test_unfittable_model_gives_a_note_not_an_error() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, np.nan], "age": [30.0, 40.0]})
    table = ols(df, x="x", y="y", covar=["age"])
    row = table.iloc[0]
    assert len(table) == 1 and row["term"] == "x"
    assert np.isnan(row["beta"]) and row["note"]
    constant = pd.DataFrame({"x": np.arange(10.0), "y": np.arange(10.0) * 2 + 1, "steroid": 0.0})
    row = _term(ols(constant, x="x", y="y", covar=["steroid"]), "x")
    assert row["beta"] == pytest.approx(2.0) and "steroid" in row["note"]


# Benjamini & Hochberg (1995), section 4.2: 15 p-values from a multiple-endpoint trial.
BH_P = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719,
        0.6528, 0.7590, 1.0000]


def test_benjamini_hochberg_example() -> None:
    # at q = 0.05 the BH procedure rejects the four smallest p-values, Bonferroni only three
    bh = p_adjust(BH_P, "fdr_bh")
    assert (bh <= 0.05).sum() == 4
    bonf = p_adjust(BH_P, "bonferroni")
    assert (bonf <= 0.05).sum() == 3
    # adjusted values: min over k >= i of m p_(k) / k, capped at 1
    assert bh[3] == pytest.approx(15 * 0.0095 / 4)
    assert bh[0] == pytest.approx(15 * 0.0001 / 1)
    assert bonf[2] == pytest.approx(15 * 0.0019)


def test_p_adjust_keeps_missing_values_out_of_the_family() -> None:
    out = p_adjust([0.01, np.nan, 0.04])
    assert np.isnan(out[1])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    table = pd.DataFrame({"g": ["a", "a", "b"], "p": [0.01, 0.04, 0.03]})
    grouped = adjust_family(table, by=["g"])
    assert list(grouped["p_fdr"]) == pytest.approx([0.02, 0.04, 0.03])


def test_zscore() -> None:
    z = zscore([1.0, 2.0, 3.0, np.nan])
    assert z[:3] == pytest.approx([-1.0, 0.0, 1.0]) and np.isnan(z[3])
    assert list(zscore([5.0, 5.0])) == [0.0, 0.0]
