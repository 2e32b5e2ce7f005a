"""Pairwise Wilcoxon signed-rank tests and the Benjamini-Hochberg adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.pairwise import PAIRED_COLUMNS, paired_wilcoxon, pairwise_wilcoxon

# Darwin's Zea mays data as analysed by Fisher RA (1935), The Design of
# Experiments, section 17: height differences (eighths of an inch) between
# cross- and self-fertilised plants of 15 pairs. Wilcoxon signed-rank: the
# negative ranks sum to W- = 24 (ranks 11 and 14 of |d|), W+ = 96, exact
# two-sided p = 169/4096 = 0.04126 (also the scipy.stats.wilcoxon documentation example).
DARWIN_D = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75.0])

# Benjamini Y, Hochberg Y (1995), J R Stat Soc B 57:289-300, section 4:
# the 15 p-values of the myocardial infarction example. At q = 0.05 the
# step-up procedure rejects the four smallest (Bonferroni only three).
BH_PVALUES = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
              0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]


def _long(values: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.concat(
        [pd.DataFrame({"subject": np.arange(len(v)), "method": m, "value": v}) for m, v in values.items()],
        ignore_index=True,
    )


def test_wilcoxon_darwin_fisher():
    base = np.full(15, 100.0)
    res = pairwise_wilcoxon(_long({"cross": base + DARWIN_D, "self": base})).iloc[0]
    assert (res["A"], res["B"], res["n"]) == ("cross", "self", 15)
    assert (res["T_plus"], res["T_minus"]) == (96.0, 24.0)
    assert res["test_method"] == "exact" and not res["correction"]
    assert res["p"] == pytest.approx(169 / 4096, abs=1e-9)
    assert res["median_diff"] == pytest.approx(24.0)  # 8th of the 15 sorted differences
    # A single comparison: BH leaves the p-value unchanged.
    assert res["p_fdr"] == pytest.approx(res["p"])
    # The same sums whatever the alternative (scipy's statistic is min(T+, T-) two-sided but T+ one-sided).
    greater = pairwise_wilcoxon(_long({"cross": base + DARWIN_D, "self": base}), alternative="greater").iloc[0]
    assert (greater["T_plus"], greater["T_minus"]) == (96.0, 24.0)
    assert greater["p"] == pytest.approx(169 / 8192, abs=1e-9)


def test_wilcoxon_normal_approximation_and_continuity_correction():
    # Darwin's data with the normal approximation: z = (T+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24)
    base = np.full(15, 100.0)
    data = _long({"cross": base + DARWIN_D, "self": base})
    mean, sd = 15 * 16 / 4, np.sqrt(15 * 16 * 31 / 24)
    plain = pairwise_wilcoxon(data, method="normal").iloc[0]
    assert plain["test_method"] == "normal" and not plain["correction"]
    assert plain["p"] == pytest.approx(2 * stats.norm.sf((96 - mean) / sd), rel=1e-12)
    corrected = pairwise_wilcoxon(data, method="normal", correction=True).iloc[0]
    assert corrected["correction"]
    assert corrected["p"] == pytest.approx(2 * stats.norm.sf((96 - mean - 0.5) / sd), rel=1e-12)
    # The exact test ignores the correction and says so.
    exact = pairwise_wilcoxon(data, method="exact", correction=True).iloc[0]
    assert exact["test_method"] == "exact" and not exact["correction"]
    with pytest.raises(ValueError, match="method"):
        pairwise_wilcoxon(data, method="approx")


def test_wilcoxon_auto_switches_with_ties_and_size():
    rng = np.random.default_rng(4)
    # ties in |d| with 12 pairs: every sign flip enumerated
    tied = _long({"a": np.r_[np.arange(1.0, 11.0), 5.0, 6.0] + 10, "b": np.full(12, 10.0)})
    assert pairwise_wilcoxon(tied).iloc[0]["test_method"] == "permutation"
    # more than 50 pairs: the normal approximation
    big = _long({"a": rng.normal(1, 1, 60), "b": np.zeros(60)})
    assert pairwise_wilcoxon(big).iloc[0]["test_method"] == "normal"


def test_pairs_follow_the_callers_order_never_the_alphabet():
    """freesurfer vs manual: the difference is the caller's first minus second, not freesurfer - manual."""
    rng = np.random.default_rng(4)
    manual = rng.normal(10, 1, 12)
    data = _long({"manual": manual, "freesurfer": manual + 0.5 + rng.normal(0, 0.1, 12)})
    # default: order of first appearance (manual was listed first)
    first = pairwise_wilcoxon(data).iloc[0]
    assert (first["A"], first["B"]) == ("manual", "freesurfer")
    assert first["median_diff"] < 0 and first["T_plus"] == 0.0
    # the caller's order flips the direction and the rank sums, not the p-value
    flipped = pairwise_wilcoxon(data, order=["freesurfer", "manual"]).iloc[0]
    assert (flipped["A"], flipped["B"]) == ("freesurfer", "manual")
    assert flipped["median_diff"] == pytest.approx(-first["median_diff"])
    assert (flipped["T_plus"], flipped["T_minus"]) == (first["T_minus"], first["T_plus"])
    assert flipped["p"] == pytest.approx(first["p"])
    # a categorical keeps its category order
    cat = data.assign(method=pd.Categorical(data["method"], categories=["freesurfer", "manual"]))
    assert tuple(pairwise_wilcoxon(cat).iloc[0][["A", "B"]]) == ("freesurfer", "manual")


