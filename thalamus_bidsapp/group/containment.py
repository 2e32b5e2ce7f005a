"""Directed containment between the methods' masks, accumulated session by session (group agreement)."""

from __future__ import annotations

import numpy as np
import pandas as pd


class ContainmentSums:
    """Running sums of the per-session directed containment of every pair of methods."""

    def __init__(self, methods: list[str], columns: list[str]) -> None:
        self.methods = methods
        self.columns = columns
        self.index = {m: i for i, m in enumerate(methods)}
        n = len(methods)
        self.total = np.zeros((n, n))
        self.total_sq = np.zeros((n, n))
        self.count = np.zeros((n, n), dtype=np.int64)

    def add(self, names: list[str], containment: np.ndarray) -> None:
        idx = np.array([self.index[n] for n in names])
        cont = np.atleast_2d(containment)
        ok = np.isfinite(cont)
        sub = np.ix_(idx, idx)
        self.total[sub] += np.where(ok, cont, 0.0)
        self.total_sq[sub] += np.where(ok, cont**2, 0.0)
        self.count[sub] += ok

    def table(self) -> pd.DataFrame:
        return _containment_table(self.methods, self.total, self.total_sq, self.count, self.columns)


def _containment_table(methods: list[str], c_sum: np.ndarray, c_sumsq: np.ndarray, c_n: np.ndarray,
                       columns: list[str]) -> pd.DataFrame:
    rows = []
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            n = int(c_n[i, j])
            mean = c_sum[i, j] / n if n else np.nan
            var = (c_sumsq[i, j] - n * mean**2) / (n - 1) if n > 1 else np.nan
            rows.append(
                {
                    "method_a": a,
                    "method_b": b,
                    "containment_mean": mean,
                    "containment_sd": float(np.sqrt(max(var, 0.0))) if n > 1 else np.nan,
                    "n_sessions": n,
                }
            )
    return pd.DataFrame(rows, columns=columns)
