"""Paired comparisons: the Wilcoxon signed-rank test of two columns, and of every pair of methods with BH.

Differences are always first minus second: ``a - b`` in :func:`paired_wilcoxon`,
``A - B`` in :func:`pairwise_wilcoxon`, where the caller's order of the
methods decides which is first.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from thalamus_bidsapp.stats._frame import check_columns, check_unique
from thalamus_bidsapp.stats.multiplicity import p_adjust

logger = logging.getLogger(__name__)

__all__ = ["EXACT_MAX_N", "PAIRED_COLUMNS", "PAIRWISE_COLUMNS", "PERMUTATION_MAX_N", "paired_wilcoxon",
           "pairwise_wilcoxon"]

#: Columns of the :func:`paired_wilcoxon` row, in order.
PAIRED_COLUMNS = [
    "A", "B", "n", "n_nonzero", "median_A", "median_B", "median_diff", "T_plus", "T_minus", "alternative",
    "test_method", "correction", "p",
]
#: Columns of the :func:`pairwise_wilcoxon` table, in order.
PAIRWISE_COLUMNS = [*PAIRED_COLUMNS, "p_fdr"]
#: Null distributions ``method=`` may ask for.
_METHODS = ("auto", "exact", "normal")

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


def _signed_rank(first: pd.Series, second: pd.Series, names: tuple[object, object], *, alternative: str,
                 min_pairs: int, method: str, correction: bool) -> dict[str, object]:
    """The :data:`PAIRED_COLUMNS` row of the signed-rank test of ``first - second`` on their complete pairs."""
    pair = pd.DataFrame({"a": pd.to_numeric(first, errors="coerce"),
                         "b": pd.to_numeric(second, errors="coerce")}).dropna()
    d = (pair["a"] - pair["b"]).to_numpy(dtype=float)
    nonzero = d[d != 0]
    a, b = names
    row: dict[str, object] = {
        "A": a, "B": b, "n": int(len(pair)), "n_nonzero": int(nonzero.size),
        "median_A": float(pair["a"].median()) if len(pair) else np.nan,
        "median_B": float(pair["b"].median()) if len(pair) else np.nan,
        "median_diff": float(np.median(d)) if d.size else np.nan,
        "T_plus": np.nan, "T_minus": np.nan, "alternative": alternative, "test_method": "", "correction": False,
        "p": np.nan,
    }
    if nonzero.size == 0:
        logger.warning("wilcoxon: %s vs %s has no non-zero paired difference; test skipped", a, b)
        return row
    if len(pair) < min_pairs:
        logger.warning("wilcoxon: %s vs %s has %d paired subject(s), fewer than %d; test skipped",
                       a, b, len(pair), min_pairs)
        return row
    ranks = stats.rankdata(np.abs(nonzero))
    has_ties = len(np.unique(np.abs(nonzero))) < nonzero.size
    used = _resolve_method(method, d.size, has_ties, nonzero.size < d.size)
    scipy_method = {"exact": "exact", "normal": "asymptotic", "permutation": stats.PermutationMethod()}[used]
    with warnings.catch_warnings():
        # scipy warns about exact p-values with ties: the rounding is documented in pairwise_wilcoxon.
        warnings.simplefilter("ignore", UserWarning)
        res = stats.wilcoxon(d, zero_method="wilcox", correction=correction and used == "normal",
                             alternative=alternative, method=scipy_method)
    row.update(T_plus=float(ranks[nonzero > 0].sum()), T_minus=float(ranks[nonzero < 0].sum()),
               test_method=used, correction=bool(correction and used == "normal"), p=float(res.pvalue))
    return row


def _check_method(method: str, caller: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"{caller}: method must be 'auto', 'exact' or 'normal', not {method!r}")


def paired_wilcoxon(
    data: pd.DataFrame,
    a: str,
    b: str,
    *,
    alternative: str = "two-sided",
    min_pairs: int = 1,
    method: str = "auto",
    correction: bool = False,
) -> pd.DataFrame:
    r"""Wilcoxon signed-rank test of two paired columns: differences ``a - b`` (first minus second).

    The rows with both values are paired and :math:`d_i = a_i - b_i` is
    tested for a median of zero, zero differences dropped (Wilcoxon's
    convention), as each pair of :func:`pairwise_wilcoxon`.

    Parameters
    ----------
    data : pandas.DataFrame
        Wide table: one row per subject, the two measurements in columns.
    a, b : str
        The columns; ``a`` is the first, so ``T_plus`` sums the ranks where
        ``a`` is larger and ``alternative="greater"`` means ``a`` tends to be larger.
    alternative, min_pairs, method, correction
        As in :func:`pairwise_wilcoxon`.

    Returns
    -------
    pandas.DataFrame
        One row, columns :data:`PAIRED_COLUMNS`: ``A`` and ``B`` (the column
        names ``a`` and ``b``), then as in :func:`pairwise_wilcoxon` (no ``p_fdr``).

    Examples
    --------
    Darwin's Zea mays, 15 pairs (Fisher 1935, section 17): cross- minus
    self-fertilised heights, T+ = 96, T- = 24, exact two-sided p = 169/4096.

    >>> d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    >>> plants = pd.DataFrame({"cross": [100.0 + x for x in d], "self": 100.0})
    >>> row = paired_wilcoxon(plants, "cross", "self").iloc[0]
    >>> float(row["T_plus"]), float(row["T_minus"]), round(float(row["p"]) * 4096, 6)
    (96.0, 24.0, 169.0)
    """
    _check_method(method, "paired_wilcoxon")
    check_columns(data, [a, b], "paired_wilcoxon")
    if a == b:
        raise ValueError(f"paired_wilcoxon: a and b are the same column {a!r}")
    row = _signed_rank(data[a], data[b], (a, b), alternative=alternative, min_pairs=min_pairs, method=method,
                       correction=correction)
    return pd.DataFrame([row], columns=PAIRED_COLUMNS)


def pairwise_wilcoxon(
    data: pd.DataFrame,
    dv: str = "value",
    within: str = "method",
    subject: str = "subject",
    *,
    order: Sequence[object] | None = None,
    alternative: str = "two-sided",
    min_pairs: int = 1,
    method: str = "auto",
    correction: bool = False,
) -> pd.DataFrame:
    r"""Wilcoxon signed-rank tests between every pair of methods, Benjamini-Hochberg adjusted.

    For methods A and B (A before B in ``order``), the subjects with a value
    for both are paired and the differences :math:`d_i = A_i - B_i` are
    tested for a median of zero with :func:`scipy.stats.wilcoxon`, zero
    differences dropped (Wilcoxon's convention). Both signed-rank sums are
    reported: :math:`T^+` (sum of the ranks of :math:`|d_i|` with
    :math:`d_i > 0`) and :math:`T^-`; they add up to :math:`n'(n'+1)/2` with
    :math:`n'` the non-zero differences. The p-values of all pairs in the
    table form one family for the Benjamini-Hochberg adjustment
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
    order : sequence, optional
        The methods in the caller's order: pairs are ``(order[i], order[j])``
        with ``i < j`` and their differences first minus second. Methods not
        listed are left out; a listed method absent from ``data`` raises.
        Default: the category order of a categorical ``within``, else the
        order in which the methods first appear in ``data`` (never sorted).
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
        One row per method pair, columns :data:`PAIRWISE_COLUMNS`: ``A``,
        ``B``, ``n`` (paired subjects), ``n_nonzero`` (non-zero differences),
        ``median_A``, ``median_B``, ``median_diff`` (median of A - B),
        ``T_plus``, ``T_minus``, ``alternative``, ``test_method`` (``exact``,
        ``permutation`` or ``normal``: what was actually used),
        ``correction`` (whether a continuity correction was applied), ``p``,
        ``p_fdr`` (BH). Pairs with no non-zero difference, or fewer than
        ``min_pairs`` paired subjects, get NaN statistics.

    Raises
    ------
    KeyError
        A column is missing.
    ValueError
        A subject has more than one value for one method (the duplicates are
        named), ``order`` names a method that is not in ``data``, or
        ``method`` is unknown.

    Examples
    --------
    >>> df = pd.DataFrame({"subject": [1, 2, 3, 4, 5, 6] * 2, "method": ["b"] * 6 + ["a"] * 6,
    ...                    "value": [0.81, 0.84, 0.79, 0.88, 0.86, 0.80, 0.78, 0.80, 0.80, 0.83, 0.84, 0.74]})
    >>> row = pairwise_wilcoxon(df).iloc[0]
    >>> row["A"], row["B"], float(row["T_plus"]), float(row["T_minus"]), row["test_method"], float(row["p"])
    ('b', 'a', 20.0, 1.0, 'exact', 0.0625)
    >>> row = pairwise_wilcoxon(df, order=["a", "b"]).iloc[0]
    >>> row["A"], row["B"], float(row["T_plus"]), float(row["T_minus"])
    ('a', 'b', 1.0, 20.0)

    References
    ----------
    Wilcoxon F (1945). Individual comparisons by ranking methods. Biometrics
    Bulletin 1(6):80-83.

    Benjamini Y, Hochberg Y (1995). J R Stat Soc B 57(1):289-300.
    """
    _check_method(method, "pairwise_wilcoxon")
    check_columns(data, [dv, within, subject], "pairwise_wilcoxon")
    check_unique(data, [subject, within], "pairwise_wilcoxon")
    methods = _method_order(data[within], order)
    wide = data.pivot(index=subject, columns=within, values=dv)
    rows = [_signed_rank(wide[a], wide[b], (a, b), alternative=alternative, min_pairs=min_pairs, method=method,
                         correction=correction)
            for a, b in itertools.combinations(methods, 2)]
    if not rows:
        return pd.DataFrame(columns=PAIRWISE_COLUMNS)
    out = pd.DataFrame(rows)
    out["p_fdr"] = p_adjust(out["p"].to_numpy(), "fdr_bh")
    return out[PAIRWISE_COLUMNS]


def _method_order(values: pd.Series, order: Sequence[object] | None) -> list[object]:
    """The methods to pair, in the caller's ``order``, category order, or order of first appearance."""
    present = list(pd.unique(values.dropna()))
    if order is None:
        if isinstance(values.dtype, pd.CategoricalDtype):
            return [c for c in values.cat.categories if c in set(present)]
        return present
    missing = [m for m in order if m not in set(present)]
    if missing:
        raise ValueError(f"pairwise_wilcoxon: order names {missing}, not in the {values.name!r} column")
    return list(dict.fromkeys(order))
