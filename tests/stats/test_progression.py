"""EDSS course, ANCOVA adjusted means with Bonferroni pairwise tests, logistic regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import statsmodels.api as sm
from scipy import stats

from thalamus_bidsapp.stats import progression as prog


@pytest.fixture(scope="module")
def viagra() -> pd.DataFrame:
    # Field, A. (2013). Discovering Statistics Using IBM SPSS Statistics, 4th ed., chapter 11,
    # ViagraCovariate.dat: participant's libido by dose, partner's libido as covariate
    libido = [3, 2, 5, 2, 2, 2, 7, 2, 4, 7, 5, 3, 4, 4, 7, 5, 4, 9, 2, 6, 3, 4, 4, 4, 6, 4, 6, 2, 8, 5]
    partner = [4, 1, 5, 1, 2, 2, 7, 4, 5, 5, 3, 1, 2, 2, 6, 4, 2, 1, 3, 5, 4, 3, 3, 2, 0, 1, 3, 0, 1, 0]
    dose = ["placebo"] * 9 + ["low"] * 8 + ["high"] * 13
    return pd.DataFrame({"dose": pd.Categorical(dose, categories=["placebo", "low", "high"]),
                         "libido": libido, "partner": partner})


def test_ancova_table_field_viagra(viagra: pd.DataFrame) -> None:
    # Field (2013): dose F(2, 26) = 4.14, p = .027; partner's libido F(1, 26) = 4.96, p = .035
    table = prog.ancova(viagra, "libido", "dose", ["partner"]).set_index("source")
    assert table.loc["dose", "F"] == pytest.approx(4.14, abs=0.005)
    assert table.loc["dose", "p"] == pytest.approx(0.027, abs=0.0005)
    assert table.loc["partner", "F"] == pytest.approx(4.96, abs=0.005)
    assert table.loc["partner", "p"] == pytest.approx(0.035, abs=0.0005)
    assert table.loc["Residual", "df"] == 26


def test_adjusted_means_field_viagra(viagra: pd.DataFrame) -> None:
    # Field (2013), estimated marginal means at partner's libido = 2.73:
    # placebo 2.926 (SE .596), low 4.712 (SE .621), high 5.151 (SE .503)
    means = prog.ancova_adjusted_means(viagra, "libido", "dose", ["partner"]).set_index("group")
    assert list(means.index) == ["placebo", "low", "high"]
    assert list(means["adj_mean"]) == pytest.approx([2.926, 4.712, 5.151], abs=5e-4)
    assert list(means["se"]) == pytest.approx([0.596, 0.621, 0.503], abs=5e-4)
    assert list(means["n"]) == [9, 8, 13]
    assert means.loc["placebo", "mean"] == pytest.approx(3.222, abs=5e-4)


def test_bonferroni_pairwise_field_viagra(viagra: pd.DataFrame) -> None:
    # Field (2013), Bonferroni pairwise comparisons of adjusted means:
    # placebo - low -1.786 (SE .849, p = .136); placebo - high -2.225 (SE .803, p = .030); low - high -.439 (p = 1.000)
    pairs = prog.ancova_pairwise(viagra, "libido", "dose", ["partner"]).set_index(["A", "B"])
    assert pairs.loc[("placebo", "low"), "diff"] == pytest.approx(-1.786, abs=5e-4)
    assert pairs.loc[("placebo", "low"), "se"] == pytest.approx(0.849, abs=5e-4)
    assert pairs.loc[("placebo", "low"), "p_bonferroni"] == pytest.approx(0.136, abs=5e-4)
    assert pairs.loc[("placebo", "high"), "diff"] == pytest.approx(-2.225, abs=5e-4)
    assert pairs.loc[("placebo", "high"), "p_bonferroni"] == pytest.approx(0.030, abs=1e-3)
    assert pairs.loc[("low", "high"), "p_bonferroni"] == 1.0
    assert (pairs["p_bonferroni"] == np.minimum(1, 3 * pairs["p"])).all()
    # padjust (Bonferroni by default) adjusts the p-value as well as the interval
    assert (pairs["padjust"] == "bonferroni").all() and (pairs["p_adjusted"] == pairs["p_bonferroni"]).all()


def test_tukey_pairwise_equals_tukey_hsd_without_covariates(viagra: pd.DataFrame) -> None:
    # Without covariates the adjusted means are the group means and the Tukey adjustment is
    # Tukey-Kramer's HSD for unequal groups (9, 8, 13): statsmodels' pairwise_tukeyhsd as reference.
    from statsmodels.stats.multicomp import pairwise_tukeyhsd

    ours = prog.ancova_pairwise(viagra, "libido", "dose", padjust="tukey").set_index(["A", "B"])
    hsd = pairwise_tukeyhsd(viagra["libido"], viagra["dose"].astype(str)).summary().data
    ref = {tuple(sorted((r[0], r[1]))): r for r in hsd[1:]}  # group1, group2, meandiff (g2 - g1), p-adj, lower, upper
    for (a, b), row in ours.iterrows():
        g1, g2, meandiff, p_adj, lower, upper, _ = ref[tuple(sorted((a, b)))]
        sign = 1.0 if (g1, g2) == (b, a) else -1.0  # ours is A - B
        assert row["diff"] == pytest.approx(sign * meandiff, abs=1e-4)
        assert row["p_tukey"] == pytest.approx(p_adj, abs=1e-3)
        assert sorted([row["ci_low"], row["ci_high"]]) == pytest.approx(sorted([sign * lower, sign * upper]), abs=1e-3)
    assert (ours["padjust"] == "tukey").all() and (ours["p_adjusted"] == ours["p_tukey"]).all()
    none = prog.ancova_pairwise(viagra, "libido", "dose", padjust="none")
    assert (none["p_adjusted"] == none["p"]).all()
    t = stats.t.ppf(0.975, none["df"])
    assert (none["ci_high"] - none["diff"]).tolist() == pytest.approx((t * none["se"]).tolist())
    with pytest.raises(ValueError, match="padjust must be one of"):
        prog.ancova_pairwise(viagra, "libido", "dose", padjust="holm")
    # Tukey is less conservative than Bonferroni for all pairs
    assert (ours["p_tukey"] <= ours["p_bonferroni"]).all()


def test_numeric_group_labels_sort_numerically() -> None:
    df = pd.DataFrame({"g": ["10"] * 4 + ["2"] * 4 + ["1"] * 4, "y": [5.0, 6, 7, 6, 3, 4, 5, 4, 1, 2, 3, 2]})
    means = prog.ancova_adjusted_means(df, "y", "g")
    assert list(means["group"]) == ["1", "2", "10"]
    pairs = prog.ancova_pairwise(df, "y", "g")
    assert list(zip(pairs["A"], pairs["B"])) == [("1", "2"), ("1", "10"), ("2", "10")]


def test_ancova_matches_pingouin_documented_example() -> None:
    # pingouin.ancova docstring: Method SS 571.029883, F 3.336482, p 0.031940; Income F 29.419438
    df = pg.read_dataset("ancova")
    table = prog.ancova(df, "Scores", "Method", ["Income"]).set_index("source")
    assert table.loc["Method", "ss"] == pytest.approx(571.029883, rel=1e-8)
    assert table.loc["Method", "F"] == pytest.approx(3.336482, rel=1e-6)
    assert table.loc["Method", "p"] == pytest.approx(0.031940, abs=1e-6)
    assert table.loc["Income", "F"] == pytest.approx(29.419438, rel=1e-6)
    two = prog.ancova(df, "Scores", "Method", ["Income", "BMI"]).set_index("source")
    assert two.loc["Method", "F"] == pytest.approx(3.232550, rel=1e-6)


def test_edss_course_thresholds() -> None:
    base = [0.0, 0.0, 1.0, 1.0, 5.5, 5.5, 6.0, 6.0, 6.0, 2.0, np.nan]
    fu = [1.5, 1.0, 2.0, 1.5, 6.5, 6.0, 6.5, 6.0, 5.5, 1.0, 3.0]
    course = prog.classify_edss_course(base, fu)
    expected = ["progression", "stable", "progression", "stable", "progression", "stable", "progression",
                "stable", "improvement", "improvement", None]
    assert list(course.astype(object).where(course.notna(), None)) == expected
    assert list(prog.progression_threshold([0, 1.0, 5.5, 6.0, 11.0], prog.DEFAULT_BANDS)[:4]) == [1.5, 1.0, 1.0, 0.5]
    assert np.isnan(prog.progression_threshold([11.0])[0])
    stricter = prog.classify_edss_course([2.0], [3.0], [(10.0, 1.5)])
    assert list(stricter) == ["stable"]


def test_logistic_matches_spector_mazzeo() -> None:
    # Spector & Mazzeo (1980) data, logit of GRADE on GPA, TUCE, PSI; Greene, Econometric Analysis
    # (5th ed., Table 21.1): PSI 2.378688 (SE 1.064564), GPA 2.826113 (SE 1.262941)
    df = sm.datasets.spector.load_pandas().data
    table = prog.logistic(df, x="PSI", y="GRADE", covar=["GPA", "TUCE"])
    assert list(table["term"]) == ["Intercept", "PSI", "GPA", "TUCE"]
    psi = table.set_index("term").loc["PSI"]
    assert psi["beta"] == pytest.approx(2.378688, abs=1e-5)
    assert psi["se"] == pytest.approx(1.064564, abs=1e-5)
    assert psi["n"] == 32 and psi["n_events"] == 11 and psi["converged"]
    gpa = prog.logistic(df, x="GPA", y="GRADE", covar=["PSI", "TUCE"]).set_index("term").loc["GPA"]
    assert gpa["beta"] == pytest.approx(2.826113, abs=1e-5)
    assert gpa["odds_ratio"] == pytest.approx(np.exp(2.826113), rel=1e-5)


def test_logistic_degenerate_inputs_give_notes() -> None:
    df = pd.DataFrame({"y": [0.0] * 10, "x": np.arange(10.0)})
    assert "two classes" in prog.logistic(df, x="x", y="y").iloc[0]["note"]
    with pytest.raises(TypeError, match="positional"):
        prog.logistic(df, "x", "y")  # x and y are keyword-only, as in ols
    sep = pd.DataFrame({"y": [0.0] * 5 + [1.0] * 5, "x": np.arange(10.0)})
    row = prog.logistic(sep, x="x", y="y").set_index("term").loc["x"]
    assert row["note"]  # perfect separation is reported, not raised