def test_order_numbers_subset_and_unknown_method():
    data = _long({10: np.arange(5.0) + 1, 2: np.arange(5.0), 1: np.arange(5.0) + 0.5})
    res = pairwise_wilcoxon(data)
    assert list(zip(res["A"], res["B"])) == [(10, 2), (10, 1), (2, 1)]
    res = pairwise_wilcoxon(data, order=[1, 2, 10])
    assert list(zip(res["A"], res["B"])) == [(1, 2), (1, 10), (2, 10)]
    res = pairwise_wilcoxon(data, order=[2, 1])
    assert list(zip(res["A"], res["B"])) == [(2, 1)]
    with pytest.raises(ValueError, match=r"order names \[3\]"):
        pairwise_wilcoxon(data, order=[1, 3])
    with pytest.raises(TypeError):
        pairwise_wilcoxon(data, "value", "method", "subject", "two-sided")  # options are keyword-only


def test_paired_wilcoxon_darwin_fisher_and_direction():
    """The simple paired test (data, a, b): Darwin's data, differences a - b."""
    plants = pd.DataFrame({"cross": 100.0 + DARWIN_D, "self": 100.0})
    row = paired_wilcoxon(plants, "cross", "self").iloc[0]
    assert list(row.index) == PAIRED_COLUMNS
    assert (row["A"], row["B"], row["n"], row["n_nonzero"]) == ("cross", "self", 15, 15)
    assert (row["T_plus"], row["T_minus"]) == (96.0, 24.0) and row["test_method"] == "exact"
    assert row["p"] == pytest.approx(169 / 4096, abs=1e-9)
    assert row["median_diff"] == pytest.approx(24.0)
    # a - b: swapping the columns swaps the sums and the one-sided alternative
    back = paired_wilcoxon(plants, "self", "cross", alternative="less").iloc[0]
    assert (back["T_plus"], back["T_minus"]) == (24.0, 96.0)
    assert back["p"] == pytest.approx(169 / 8192, abs=1e-9)
    # the same numbers as the pairwise table of the same data
    long = _long({"cross": 100.0 + DARWIN_D, "self": np.full(15, 100.0)})
    pair = pairwise_wilcoxon(long).iloc[0]
    assert pair[PAIRED_COLUMNS].tolist() == row[PAIRED_COLUMNS].tolist()


def test_paired_wilcoxon_guards():
    plants = pd.DataFrame({"cross": 100.0 + DARWIN_D, "self": 100.0})
    with pytest.raises(KeyError, match="selfed"):
        paired_wilcoxon(plants, "cross", "selfed")
    with pytest.raises(ValueError, match="same column"):
        paired_wilcoxon(plants, "cross", "cross")
    with pytest.raises(ValueError, match="method must be"):
        paired_wilcoxon(plants, "cross", "self", method="approx")
    missing = plants.copy()
    missing["self"] = [np.nan] * 14 + [100.0]
    row = paired_wilcoxon(missing, "cross", "self", min_pairs=2).iloc[0]
    assert row["n"] == 1 and np.isnan(row["p"])


def test_bh_published_example():
    adj = p_adjust(BH_PVALUES)
    assert int((adj <= 0.05).sum()) == 4
    assert bool(adj[3] <= 0.05) and not bool(adj[4] <= 0.05)
    # p_(4) * m / 4 = 0.0095 * 15 / 4.
    assert adj[3] == pytest.approx(0.0095 * 15 / 4)
    assert np.all(np.diff(adj) >= 0)  # monotone for sorted input
    # NaN stays NaN and does not count in m.
    adj_nan = p_adjust([0.01, np.nan, 0.04])
    assert np.isnan(adj_nan[1])
    np.testing.assert_allclose(adj_nan[[0, 2]], [0.02, 0.04])


def test_pairwise_three_methods_pairs_and_missing():
    rng = np.random.default_rng(0)
    a = rng.normal(0.85, 0.03, 12)
    b = a - 0.05 + rng.normal(0, 0.01, 12)
    c = a.copy()
    data = _long({"a": a, "b": b, "c": c})
    # Subject 0 lacks method b: it drops out of the pairs involving b only.
    data = data.drop(data.index[(data["method"] == "b") & (data["subject"] == 0)])
    res = pairwise_wilcoxon(data).set_index(["A", "B"])
    assert list(res.index) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert res.loc[("a", "b"), "n"] == 11 and res.loc[("a", "c"), "n"] == 12
    # a == c for every subject: no test possible, NaN rather than an error.
    assert np.isnan(res.loc[("a", "c"), "p"]) and np.isnan(res.loc[("a", "c"), "p_fdr"])
    assert res.loc[("a", "b"), "p"] < 0.01
    np.testing.assert_allclose(
        res["p_fdr"].dropna(), p_adjust(res["p"].dropna().to_numpy())
    )


def test_pairwise_rejects_duplicates_and_missing_columns():
    data = _long({"a": np.arange(3.0), "b": np.arange(3.0)})
    with pytest.raises(ValueError, match=r"more than one row per subject x method: \(subject=0, method='a'\)"):
        pairwise_wilcoxon(pd.concat([data, data]))
    with pytest.raises(KeyError):
        pairwise_wilcoxon(data.rename(columns={"value": "dice"}))
    assert pairwise_wilcoxon(data[data["method"] == "a"]).empty


def test_pairwise_min_pairs_skips_small_pairs():
    data = _long({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.0, np.nan, np.nan])})
    assert pairwise_wilcoxon(data).loc[0, "n"] == 1
    res = pairwise_wilcoxon(data, min_pairs=2).iloc[0]
    assert res["n"] == 1 and res["median_diff"] == 1.0
    assert np.isnan(res["T_plus"]) and np.isnan(res["p"]) and np.isnan(res["p_fdr"])
