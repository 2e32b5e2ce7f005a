"""Shared input checks of the stats functions: columns present, no duplicate keys, level order.

Every public function of :mod:`thalamus_bidsapp.stats` takes a
:class:`pandas.DataFrame` and column names (pingouin's convention); these
helpers give them the same error messages and the same order of group levels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Duplicate keys named in an error message before "and N more".
_SHOWN = 5

#: Fewest complete observations (pairs, subjects, targets) for which a statistic
#: with a spread is computed: a residual SD, Lin's CCC variance and a correlation's
#: t test all have n - 2 degrees of freedom. Below it the functions return NaN.
MIN_N = 3


def too_few(n: int, caller: str, logger: logging.Logger, minimum: int = MIN_N) -> bool:
    """Whether ``n`` complete observations are fewer than ``minimum``; logs a warning naming ``caller`` if so."""
    if n < minimum:
        logger.warning("%s: %d complete observation(s), at least %d needed; returning NaN", caller, n, minimum)
        return True
    return False


def check_columns(data: pd.DataFrame, columns: Sequence[str], caller: str) -> None:
    """Raise ``KeyError`` naming the columns of ``columns`` that ``data`` lacks."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"{caller}: data must be a pandas DataFrame, not {type(data).__name__}")
    missing = [c for c in dict.fromkeys(columns) if c not in data.columns]
    if missing:
        raise KeyError(f"{caller}: missing column(s) {missing}; the table has {list(data.columns)}")


def check_unique(data: pd.DataFrame, keys: Sequence[str], caller: str) -> None:
    """Raise ``ValueError`` naming the key combinations that occur more than once."""
    dup = data.duplicated(list(keys), keep=False)
    if dup.any():
        combos = data.loc[dup, list(keys)].drop_duplicates()
        shown = ", ".join(
            "(" + ", ".join(f"{k}={v!r}" for k, v in zip(keys, row)) + ")"
            for row in combos.head(_SHOWN).itertuples(index=False)
        )
        more = f" and {len(combos) - _SHOWN} more" if len(combos) > _SHOWN else ""
        raise ValueError(
            f"{caller}: more than one row per {' x '.join(keys)}: {shown}{more}; "
            "aggregate them (e.g. average repeated ratings) before calling"
        )


def ordered_levels(values: pd.Series) -> list[object]:
    """Levels of a grouping column in their natural order, missing values left out.

    An ordered or unordered categorical keeps its category order (unused
    categories dropped); numbers, and text that is entirely numbers, sort
    numerically ("2" before "10"); other text sorts alphabetically. The first
    level is the reference level of dummy coding.

    Examples
    --------
    >>> ordered_levels(pd.Series(["10", "2", "1", None]))
    ['1', '2', '10']
    >>> ordered_levels(pd.Series(["b", "a"]))
    ['a', 'b']
    """
    series = pd.Series(values)
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna().unique())
        return [c for c in series.cat.categories if c in present]
    uniq = list(pd.unique(series.dropna()))
    numeric = pd.to_numeric(pd.Series(uniq, dtype=object), errors="coerce")
    if len(uniq) and numeric.notna().all():
        order = np.argsort(numeric.to_numpy(dtype=float), kind="stable")
        return [uniq[i] for i in order]
    return sorted(uniq, key=str)


def as_ordered_categorical(values: pd.Series) -> pd.Series:
    """``values`` as a categorical whose categories follow :func:`ordered_levels`."""
    series = pd.Series(values)
    levels = ordered_levels(series)
    return pd.Series(pd.Categorical(series, categories=levels), index=series.index, name=series.name)
