"""Pairwise Wilcoxon signed-rank tests and the Benjamini-Hochberg adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.pairwise import pairwise_wilcoxon

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
    assert res["W"] == 24.0
    assert res["p_unc"] == pytest.approx(169 / 4096, abs=1e-9)
    assert res["median_diff"] == pytest.approx(24.0)  # 8th of the 15 sorted differences
    # A single comparison: BH leaves the p-value unchanged.
    assert res["p_fdr_bh"] == pytest.approx(res["p_unc"])


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
    assert np.isnan(res.loc[("a", "c"), "p_unc"]) and np.isnan(res.loc[("a", "c"), "p_fdr_bh"])
    assert res.loc[("a", "b"), "p_unc"] < 0.01
    np.testing.assert_allclose(
        res["p_fdr_bh"].dropna(), p_adjust(res["p_unc"].dropna().to_numpy())
    )


def test_pairwise_rejects_duplicates_and_missing_columns():
    data = _long({"a": np.arange(3.0), "b": np.arange(3.0)})
    with pytest.raises(ValueError, match="more than one"):
        pairwise_wilcoxon(pd.concat([data, data]))
    with pytest.raises(KeyError):
        pairwise_wilcoxon(data.rename(columns={"value": "dice"}))
    assert pairwise_wilcoxon(data[data["method"] == "a"]).empty


def test_pairwise_min_pairs_skips_small_pairs():
    data = _long({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.0, np.nan, np.nan])})
    assert pairwise_wilcoxon(data).loc[0, "n"] == 1
    res = pairwise_wilcoxon(data, min_pairs=2).iloc[0]
    assert res["n"] == 1 and res["median_diff"] == 1.0
    assert np.isnan(res["W"]) and np.isnan(res["p_unc"]) and np.isnan(res["p_fdr_bh"])
