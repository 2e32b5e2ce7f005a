"""Visit pairing, deltas, winsorising, ordinal EDSS change and correlations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels
from scipy.stats import mstats

from tests.conftest import missing_prerequisite
from thalamus_bidsapp.stats import longitudinal as lon
from thalamus_bidsapp.stats.pairwise import pairwise_wilcoxon

UCLA = Path(statsmodels.__file__).parent / "miscmodels" / "tests" / "results" / "ologit_ucla.csv"


def test_winsorize_wikipedia_example() -> None:
    # Wikipedia, "Winsorizing": 90% winsorisation of these 20 values replaces -40 by -5 and
    # 1053 by 101; the mean goes from 101.5 to 55.65
    x = [92, 19, 101, 58, 1053, 91, 26, 78, 10, 13, -40, 101, 86, 85, 15, 89, 89, 28, -5, 41]
    assert np.mean(x) == pytest.approx(101.5)
    w = lon.winsorize(x, (0.05, 0.05))
    assert w.mean() == pytest.approx(55.65)
    assert w.min() == -5 and w.max() == 101
    assert np.array_equal(w, np.asarray(mstats.winsorize(np.array(x, float), limits=(0.05, 0.05))))


def test_winsorize_keeps_missing_and_handles_1_99() -> None:
    x = np.r_[np.arange(100.0), np.nan]
    w = lon.winsorize(x, (0.01, 0.01))
    assert np.isnan(w[-1])
    assert w[0] == 1.0 and w[99] == 98.0 and (w[1:99] == x[1:99]).all()
    # fewer than 100 values: 1% of 50 is no value at all
    assert np.array_equal(lon.winsorize(np.arange(50.0), (0.01, 0.01)), np.arange(50.0))


def test_ordinal_logistic_matches_ucla_polr() -> None:
    # UCLA OARC "Ordinal logistic regression | R data analysis examples": polr(apply ~ pared + public + gpa)
    # coefficients 1.04769, -0.05879, 0.61594; SE 0.2658, 0.2979, 0.2606; intercepts (thresholds)
    # unlikely|somewhat likely 2.2039 (SE 0.7795), somewhat likely|very likely 4.2994 (SE 0.8043);
    # residual deviance 717.0249, AIC 727.0249 (data shipped with statsmodels' tests). polr's optimiser
    # stops a little before the maximum (our log-likelihood equals its deviance to 1e-4, the thresholds
    # differ by up to 6e-4), hence 1e-3 for the estimates.
    if not UCLA.exists():
        missing_prerequisite(f"statsmodels test data not installed: {UCLA}")
    df = pd.read_csv(UCLA)
    df["apply"] = pd.Categorical(df["apply"], categories=["unlikely", "somewhat likely", "very likely"], ordered=True)
    published = {"pared": (1.04769, 0.2658), "public": (-0.05879, 0.2979), "gpa": (0.61594, 0.2606),
                 "unlikely|somewhat likely": (2.2039, 0.7795), "somewhat likely|very likely": (4.2994, 0.8043)}
    table = lon.ordinal_logistic(df, x="pared", y="apply", covar=["public", "gpa"]).set_index("term")
    assert list(table.index) == list(published)
    assert list(table["kind"]) == ["coefficient"] * 3 + ["threshold"] * 2
    for term, (beta, se) in published.items():
        estimate = "beta" if table.loc[term, "kind"] == "coefficient" else "threshold"
        assert table.loc[term, estimate] == pytest.approx(beta, abs=1e-3)
        assert table.loc[term, "se"] == pytest.approx(se, abs=5e-4)
    assert -2 * table["loglik"].iloc[0] == pytest.approx(717.0249, abs=1e-4)
    assert table["aic"].iloc[0] == pytest.approx(727.0249, abs=1e-4)
    assert table["converged"].all() and (table["n"] == 400).all() and (table["n_categories"] == 3).all()
    assert table.loc["pared", "p"] == pytest.approx(8.09e-05, rel=0.01)


# R ordinal::clm(rating ~ temp + contact, data = wine), as printed in Christensen RHB, "A Tutorial on
# fitting Cumulative Link Models with the ordinal Package" (clm tutorial, section 2), data of Randall
# (1989) tabulated in its Table 1 (here by temperature x contact, as clm_article Table 1):
# tempwarm 2.5031 (SE 0.5287), contactyes 1.5278 (SE 0.4766); thresholds 1|2 -1.3444 (0.5171),
# 2|3 1.2508 (0.4379), 3|4 3.4669 (0.5978), 4|5 5.0064 (0.7309); logLik -86.49, AIC 184.98.
WINE_COUNTS = {("cold", "no"): [4, 9, 5, 0, 0], ("cold", "yes"): [1, 7, 8, 2, 0],
               ("warm", "no"): [0, 5, 8, 3, 2], ("warm", "yes"): [0, 1, 5, 7, 5]}
WINE_CLM = {"temp[T.warm]": (2.5031, 0.5287), "contact[T.yes]": (1.5278, 0.4766), "1|2": (-1.3444, 0.5171),
            "2|3": (1.2508, 0.4379), "3|4": (3.4669, 0.5978), "4|5": (5.0064, 0.7309)}


def test_ordinal_logistic_thresholds_match_r_clm_wine() -> None:
    rows = [(t, c, r) for (t, c), k in WINE_COUNTS.items() for r, m in enumerate(k, 1) for _ in range(m)]
    wine = pd.DataFrame(rows, columns=["temp", "contact", "rating"])
    wine["rating"] = pd.Categorical(wine["rating"], ordered=True)
    table = lon.ordinal_logistic(wine, x="temp", y="rating", covar=["contact"], categorical=["temp", "contact"])
    table = table.set_index("term")
    assert list(table.index) == list(WINE_CLM)
    assert list(table.columns) == lon.ORDINAL_COLUMNS[1:]
    # thresholds and coefficients never share a column
    coefficient = table["kind"] == "coefficient"
    assert table.loc[coefficient, "threshold"].isna().all() and table.loc[~coefficient, "beta"].isna().all()
    for term, (beta, se) in WINE_CLM.items():
        estimate = table.loc[term, "beta"] if coefficient[term] else table.loc[term, "threshold"]
        assert estimate == pytest.approx(beta, abs=5e-5)
        assert table.loc[term, "se"] == pytest.approx(se, abs=5e-5)
    assert (table["loglik"].round(2) == -86.49).all() and (table["aic"].round(2) == 184.98).all()
    assert np.isnan(table.loc["1|2", "odds_ratio"]) and table.loc["temp[T.warm]", "odds_ratio"] > 1


def test_ordinal_logistic_unfittable_gives_one_row_with_a_note() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": pd.Categorical(["a", "a", "a"], categories=["a", "b"], ordered=True)})
    table = lon.ordinal_logistic(df, x="x", y="y")
    assert len(table) == 1 and table.iloc[0]["term"] == "x" and "fewer than two" in table.iloc[0]["note"]


def test_winsorize_matches_scipy_rule_everywhere() -> None:
    # n = 100 at 0.29: int(100 * 0.29) = int(28.999...) = 28 values clipped per tail, as scipy does
    x = np.random.default_rng(0).permutation(np.arange(100.0))
    w = lon.winsorize(x, (0.29, 0.29))
    assert (w == 28.0).sum() == 29 and (w == 71.0).sum() == 29
    for n in (7, 20, 33, 100, 101):
        values = np.random.default_rng(n).normal(size=n)
        for limits in ((0.01, 0.01), (0.05, 0.05), (0.1, 0.2), (0.29, 0.29), (0.07, 0.0)):
            expected = np.asarray(mstats.winsorize(values, limits=limits))
            assert np.array_equal(lon.winsorize(values, limits), expected), (n, limits)


def test_edss_change_categories() -> None:
    cats = lon.edss_change_category([1.0, 0.5, 0.0, -0.5, np.nan])
    assert list(cats.astype(object).where(cats.notna(), None)) == ["worse", "worse", "stable", "better", None]
    assert cats.cat.ordered and list(cats.cat.categories) == ["better", "stable", "worse"]
    per_subject = lon.edss_change_category([0.5, 0.5], [0.5, 1.0])
    assert list(per_subject) == ["worse", "stable"]


def test_visit_order_and_intervals() -> None:
    sessions = pd.DataFrame({
        "participant_id": ["sub-01"] * 3 + ["sub-02"] * 2 + ["sub-03"] * 2 + ["sub-04"],
        "session_id": ["ses-10", "ses-2", "ses-9", "ses-01", "ses-02", "ses-a", "ses-b", "ses-01"],
        "acq_time": ["2020-01-01T10:00:00", "2018-01-01T10:00:00", "2019-01-01", "2017-06-01T00:00:00", None,
                     None, None, "2020-01-01"],
        "time_years": [np.nan] * 5 + [0.0, 2.5, np.nan],
    })
    ordered = lon.order_visits(sessions, "acq_time", "time_years")
    sub1 = ordered[ordered["participant_id"] == "sub-01"].sort_values("visit_rank")
    assert list(sub1["session_id"]) == ["ses-2", "ses-9", "ses-10"]
    pairs = lon.select_visit_pairs(ordered, "first", "next").set_index("participant_id")
    assert pairs.loc["sub-01", "session_fu"] == "ses-9"
    assert pairs.loc["sub-01", "interval_years"] == pytest.approx((365 - 10 / 24) / 365.25)  # 10:00 to midnight
    # sub-02 lacks one acq_time: ordered by label, interval unknown
    assert pairs.loc["sub-02", "session_fu"] == "ses-02" and np.isnan(pairs.loc["sub-02", "interval_years"])
    assert pairs.loc["sub-03", "interval_years"] == 2.5 and pairs.loc["sub-03", "interval_source"] == "time_years"
    assert "sub-04" not in pairs.index  # a single session has no follow-up
    last = lon.select_visit_pairs(ordered, "first", "last").set_index("participant_id")
    assert last.loc["sub-01", "session_fu"] == "ses-10"
    labelled = lon.select_visit_pairs(ordered, "ses-9", "next")
    assert list(labelled["participant_id"]) == ["sub-01"]


def test_paired_deltas_ml_and_percent() -> None:
    data = pd.DataFrame({
        "participant_id": ["sub-01"] * 4, "session_id": ["ses-01", "ses-02"] * 2,
        "method": ["a", "a", "b", "b"], "volume_ml": [10.0, 9.9, 8.0, 8.2], "edss": [2.0, 3.0, 2.0, 3.0],
    })
    pairs = pd.DataFrame({"participant_id": ["sub-01"], "session_bl": ["ses-01"], "session_fu": ["ses-02"],
                          "interval_years": [2.0], "interval_source": ["acq_time"]})
    out = lon.paired_deltas(data, pairs, ["volume_ml", "edss"], by=["method"], pct=["volume_ml"]).set_index("method")
    assert out.loc["a", "delta_volume_ml"] == pytest.approx(-0.1)
    assert out.loc["a", "pct_volume_ml"] == pytest.approx(-1.0)
    assert out.loc["b", "pct_volume_ml"] == pytest.approx(2.5)
    assert out.loc["a", "delta_edss"] == 1.0 and out.loc["a", "interval_years"] == 2.0


def test_interval_years_from_acq_time() -> None:
    years = lon.interval_years(pd.Series(["2020-01-01T00:00:00", "bad"]), pd.Series(["2021-01-01T00:00:00", "2021-01-01"]))
    assert years.iloc[0] == pytest.approx(366 / 365.25) and np.isnan(years.iloc[1])


def test_pearson_and_pairwise_wilcoxon() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=80)
    df = pd.DataFrame({"x": x, "y": 0.5 * x + rng.normal(0, 0.5, 80)})
    df.loc[0, "y"] = np.nan
    row = lon.pearson(df, "x", "y").iloc[0]
    assert row["n"] == 79 and row["n_excluded"] == 1
    assert row["ci_low"] < row["r"] < row["ci_high"] and row["p"] < 1e-6
    long = pd.DataFrame({"participant_id": np.repeat(np.arange(30), 3), "method": ["a", "b", "c"] * 30,
                         "v": np.tile([0.0, 1.0, 1.01], 30) + rng.normal(0, 0.1, 90)})
    # column names as in the clinical longitudinal_pairwise_wilcoxon table
    table = pairwise_wilcoxon(long, "v", "method", "participant_id", min_pairs=2).set_index(["A", "B"])
    assert table.loc[("a", "b"), "p_fdr"] < 1e-4
    assert table.loc[("b", "c"), "p_fdr"] > 0.05
    assert (table["p_fdr"] >= table["p"]).all()


def test_describe() -> None:
    df = pd.DataFrame({"g": ["x", "x", "y"], "v": [1.0, 3.0, np.nan]})
    out = lon.describe(df, "v", ["g"]).set_index("g")
    assert out.loc["x", "mean"] == 2.0 and out.loc["y", "n"] == 0 and out.loc["y", "n_missing"] == 1


def test_winsorize_percentile_type7_quantiles() -> None:
    """Clipping at the Hyndman & Fan (1996) type-7 quantiles (R's default, DescTools::Winsorize).

    1..10 at 10 % each side: Q(0.1) = 1 + 0.1 * 9 = 1.9, Q(0.9) = 1 + 0.9 * 9 = 9.1, values that are
    not in the data (the count rule would give 2 and 9 instead).
    """
    x = np.arange(1.0, 11.0)
    w = lon.winsorize(x, (0.1, 0.1), method="percentile")
    assert w.tolist() == pytest.approx([1.9, *range(2, 10), 9.1])
    assert lon.winsorize(x, (0.1, 0.1)).tolist() == [2.0, *range(2, 10), 9.0]
    # Wikipedia's 90 % example: type 7 puts the 5th percentile of the 20 values 0.95 of the way from -40
    # to -5 (-6.75) and the 95th 0.05 of the way from 101 to 1053 (148.6)
    wiki = [92, 19, 101, 58, 1053, 91, 26, 78, 10, 13, -40, 101, 86, 85, 15, 89, 89, 28, -5, 41]
    pw = lon.winsorize(wiki, (0.05, 0.05), method="percentile")
    assert (pw.min(), pw.max()) == pytest.approx((-40 + 0.95 * 35, 101 + 0.05 * 952))
    # missing values stay missing and are not counted; zero limits change nothing
    with_nan = lon.winsorize([np.nan, *x], (0.1, 0.1), method="percentile")
    assert np.isnan(with_nan[0]) and with_nan[1:].tolist() == pytest.approx(w.tolist())
    assert lon.winsorize(x, (0.0, 0.0), method="percentile").tolist() == x.tolist()


def test_winsorize_guards() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        lon.winsorize([1.0, 2.0], (0.1, 0.1), method="quantile")
    with pytest.raises(ValueError, match="fractions"):
        lon.winsorize([1.0, 2.0], (5, 95), method="percentile")  # percent, not fractions
    with pytest.raises(ValueError, match="fractions"):
        lon.winsorize([1.0, 2.0], (0.6, 0.5))
    with pytest.raises(TypeError):
        lon.winsorize([1.0, 2.0], (0.1, 0.1), "percentile")  # the rule is keyword-only


def test_pearson_minimum_sample_size() -> None:
    """r and p from MIN_N pairs; the Fisher-z interval (SE 1 / sqrt(n - 3)) from one more."""
    three = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 3.0, 2.0]})
    row = lon.pearson(three, "x", "y").iloc[0]
    assert lon.MIN_N == 3 and row["r"] == pytest.approx(0.5)
    # t = r sqrt(1 / (1 - r^2)) = 1 / sqrt(3) on 1 df (Cauchy): p = 1 - 2 atan(1 / sqrt(3)) / pi = 2 / 3
    assert row["p"] == pytest.approx(2 / 3)
    assert np.isnan(row["ci_low"]) and "confidence interval" in row["note"]
    two = lon.pearson(three.head(2), "x", "y").iloc[0]
    assert np.isnan(two["r"]) and "fewer than 3" in two["note"]
