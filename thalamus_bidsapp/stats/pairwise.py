"""Pairwise paired comparisons between methods: Wilcoxon signed-rank with BH correction."""

from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import check_columns, check_unique, ordered_levels
from thalamus_bidsapp.stats.multiplicity import p_adjust

logger = logging.getLogger(__name__)

__all__ = ["pairwise_wilcoxon"]

PAIRWISE_COLUMNS = [
    "A", "B", "n", "n_nonzero", "median_A", "median_B", "median_diff", "T_plus", "T_minus", "alternative",
    "test_method", "correction", "p", "p_fdr",
]

#: Largest number of pairs for which ``method="auto"`` uses the exact null distribution (scipy's rule).
EXACT_MAX_N = 50
#: Largest number of pairs for which ties are handled by enumerating all 2**n sign flips.
PERMUTATION_MAX_N = 13


def _resolve_method(method: str, n: int, has_ties: bool, has_zeros: bool) -> str:
    """The null distribution actually used: ``exact``, ``permutation`` or ``normal``.

    ``auto`` follows :func:`scipy.stats.wilcoxon`: exact for at most 50
    pairs without ties or zero differences; with ties or zeros, all 2**n sign
    flips for at most 13 pairs; the normal approximation otherwise.
    """
    if method == "exact":
        return "exact"
    if method == "normal":
        return "normal"
    if n > EXACT_MAX_N:
        return "normal"
    if not (has_ties or has_zeros):
        return "exact"
    return "permutation" if n <= PERMUTATION_MAX_N else "normal"


