r"""Multiple-comparison adjustment of p-values.

For the Benjamini-Hochberg false discovery rate (``method="fdr_bh"``) and
ordered p-values :math:`p_{(1)} \le \dots \le p_{(m)}`,

.. math:: \tilde p_{(i)} = \min_{j \ge i} \min\left(1, \frac{m\, p_{(j)}}{j}\right)

and a hypothesis is rejected at FDR level ``q`` when its adjusted p-value is
at most ``q``. Bonferroni (``method="bonferroni"``) is :math:`\min(1, m p_i)`.

References
----------
Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a
practical and powerful approach to multiple testing. J R Stat Soc B
57(1):289-300.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["p_adjust"]


def p_adjust(pvalues: Sequence[float] | np.ndarray | pd.Series, method: str = "fdr_bh") -> np.ndarray:
    """Adjust p-values for multiple comparisons, leaving missing ones missing.

    Parameters
    ----------
    pvalues
        Unadjusted p-values; NaN entries are left NaN and do not count in the
        family size ``m``.
    method
        Any :func:`statsmodels.stats.multitest.multipletests` method:
        ``"fdr_bh"`` (Benjamini & Hochberg 1995) or ``"bonferroni"``.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, same length and order.

    Examples
    --------
    >>> p_adjust([0.01, float("nan"), 0.04]).tolist()
    [0.02, nan, 0.04]
    >>> p_adjust([0.01, 0.04], "bonferroni").tolist()
    [0.02, 0.08]
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out
