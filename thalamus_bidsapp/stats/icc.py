"""Intraclass correlation: the six Shrout & Fleiss (1979) forms with confidence intervals (pingouin).

Re-exported by :mod:`thalamus_bidsapp.stats.agreement`, where the volumetric
agreement uses ICC(3,1) and ICC(2,1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from thalamus_bidsapp.stats._frame import check_columns, check_unique, too_few

logger = logging.getLogger(__name__)

__all__ = ["ICC_COLUMNS", "ICC_FORMS", "icc"]


#: The six Shrout & Fleiss (1979) forms: our name, McGraw & Wong's (1996)
#: name (pingouin >= 0.7 ``Type``), model, and what is agreed on.
ICC_FORMS: tuple[tuple[str, str, str], ...] = (
    ("ICC1", "ICC(1,1)", "one-way random effects, single rater, absolute agreement"),
    ("ICC2", "ICC(A,1)", "two-way random effects, single rater, absolute agreement"),
    ("ICC3", "ICC(C,1)", "two-way mixed effects, single rater, consistency"),
    ("ICC1k", "ICC(1,k)", "one-way random effects, mean of k raters, absolute agreement"),
    ("ICC2k", "ICC(A,k)", "two-way random effects, mean of k raters, absolute agreement"),
    ("ICC3k", "ICC(C,k)", "two-way mixed effects, mean of k raters, consistency"),
)

#: Columns of the :func:`icc` table, in order.
ICC_COLUMNS = ["type", "mcgraw_wong", "description", "n", "k", "icc", "F", "df1", "df2", "p", "ci_low", "ci_high"]


@contextlib.contextmanager
def _pingouin_unrounded() -> Iterator[None]:
    """Switch off pingouin's default 2-decimal rounding of ``CI95`` while inside."""
    import pingouin as pg

    key = "round.column.CI95"
    had = key in pg.options
    old = pg.options.get(key)
    pg.options[key] = None
    try:
        yield
    finally:
        if had:
            pg.options[key] = old
        else:
            pg.options.pop(key, None)


def _icc_table(n: int, k: int) -> pd.DataFrame:
    """The six ICC rows with every statistic missing."""
    rows = [{"type": t, "mcgraw_wong": mw, "description": d, "n": n, "k": k} for t, mw, d in ICC_FORMS]
    table = pd.DataFrame(rows)
    for column in ICC_COLUMNS[5:]:
        table[column] = np.nan
    return table[ICC_COLUMNS]


def icc(data: pd.DataFrame, targets: str, raters: str, ratings: str, *, alpha: float = 0.05) -> pd.DataFrame:
    r"""The six Shrout-Fleiss intraclass correlations, each with F test and confidence interval.

    From the mean squares of the two-way ANOVA of ``n`` targets by ``k``
    raters (:math:`MS_R` targets, :math:`MS_C` raters, :math:`MS_E` residual,
    :math:`MS_W` within targets):

    .. math::

        \mathrm{ICC1} = \frac{MS_R - MS_W}{MS_R + (k-1)MS_W}, \quad
        \mathrm{ICC2} = \frac{MS_R - MS_E}{MS_R + (k-1)MS_E + k(MS_C - MS_E)/n}, \quad
        \mathrm{ICC3} = \frac{MS_R - MS_E}{MS_R + (k-1)MS_E}

    and the ``k`` forms (reliability of the mean of ``k`` raters) by the
    Spearman-Brown formula. ICC2 (absolute agreement) penalises a systematic
    difference between raters, ICC3 (consistency) does not. Computed with
    :func:`pingouin.intraclass_corr` (F tests with their degrees of freedom
    and p-values, F-based confidence intervals of Shrout & Fleiss 1979 and
    McGraw & Wong 1996), the intervals unrounded.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table, one row per target and rater.
    targets, raters, ratings : str
        Column names: subject identifier, rater (e.g. ``"manual"`` /
        ``"freesurfer"``), and the numeric rating (e.g. volume in mL).
    alpha : float
        For the (1 - alpha) confidence intervals; pingouin computes 95%
        intervals only, so any other value raises ``ValueError``.

    Returns
    -------
    pandas.DataFrame
        Six rows in pingouin's layout, one per form: ``type`` (ICC1, ICC2,
        ICC3, ICC1k, ICC2k, ICC3k), ``mcgraw_wong`` (McGraw & Wong's name,
        e.g. ``ICC(A,1)``), ``description``, ``n`` (targets), ``k`` (raters),
        ``icc``, ``F``, ``df1``, ``df2``, ``p``, ``ci_low``, ``ci_high``.
        Targets with a missing rating are dropped; with fewer than
        :data:`~thalamus_bidsapp.stats.MIN_N` targets, fewer than two raters or constant ratings the statistics are NaN.

    Raises
    ------
    ValueError
        When a target has more than one rating from the same rater (the
        duplicates are named): average them first if that is what you mean.

    Examples
    --------
    Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.

    >>> ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    >>> long = pd.DataFrame([(t, j, r) for t, row in enumerate(ratings) for j, r in enumerate(row)],
    ...                     columns=["target", "judge", "rating"])
    >>> table = icc(long, "target", "judge", "rating").set_index("type")
    >>> table["icc"].round(2).tolist()
    [0.17, 0.29, 0.71, 0.44, 0.62, 0.91]

    References
    ----------
    Shrout PE, Fleiss JL (1979). Intraclass correlations: uses in assessing
    rater reliability. Psychol Bull 86(2):420-428. doi:10.1037/0033-2909.86.2.420

    McGraw KO, Wong SP (1996). Forming inferences about some intraclass
    correlation coefficients. Psychol Methods 1(1):30-46.

    Koo TK, Li MY (2016). A guideline of selecting and reporting intraclass
    correlation coefficients for reliability research. J Chiropr Med 15(2):155-163.
    """
    import pingouin as pg

    if not np.isclose(alpha, 0.05):
        raise ValueError(f"icc: only 95% confidence intervals (alpha 0.05) are available (pingouin), not alpha {alpha}")
    check_columns(data, [targets, raters, ratings], "icc")
    check_unique(data, [targets, raters], "icc")
    values = data.assign(**{ratings: pd.to_numeric(data[ratings], errors="coerce")})
    wide = values.pivot(index=targets, columns=raters, values=ratings).dropna()
    n, k = int(wide.shape[0]), int(wide.shape[1])
    table = _icc_table(n, k)
    if too_few(n, "icc", logger) or k < 2:
        return table
    if np.allclose(wide.to_numpy().std(axis=0), 0):
        logger.warning("icc: constant ratings; ICC undefined")
        return table
    long = wide.reset_index().melt(id_vars=targets, value_name=ratings)
    with _pingouin_unrounded(), np.errstate(divide="ignore", invalid="ignore"):
        res = pg.intraclass_corr(data=long, targets=targets, raters=raters, ratings=ratings)
    by_type = res.set_index("Type")
    for i, (name, mcgraw_wong, _) in enumerate(ICC_FORMS):
        rec = by_type.loc[mcgraw_wong] if mcgraw_wong in by_type.index else by_type.loc[name]  # pingouin < 0.7
        ci = np.asarray(rec["CI95"], dtype=float)
        table.loc[i, ["icc", "F", "df1", "df2", "p", "ci_low", "ci_high"]] = [
            float(rec["ICC"]), float(rec["F"]), float(rec["df1"]), float(rec["df2"]), float(rec["pval"]),
            float(ci[0]), float(ci[1]),
        ]
    return table