def pairwise_wilcoxon(
    data: pd.DataFrame,
    dv: str = "value",
    within: str = "method",
    subject: str = "subject",
    alternative: str = "two-sided",
    min_pairs: int = 1,
    method: str = "auto",
    correction: bool = False,
) -> pd.DataFrame:
    r"""Wilcoxon signed-rank tests between every pair of methods, Benjamini-Hochberg adjusted.

    For methods A and B, the subjects with a value for both are paired and
    the differences :math:`d_i = A_i - B_i` are tested for a median of zero
    with :func:`scipy.stats.wilcoxon`, zero differences dropped (Wilcoxon's
    convention). Both signed-rank sums are reported: :math:`T^+` (sum of the
    ranks of :math:`|d_i|` with :math:`d_i > 0`) and :math:`T^-`; they add up
    to :math:`n'(n'+1)/2` with :math:`n'` the non-zero differences. The
    p-values of all pairs in the table form one family for the
    Benjamini-Hochberg adjustment
    (:func:`thalamus_bidsapp.stats.multiplicity.p_adjust`); untested pairs
    (NaN p-value) are not counted in the family.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table: one row per subject and method.
    dv : str
        Column with the numeric outcome (e.g. Dice).
    within : str
        Column naming the method (the repeated factor). Methods are paired in
        their natural order (categorical order, numbers numerically, else
        alphabetically), so ``A`` precedes ``B`` in that order.
    subject : str
        Column identifying the paired unit (subject or session).
    alternative : {"two-sided", "less", "greater"}
        Alternative hypothesis about A - B, as in :func:`scipy.stats.wilcoxon`.
    min_pairs : int
        Fewest paired subjects for which a pair is tested; pairs with fewer
        get NaN statistics but keep their medians.
    method : {"auto", "exact", "normal"}
        Null distribution. ``"auto"`` (scipy's rule): exact for at most 50
        pairs without ties or zero differences; with ties or zeros, every
        sign flip enumerated (``"permutation"``) for at most 13 pairs; the
        normal approximation otherwise. ``"exact"`` forces the exact
        distribution (conservative with ties: non-integer statistics are
        rounded towards the null), ``"normal"`` the normal approximation
        (with the tie and zero corrections of the variance).
    correction : bool
        Continuity correction (0.5 towards the null) of the normal
        approximation; ignored by the exact and permutation tests.

    Returns
    -------
    pandas.DataFrame
        One row per method pair: ``A``, ``B``, ``n`` (paired subjects),
        ``n_nonzero`` (non-zero differences), ``median_A``, ``median_B``,
        ``median_diff`` (median of A - B), ``T_plus``, ``T_minus``,
        ``alternative``, ``test_method`` (``exact``, ``permutation`` or
        ``normal``: what was actually used), ``correction`` (whether a
        continuity correction was applied), ``p``, ``p_fdr`` (BH). Pairs with
        no non-zero difference, or fewer than ``min_pairs`` paired subjects,
        get NaN statistics.

    Raises
    ------
    KeyError
        A column is missing.
    ValueError
        A subject has more than one value for one method (the duplicates are
        named), or ``method`` is unknown.

    Examples
    --------
    >>> df = pd.DataFrame({"subject": [1, 2, 3, 4, 5, 6] * 2, "method": ["a"] * 6 + ["b"] * 6,
    ...                    "value": [0.81, 0.84, 0.79, 0.88, 0.86, 0.80, 0.78, 0.80, 0.80, 0.83, 0.84, 0.74]})
    >>> row = pairwise_wilcoxon(df).iloc[0]
    >>> row["A"], row["B"], float(row["T_plus"]), float(row["T_minus"]), row["test_method"], float(row["p"])
    ('a', 'b', 20.0, 1.0, 'exact', 0.0625)

    References
    ----------
    Wilcoxon F (1945). Individual comparisons by ranking methods. Biometrics
    Bulletin 1(6):80-83.

    Benjamini Y, Hochberg Y (1995). J R Stat Soc B 57(1):289-300.
    """
    if method not in ("auto", "exact", "normal"):
        raise ValueError(f"pairwise_wilcoxon: method must be 'auto', 'exact' or 'normal', not {method!r}")
    check_columns(data, [dv, within, subject], "pairwise_wilcoxon")
    check_unique(data, [subject, within], "pairwise_wilcoxon")
    methods = ordered_levels(data[within])
    wide = data.pivot(index=subject, columns=within, values=dv)
    rows = []
    for a, b in itertools.combinations(methods, 2):
        pair = wide[[a, b]].apply(pd.to_numeric, errors="coerce").dropna()
        d = (pair[a] - pair[b]).to_numpy(dtype=float)
        nonzero = d[d != 0]
        row = {
            "A": a,
            "B": b,
            "n": int(len(pair)),
            "n_nonzero": int(nonzero.size),
            "median_A": float(pair[a].median()) if len(pair) else np.nan,
            "median_B": float(pair[b].median()) if len(pair) else np.nan,
            "median_diff": float(np.median(d)) if d.size else np.nan,
            "T_plus": np.nan,
            "T_minus": np.nan,
            "alternative": alternative,
            "test_method": "",
            "correction": False,
            "p": np.nan,
        }
        if nonzero.size == 0:
            logger.warning("pairwise_wilcoxon: %s vs %s has no non-zero paired difference; test skipped", a, b)
        elif len(pair) < min_pairs:
            logger.warning("pairwise_wilcoxon: %s vs %s has %d paired subject(s), fewer than %d; test skipped",
                           a, b, len(pair), min_pairs)
        else:
            ranks = stats.rankdata(np.abs(nonzero))
            has_ties = len(np.unique(np.abs(nonzero))) < nonzero.size
            used = _resolve_method(method, d.size, has_ties, nonzero.size < d.size)
            scipy_method = {"exact": "exact", "normal": "asymptotic",
                            "permutation": stats.PermutationMethod()}[used]
            with warnings.catch_warnings():
                # scipy warns about exact p-values with ties: the rounding is documented above.
                warnings.simplefilter("ignore", UserWarning)
                res = stats.wilcoxon(d, zero_method="wilcox", correction=correction and used == "normal",
                                     alternative=alternative, method=scipy_method)
            row.update(T_plus=float(ranks[nonzero > 0].sum()), T_minus=float(ranks[nonzero < 0].sum()),
                       test_method=used, correction=bool(correction and used == "normal"), p=float(res.pvalue))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=PAIRWISE_COLUMNS)
    out = pd.DataFrame(rows)
    out["p_fdr"] = p_adjust(out["p"].to_numpy(), "fdr_bh")
    return out[PAIRWISE_COLUMNS]
