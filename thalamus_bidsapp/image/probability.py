"""Group maps in template space: how often a voxel is thalamus, and where the methods disagree (pure).

Inputs are binary masks already on one template grid (the published
``space-<template>`` masks). :func:`mask_frequency` is the voxel-wise mean of
a set of masks (one method's masks over sessions: the probability map);
:func:`minority_fraction` is, for one session's masks from several methods,
the fraction of methods that disagree with the voxel's majority (0 when all
agree, 0.5 at an even split); its mean over sessions is the disagreement map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    if not masks:
        raise ValueError("no masks given")
    shapes = {tuple(np.shape(m)) for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks on different grids: shapes {sorted(shapes)}")
    return np.stack([np.asarray(m) > 0 for m in masks])


def mask_frequency(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise fraction of ``masks`` (binary, one grid) that contain the voxel, float32 in [0, 1]."""
    return _stack(masks).mean(axis=0, dtype=np.float64).astype(np.float32)


def minority_fraction(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per voxel: min(k, n - k) / n for k of the n masks containing it (float32, 0 to 0.5).

    Raises
    ------
    ValueError
        With fewer than two masks (nothing to disagree with) or masks on different grids.
    """
    stack = _stack(masks)
    if stack.shape[0] < 2:
        raise ValueError("disagreement needs masks from at least two methods")
    inside = stack.sum(axis=0)
    return (np.minimum(inside, stack.shape[0] - inside) / stack.shape[0]).astype(np.float32)


def mean_map(maps: Iterable[np.ndarray]) -> np.ndarray:
    """Voxel-wise mean of float maps on one grid (float32)."""
    maps = list(maps)
    if not maps:
        raise ValueError("no maps given")
    total = np.zeros(np.shape(maps[0]), np.float64)
    for item in maps:
        if np.shape(item) != total.shape:
            raise ValueError(f"maps on different grids: {np.shape(item)} and {total.shape}")
        total += item
    return (total / len(maps)).astype(np.float32)
