"""Sample size per arm to detect a difference in annual thalamic atrophy, per method.

A trial comparing two arms on annualised % thalamic volume change needs,
per arm, ``n = 2 (t_{1-alpha/2, df} + t_{power, df})^2 sigma^2 / delta^2`` subjects
with ``df = 2 (n - 1)`` (the two-sample t approximation, solved by fixed-point
iteration from the normal approximation), where ``sigma`` is the SD of the
annualised % change a segmentation method measures and ``delta`` the
difference in annual atrophy to detect. A method with less measurement noise
has a smaller ``sigma`` and so needs fewer subjects. The exact answer from
the noncentral t distribution (:class:`statsmodels.stats.power.TTestIndPower`)
is reported beside it as a cross-check.

References
----------
- Cohen, J. (1988). Statistical Power Analysis for the Behavioral Sciences,
  2nd ed., Table 2.4.1 (n per group for d = 0.2, 0.5, 0.8 at power 0.80,
  two-sided alpha 0.05: 393, 64, 26).
- Chow, S.-C., Shao, J., & Wang, H. (2008). Sample Size Calculations in
  Clinical Research, 2nd ed., section 3.2.
- Altmann, D. R., et al. (2009). Sample sizes for brain atrophy outcomes in
  trials for secondary progressive multiple sclerosis. Neurology, 72(7), 595-601.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from thalamus_bidsapp.stats._frame import MIN_N

LOGGER = logging.getLogger(__name__)

__all__ = ["MIN_N", "POWER_COLUMNS", "n_per_arm_exact", "n_per_arm_normal", "n_per_arm_t", "sample_size_table"]


def n_per_arm_normal(sd: float, difference: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """Subjects per arm from the normal approximation, ``2 (z_{1-a/2} + z_power)^2 (sd/difference)^2``.

    Examples
    --------
    >>> round(n_per_arm_normal(1.0, 0.5), 1)  # about one subject fewer than the t approximation
    62.8
    """
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(2.0 * z**2 * (sd / difference) ** 2)


def n_per_arm_t(sd: float, difference: float, power: float = 0.8, alpha: float = 0.05, *, max_iter: int = 100) -> float:
    """Subjects per arm from the two-sample t approximation (two-sided test, equal arms).

    Parameters
    ----------
    sd
        Common SD of the outcome (e.g. annualised % thalamic change).
    difference
        Difference in means to detect, same units as ``sd``.
    power, alpha
        Target power and two-sided significance level.

    Returns
    -------
    float
        Real-valued n; round up for a design. NaN when ``sd`` or ``difference`` is not positive and finite.

    Examples
    --------
    >>> math.ceil(n_per_arm_t(1.0, 0.5))  # Cohen (1988) Table 2.4.1: d = 0.5 -> 64
    64
    """
    if not (np.isfinite(sd) and np.isfinite(difference) and sd > 0 and difference != 0):
        return float("nan")
    ratio2 = (sd / abs(difference)) ** 2
    n = max(n_per_arm_normal(sd, abs(difference), power, alpha), 2.0)
    for _ in range(max_iter):
        df = 2.0 * (n - 1.0)
        t = stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)
        new = max(2.0 * t**2 * ratio2, 2.0)
        if abs(new - n) < 1e-8:
            return float(new)
        n = new
    return float(n)


def n_per_arm_exact(sd: float, difference: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """Subjects per arm from the noncentral t distribution (statsmodels ``TTestIndPower``).

    Examples
    --------
    >>> math.ceil(n_per_arm_exact(1.0, 0.8))  # Cohen (1988) Table 2.4.1: d = 0.8 -> 26
    26
    """
    if not (np.isfinite(sd) and np.isfinite(difference) and sd > 0 and difference != 0):
        return float("nan")
    try:
        return float(
            TTestIndPower().solve_power(effect_size=abs(difference) / sd, alpha=alpha, power=power, ratio=1.0,
                                        alternative="two-sided")
        )
    except (ValueError, RuntimeError) as exc:  # root finding can fail for absurd effect sizes
        LOGGER.warning("TTestIndPower could not solve for n (d = %.3g): %s", abs(difference) / sd, exc)
        return float("nan")


#: Columns of the :func:`sample_size_table` table, in order.
POWER_COLUMNS = [
    "method", "contrast", "n_subjects", "mean_annual_pct", "sd_annual_pct", "difference_pct_per_year",
    "effect_size_d", "power", "alpha", "n_per_arm", "n_per_arm_exact", "n_per_arm_normal", "note",
]


def sample_size_table(
    changes: pd.DataFrame,
    value: str = "annual_pct_change",
    by: Sequence[str] = ("method", "contrast"),
    *,
    difference: float = 0.3,
    power: float = 0.8,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Subjects per arm needed with each method's measured SD of annualised % change.

    Parameters
    ----------
    changes
        One row per subject and method with ``value`` (annualised % thalamic change).
    by
        The method key columns.
    difference
        Difference in annual % atrophy between arms to detect (e.g. 0.3 %/year).
    power, alpha
        Target power and two-sided alpha.

    Returns
    -------
    pandas.DataFrame
        method, contrast, n_subjects, mean_annual_pct, sd_annual_pct,
        difference_pct_per_year, effect_size_d, power, alpha, n_per_arm
        (two-sample t approximation, rounded up), n_per_arm_exact (noncentral
        t, rounded up), n_per_arm_normal (rounded up), note.

    Examples
    --------
    >>> changes = pd.DataFrame({"method": ["a"] * 4, "contrast": "T1w", "annual_pct_change": [-1.0, 0.0, -2.0, -1.0]})
    >>> row = sample_size_table(changes, difference=0.3).iloc[0]
    >>> round(float(row["sd_annual_pct"]), 3), int(row["n_per_arm"])
    (0.816, 118)
    """
    rows = []
    for key, group in changes.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        v = pd.to_numeric(group[value], errors="coerce")
        v = v[np.isfinite(v)]
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row = dict(zip(by, key))
        row.update(
            n_subjects=len(v), mean_annual_pct=float(v.mean()) if len(v) else np.nan, sd_annual_pct=sd,
            difference_pct_per_year=difference, effect_size_d=difference / sd if sd > 0 else np.nan,
            power=power, alpha=alpha, note="",
        )
        if len(v) < MIN_N or not sd > 0:
            row.update(n_per_arm=np.nan, n_per_arm_exact=np.nan, n_per_arm_normal=np.nan,
                       note=f"fewer than {MIN_N} subjects with an annualised change")
        else:
            row.update(
                n_per_arm=_ceil(n_per_arm_t(sd, difference, power, alpha)),
                n_per_arm_exact=_ceil(n_per_arm_exact(sd, difference, power, alpha)),
                n_per_arm_normal=_ceil(n_per_arm_normal(sd, difference, power, alpha)),
            )
        rows.append(row)
    columns = [*by, *[c for c in POWER_COLUMNS if c not in ("method", "contrast")]]
    return pd.DataFrame(rows, columns=columns)


def _ceil(value: float) -> float:
    # a hair below an integer is numerical noise, not a reason for one more subject
    return float(math.ceil(value - 1e-6)) if np.isfinite(value) else float("nan")
