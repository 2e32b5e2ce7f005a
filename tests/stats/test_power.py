"""Sample size per arm for a difference in annual thalamic atrophy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import TTestIndPower

from thalamus_bidsapp.stats import power as pw


@pytest.mark.parametrize(("d", "cohen_n"), [(0.2, 393), (0.5, 64), (0.8, 26)])
def test_cohen_table(d: float, cohen_n: int) -> None:
    # Cohen (1988), Table 2.4.1: n per group for power 0.80 at two-sided alpha 0.05
    n = pw.n_per_arm_t(1.0, d)
    assert abs(math.ceil(n) - cohen_n) <= 1
    # the t approximation agrees with the exact noncentral t solution to a fraction of a subject
    assert n == pytest.approx(pw.n_per_arm_exact(1.0, d), abs=0.05)
    # and the normal approximation is about one subject lower
    assert pw.n_per_arm_normal(1.0, d) == pytest.approx(n - 1.0, abs=0.1)


def test_scales_with_sd_over_difference() -> None:
    # only sd / difference matters: 2 %/year SD and 0.3 %/year difference is d = 0.15
    assert pw.n_per_arm_t(2.0, 0.3) == pytest.approx(pw.n_per_arm_t(1.0, 0.15))
    achieved = TTestIndPower().power(effect_size=0.15, nobs1=math.ceil(pw.n_per_arm_t(1.0, 0.15)), alpha=0.05)
    assert 0.8 <= achieved < 0.801
    assert np.isnan(pw.n_per_arm_t(0.0, 0.3)) and np.isnan(pw.n_per_arm_exact(1.0, 0.0))


def test_sample_size_table_per_method() -> None:
    rng = np.random.default_rng(0)
    changes = pd.DataFrame({
        "method": ["precise"] * 200 + ["noisy"] * 200 + ["tiny"] * 2,
        "contrast": "T1w",
        "annual_pct_change": np.r_[rng.normal(-0.6, 0.5, 200), rng.normal(-0.6, 1.5, 200), [0.1, 0.2]],
    })
    table = pw.sample_size_table(changes, difference=0.3).set_index("method")
    precise, noisy = table.loc["precise"], table.loc["noisy"]
    assert noisy["n_per_arm"] > 5 * precise["n_per_arm"]
    expected = math.ceil(pw.n_per_arm_t(precise["sd_annual_pct"], 0.3))
    assert precise["n_per_arm"] == expected
    assert abs(precise["n_per_arm"] - precise["n_per_arm_exact"]) <= 1
    assert precise["effect_size_d"] == pytest.approx(0.3 / precise["sd_annual_pct"])
    assert np.isnan(table.loc["tiny", "n_per_arm"]) and table.loc["tiny", "note"]
