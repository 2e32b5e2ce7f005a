"""Voxel-wise overlap of two binary masks: Dice, Jaccard, precision, sensitivity, containment.

All metrics are computed from the voxel counts of the confusion table between
a reference mask ``R`` (the manual ground truth) and a predicted mask ``P``
(an automated segmentation)::

    TP = |R and P|      FP = |P and not R|      FN = |R and not P|

The ``*_from_counts`` functions accept scalars or numpy arrays of counts (they
broadcast), so the group workflow can score many mask pairs from one matrix of
pairwise intersections without touching the voxels again.

An empty mask makes every metric undefined: the functions then return NaN and
emit an :class:`EmptyMaskWarning` instead of raising, so one failed
segmentation never stops a group analysis.

References
----------
Dice LR (1945). Measures of the amount of ecologic association between
species. Ecology 26(3):297-302. doi:10.2307/1932409

Taha AA, Hanbury A (2015). Metrics for evaluating 3D medical image
segmentation: analysis, selection, and tool. BMC Med Imaging 15:29.
doi:10.1186/s12880-015-0068-x
"""

from __future__ import annotations

import warnings
from typing import Union

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "EmptyMaskWarning",
    "confusion_counts",
    "containment",
    "containment_from_counts",
    "dice",
    "dice_from_counts",
    "jaccard",
    "jaccard_from_counts",
    "overlap_metrics",
    "precision",
    "precision_from_counts",
    "sensitivity",
    "sensitivity_from_counts",
]

Counts = Union[int, float, npt.ArrayLike]


class EmptyMaskWarning(RuntimeWarning):
    """A mask has no foreground voxel, so an overlap metric is undefined (NaN)."""


