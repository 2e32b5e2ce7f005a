"""Pairwise paired comparisons between methods: Wilcoxon signed-rank with BH correction."""

from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats.multiplicity import p_adjust

logger = logging.getLogger(__name__)

__all__ = ["pairwise_wilcoxon"]


def pairwise_wilcoxon(
    data: pd.DataFrame,
    dv: str = "value",
    within: str = "method",
    subject: str = "subject",
    alternative: str = "two-sided",
    min_pairs: int = 1,
) -> pd.DataFrame:
    r"""Two-sided Wilcoxon signed-rank tests between every pair of methods, BH adjusted.

    For methods A and B, the subjects with a value for both are paired and
    the differences :math:`d_i = A_i - B_i` are tested for a median of zero
    with :func:`scipy.stats.wilcoxon` (zero differences dropped, Wilcoxon's
    convention; exact null distribution for small samples without ties,
    normal approximation otherwise). For the two-sided test the statistic
    ``W`` is the smaller of the signed-rank sums :math:`W^+` and :math:`W^-`
    (scipy's convention; :math:`W^+` for one-sided tests). The p-values of all
    pairs in the table form one family for the Benjamini-Hochberg adjustment
    (:func:`thalamus_bidsapp.stats.multiplicity.p_adjust`); untested pairs
    (NaN p-value) are not counted in the family.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table: one row per subject and method.
    dv : str
        Column with the numeric outcome (e.g. Dice).
    within : str
        Column naming the method (the repeated factor).
    subject : str
        Column identifying the paired unit (subject or session).
    alternative : {"two-sided", "less", "greater"}
        Alternative hypothesis, as in :func:`scipy.stats.wilcoxon`.
    min_pairs : int
        Fewest paired subjects for which a pair is tested; pairs with fewer
        get NaN statistics (``W``, ``p_unc``) but keep their medians.

    Returns
    -------
    pandas.DataFrame
        One row per method pair (``A`` < ``B`` in sorted order): ``A``, ``B``,
        ``n`` (paired subjects), ``median_A``, ``median_B``, ``median_diff``
        (median of A - B), ``W``, ``p_unc``, ``p_fdr_bh``. Pairs with no
        non-zero difference, or fewer than ``min_pairs`` paired subjects,
        get NaN statistics.

    References
    ----------
    Wilcoxon F (1945). Individual comparisons by ranking methods. Biometrics
    Bulletin 1(6):80-83.

    Benjamini Y, Hochberg Y (1995). J R Stat Soc B 57(1):289-300.
    """
    missing = {dv, within, subject} - set(data.columns)
    if missing:
        raise KeyError(f"pairwise_wilcoxon: missing column(s) {sorted(missing)}")
    if data.duplicated([subject, within]).any():
        raise ValueError("pairwise_wilcoxon: more than one value per subject and method")
    wide = data.pivot(index=subject, columns=within, values=dv)
    methods = sorted(wide.columns.astype(str)) if len(wide.columns) else []
    wide.columns = wide.columns.astype(str)
    rows = []
    for a, b in itertools.combinations(methods, 2):
        pair = wide[[a, b]].dropna()
        d = (pair[a] - pair[b]).to_numpy(dtype=float)
        row = {
            "A": a,
            "B": b,
            "n": int(len(pair)),
            "median_A": float(pair[a].median()) if len(pair) else np.nan,
            "median_B": float(pair[b].median()) if len(pair) else np.nan,
            "median_diff": float(np.median(d)) if d.size else np.nan,
            "W": np.nan,
            "p_unc": np.nan,
        }
        if np.count_nonzero(d) == 0:
            logger.warning("pairwise_wilcoxon: %s vs %s has no non-zero paired difference; test skipped", a, b)
        elif len(pair) < min_pairs:
            logger.warning("pairwise_wilcoxon: %s vs %s has %d paired subject(s), fewer than %d; test skipped",
                           a, b, len(pair), min_pairs)
        else:
            with warnings.catch_warnings():
                # scipy warns about the normal approximation for small n: expected here.
                warnings.simplefilter("ignore", UserWarning)
                res = stats.wilcoxon(pair[a].to_numpy(float), pair[b].to_numpy(float), alternative=alternative)
            row["W"] = float(res.statistic)
            row["p_unc"] = float(res.pvalue)
        rows.append(row)
    cols = ["A", "B", "n", "median_A", "median_B", "median_diff", "W", "p_unc", "p_fdr_bh"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows)
    out["p_fdr_bh"] = p_adjust(out["p_unc"].to_numpy(), "fdr_bh")
    return out[cols]