def _as_bool(mask: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    # Any non-zero voxel is foreground, whatever the stored dtype (uint8, int32
    # label images binarised upstream, float 0/1).
    return arr != 0


def confusion_counts(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> tuple[int, int, int]:
    """True positive, false positive and false negative voxel counts.

    Parameters
    ----------
    reference : array_like, shape (X, Y, Z) or any shape
        Reference (ground-truth) mask; non-zero voxels are foreground.
    prediction : array_like, same shape as ``reference``
        Predicted mask; non-zero voxels are foreground.

    Returns
    -------
    tp, fp, fn : int
        ``|R and P|``, ``|P and not R|``, ``|R and not P|`` in voxels.

    Raises
    ------
    ValueError
        If the two masks differ in shape.

    Examples
    --------
    >>> confusion_counts([1, 1, 1, 0, 0], [0, 1, 1, 1, 0])
    (2, 1, 1)
    """
    ref = _as_bool(reference)
    pred = _as_bool(prediction)
    if ref.shape != pred.shape:
        raise ValueError(f"mask shapes differ: reference {ref.shape} vs prediction {pred.shape}")
    tp = int(np.count_nonzero(ref & pred))
    n_ref = int(np.count_nonzero(ref))
    n_pred = int(np.count_nonzero(pred))
    return tp, n_pred - tp, n_ref - tp


def _undefined(n_ref: np.ndarray, n_pred: np.ndarray, metric: str) -> np.ndarray:
    empty = (n_ref == 0) | (n_pred == 0)
    if np.any(empty):
        warnings.warn(
            f"{metric}: {int(np.count_nonzero(empty))} mask pair(s) with an empty mask; metric set to NaN",
            EmptyMaskWarning,
            stacklevel=3,
        )
    return empty


def _ratio(num: np.ndarray, den: np.ndarray, undefined: np.ndarray) -> np.ndarray | float:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(undefined | (den == 0), np.nan, num / np.where(den == 0, 1.0, den))
    return float(out) if out.ndim == 0 else out


def dice_from_counts(tp: Counts, fp: Counts, fn: Counts) -> np.ndarray | float:
    r"""Dice similarity coefficient from confusion counts.

    .. math:: \mathrm{DSC} = \frac{2\,TP}{2\,TP + FP + FN}

    Parameters
    ----------
    tp, fp, fn : int or array_like of int
        Confusion counts in voxels (broadcast against each other).

    Returns
    -------
    float or ndarray
        Dice in [0, 1]; NaN (with :class:`EmptyMaskWarning`) where either mask
        is empty (``TP + FN == 0`` or ``TP + FP == 0``).

    Examples
    --------
    >>> dice_from_counts(2, 1, 1)
    0.6666666666666666
    >>> dice_from_counts([2, 4], [1, 0], [1, 0]).tolist()
    [0.6666666666666666, 1.0]

    References
    ----------
    Dice LR (1945). Ecology 26(3):297-302.
    """
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    undefined = _undefined(tp + fn, tp + fp, "dice")
    return _ratio(2 * tp, 2 * tp + fp + fn, undefined)


def jaccard_from_counts(tp: Counts, fp: Counts, fn: Counts) -> np.ndarray | float:
    r"""Jaccard index (intersection over union) from confusion counts.

    .. math:: J = \frac{TP}{TP + FP + FN} = \frac{\mathrm{DSC}}{2 - \mathrm{DSC}}

    Parameters
    ----------
    tp, fp, fn : int or array_like of int
        Confusion counts in voxels (broadcast against each other).

    Returns
    -------
    float or ndarray
        Jaccard in [0, 1]; NaN (with :class:`EmptyMaskWarning`) where either mask is empty.

    Examples
    --------
    >>> jaccard_from_counts(2, 1, 1)
    0.5

    References
    ----------
    Jaccard P (1912). The distribution of the flora in the alpine zone.
    New Phytologist 11(2):37-50.
    """
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    undefined = _undefined(tp + fn, tp + fp, "jaccard")
    return _ratio(tp, tp + fp + fn, undefined)


def precision_from_counts(tp: Counts, fp: Counts, fn: Counts) -> np.ndarray | float:
    r"""Precision (positive predictive value) from confusion counts.

    .. math:: \mathrm{precision} = \frac{TP}{TP + FP}

    ``fn`` is only used to detect an empty reference mask (NaN, as for Dice).

    Examples
    --------
    >>> precision_from_counts(3, 1, 5)
    0.75
    """
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    undefined = _undefined(tp + fn, tp + fp, "precision")
    return _ratio(tp, tp + fp, undefined)


def sensitivity_from_counts(tp: Counts, fp: Counts, fn: Counts) -> np.ndarray | float:
    r"""Sensitivity (recall, true positive rate) from confusion counts.

    .. math:: \mathrm{sensitivity} = \frac{TP}{TP + FN}

    ``fp`` is only used to detect an empty predicted mask (NaN, as for Dice).

    Examples
    --------
    >>> sensitivity_from_counts(3, 1, 1)
    0.75
    """
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    undefined = _undefined(tp + fn, tp + fp, "sensitivity")
    return _ratio(tp, tp + fn, undefined)


def containment_from_counts(intersection: Counts, size_a: Counts, size_b: Counts) -> np.ndarray | float:
    r"""Directed containment coefficient of A in B from voxel counts.

    .. math:: C(A \rightarrow B) = \frac{|A \cap B|}{|A|}

    "How much of A lies inside B". It equals the sensitivity of B with A as
    the reference; it is not symmetric.

    Parameters
    ----------
    intersection : int or array_like
        ``|A and B|`` in voxels.
    size_a, size_b : int or array_like
        ``|A|`` and ``|B|`` in voxels; ``size_b`` only flags an empty B.

    Returns
    -------
    float or ndarray
        Containment in [0, 1]; NaN (with :class:`EmptyMaskWarning`) where A
        or B is empty.

    Examples
    --------
    >>> containment_from_counts(30, 40, 100)  # 30 of A's 40 voxels lie in B
    0.75
    """
    inter, size_a, size_b = (np.asarray(v, dtype=float) for v in (intersection, size_a, size_b))
    undefined = _undefined(size_a, size_b, "containment")
    return _ratio(inter, size_a, undefined)


def dice(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> float:
    """Dice coefficient of two binary masks of the same shape (see :func:`dice_from_counts`).

    Examples
    --------
    >>> dice([1, 1, 1, 0, 0], [0, 1, 1, 1, 0])
    0.6666666666666666
    """
    return float(dice_from_counts(*confusion_counts(reference, prediction)))


def jaccard(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> float:
    """Jaccard index of two binary masks of the same shape (see :func:`jaccard_from_counts`).

    Examples
    --------
    >>> jaccard([1, 1, 1, 0, 0], [0, 1, 1, 1, 0])
    0.5
    """
    return float(jaccard_from_counts(*confusion_counts(reference, prediction)))


def precision(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> float:
    """Precision of ``prediction`` against ``reference`` (see :func:`precision_from_counts`).

    Examples
    --------
    >>> precision([1, 1, 1, 0, 0], [0, 1, 1, 1, 0])
    0.6666666666666666
    """
    return float(precision_from_counts(*confusion_counts(reference, prediction)))


def sensitivity(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> float:
    """Sensitivity of ``prediction`` against ``reference`` (see :func:`sensitivity_from_counts`).

    Examples
    --------
    >>> sensitivity([1, 1, 1, 1, 0], [0, 1, 1, 1, 0])
    0.75
    """
    return float(sensitivity_from_counts(*confusion_counts(reference, prediction)))


def containment(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    r"""Directed containment ``|A and B| / |A|`` of two binary masks of the same shape.

    Parameters
    ----------
    a, b : array_like, shape (X, Y, Z)
        Binary masks (non-zero = foreground).

    Returns
    -------
    float
        Fraction of A's voxels that lie in B, in [0, 1]; NaN with an
        :class:`EmptyMaskWarning` if either mask is empty.

    Examples
    --------
    >>> containment([0, 1, 1, 0], [1, 1, 1, 1])  # A lies wholly inside B
    1.0
    >>> containment([1, 1, 1, 1], [0, 1, 1, 0])
    0.5
    """
    a_b = _as_bool(a)
    b_b = _as_bool(b)
    if a_b.shape != b_b.shape:
        raise ValueError(f"mask shapes differ: {a_b.shape} vs {b_b.shape}")
    inter = np.count_nonzero(a_b & b_b)
    return float(containment_from_counts(inter, np.count_nonzero(a_b), np.count_nonzero(b_b)))


def overlap_metrics(reference: npt.ArrayLike, prediction: npt.ArrayLike) -> pd.DataFrame:
    """All voxel-wise overlap metrics of a predicted mask against a reference.

    Parameters
    ----------
    reference, prediction : array_like, shape (X, Y, Z)
        Binary masks on the same grid.

    Returns
    -------
    pandas.DataFrame
        One row with columns ``tp``, ``fp``, ``fn`` (voxels), ``dice``,
        ``jaccard``, ``precision``, ``sensitivity``,
        ``containment_prediction_in_reference`` (``|P and R| / |P|``, equal
        to precision) and ``containment_reference_in_prediction``
        (``|R and P| / |R|``, equal to sensitivity); unitless, NaN if a mask
        is empty. The two directed containments are the containment
        coefficient (:func:`containment`) of this pair of masks, so that one
        table holds every overlap measure.

    Examples
    --------
    >>> row = overlap_metrics([1, 1, 1, 0, 0], [0, 1, 1, 1, 0]).iloc[0]
    >>> float(row["dice"]), float(row["jaccard"]), float(row["containment_prediction_in_reference"])
    (0.6666666666666666, 0.5, 0.6666666666666666)
    """
    tp, fp, fn = confusion_counts(reference, prediction)
    with warnings.catch_warnings():
        # One warning for the row, not one per metric.
        warnings.simplefilter("ignore", EmptyMaskWarning)
        row = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "dice": float(dice_from_counts(tp, fp, fn)),
            "jaccard": float(jaccard_from_counts(tp, fp, fn)),
            "precision": float(precision_from_counts(tp, fp, fn)),
            "sensitivity": float(sensitivity_from_counts(tp, fp, fn)),
            "containment_prediction_in_reference": float(containment_from_counts(tp, tp + fp, tp + fn)),
            "containment_reference_in_prediction": float(containment_from_counts(tp, tp + fn, tp + fp)),
        }
    if tp + fn == 0 or tp + fp == 0:
        warnings.warn("overlap_metrics: empty mask; metrics set to NaN", EmptyMaskWarning, stacklevel=2)
    return pd.DataFrame([row])
