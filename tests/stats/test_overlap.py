"""Overlap metrics: hand-checked values, property tests, real FreeSurfer segmentations."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.conftest import shared_file
from thalamus_bidsapp.stats.overlap import (
    EmptyMaskWarning,
    confusion_counts,
    containment,
    containment_from_counts,
    dice,
    dice_from_counts,
    jaccard,
    jaccard_from_counts,
    overlap_metrics,
    precision,
    sensitivity,
)

masks = arrays(dtype=bool, shape=st.tuples(*[st.integers(1, 6)] * 3))


def _pair(draw_shape=st.tuples(*[st.integers(1, 6)] * 3)):
    return draw_shape.flatmap(lambda s: st.tuples(arrays(bool, s), arrays(bool, s)))


def test_counts_and_metrics_by_hand():
    # Reference 4 voxels, prediction 3 voxels, 2 shared: TP=2, FP=1, FN=2.
    ref = np.zeros((3, 3, 3), bool)
    pred = np.zeros((3, 3, 3), bool)
    ref[0, 0, :3] = True
    ref[1, 1, 1] = True
    pred[0, 0, 1:3] = True
    pred[2, 2, 2] = True
    assert confusion_counts(ref, pred) == (2, 1, 2)
    assert dice(ref, pred) == pytest.approx(4 / 7)
    assert precision(ref, pred) == pytest.approx(2 / 3)
    assert sensitivity(ref, pred) == pytest.approx(2 / 4)
    assert containment(ref, pred) == pytest.approx(2 / 4)
    assert containment(pred, ref) == pytest.approx(2 / 3)
    assert jaccard(ref, pred) == pytest.approx(2 / 5)
    row = overlap_metrics(ref.astype(np.uint8), pred.astype(np.float32)).iloc[0]
    assert (row["tp"], row["fp"], row["fn"]) == (2, 1, 2)
    assert row["dice"] == pytest.approx(4 / 7)
    assert row["jaccard"] == pytest.approx(2 / 5)
    # the directed containments of the pair are in the same row: P in R is precision, R in P sensitivity
    assert row["containment_prediction_in_reference"] == pytest.approx(containment(pred, ref))
    assert row["containment_reference_in_prediction"] == pytest.approx(containment(ref, pred))
    assert row["containment_prediction_in_reference"] == row["precision"]


@given(_pair())
@settings(max_examples=60, deadline=None)
def test_jaccard_is_dice_over_two_minus_dice(pair):
    a, b = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        d = dice_from_counts(*confusion_counts(a, b))
        j = jaccard_from_counts(*confusion_counts(a, b))
    if np.isnan(d):
        assert np.isnan(j)
    else:
        assert j == pytest.approx(d / (2 - d))


def test_counts_vectorised():
    tp = np.array([10, 0, 5])
    fp = np.array([0, 3, 5])
    fn = np.array([10, 3, 0])
    np.testing.assert_allclose(dice_from_counts(tp, fp, fn), [20 / 30, 0.0, 10 / 15])


@pytest.mark.parametrize("which", ["reference", "prediction", "both"])
def test_empty_mask_gives_nan_with_warning(which):
    full = np.ones((2, 2, 2), bool)
    empty = np.zeros((2, 2, 2), bool)
    ref = empty if which in ("reference", "both") else full
    pred = empty if which in ("prediction", "both") else full
    for fn in (dice, precision, sensitivity, containment):
        with pytest.warns(EmptyMaskWarning):
            assert np.isnan(fn(ref, pred))
    with pytest.warns(EmptyMaskWarning):
        row = overlap_metrics(ref, pred).iloc[0]
    assert np.isnan(row[["dice", "precision", "sensitivity"]].astype(float)).all()


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.ones((2, 2, 2)), np.ones((2, 2, 3)))


@settings(max_examples=60, deadline=None)
@given(_pair())
def test_dice_symmetric_and_bounded(pair):
    a, b = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        d_ab, d_ba = dice(a, b), dice(b, a)
        p, s = precision(a, b), sensitivity(a, b)
    if a.any() and b.any():
        assert d_ab == pytest.approx(d_ba)
        for v in (d_ab, p, s):
            assert 0.0 <= v <= 1.0
        # Dice is the harmonic mean of precision and sensitivity.
        if p + s > 0:
            assert d_ab == pytest.approx(2 * p * s / (p + s))
        else:
            assert d_ab == 0.0
        # Precision of B against A is the sensitivity of A against B.
        assert precision(b, a) == pytest.approx(s)
    else:
        assert np.isnan(d_ab) and np.isnan(d_ba)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_containment_identical_is_one_and_complement_is_zero(a):
    if not a.any() or a.all():
        return
    assert containment(a, a) == 1.0
    assert dice(a, a) == 1.0
    assert containment(a, ~a) == 0.0  # disjoint masks
    assert dice(a, ~a) == 0.0


@settings(max_examples=60, deadline=None)
@given(_pair())
def test_containment_bounds_and_subset(pair):
    a, b = pair
    if not a.any() or not b.any():
        return
    c = containment(a, b)
    assert 0.0 <= c <= 1.0
    # A subset of B is fully contained in B.
    assert containment(a & b, b) == 1.0 if (a & b).any() else True
    assert containment_from_counts(np.count_nonzero(a & b), a.sum(), b.sum()) == pytest.approx(c)


@pytest.fixture(scope="module")
def bert_thalami():
    """Left/right thalamus masks of bert from FreeSurfer 7.2 and 6.0, cropped to the thalamus region."""
    out = {}
    for version in ("7.2", "6.0"):
        aseg = np.asanyarray(nib.load(str(shared_file(f"freesurfer_bert_{version}", "mri", "aseg.mgz"))).dataobj)
        out[version] = (aseg == 10, aseg == 49)
    return out


def test_real_freesurfer_72_vs_60_thalamus(bert_thalami):
    """FreeSurfer 7.2 vs 6.0 on the sample subject bert (data README: Dice about 0.957 per side)."""
    (l72, r72), (l60, r60) = bert_thalami["7.2"], bert_thalami["6.0"]
    # Voxel counts from the data README.
    assert (l72.sum(), r72.sum(), l60.sum(), r60.sum()) == (8431, 8629, 8483, 8781)
    left = dice(l72, l60)
    right = dice(r72, r60)
    both = dice(l72 | r72, l60 | r60)
    assert left == pytest.approx(0.957, abs=0.003)
    assert right == pytest.approx(0.957, abs=0.003)
    assert both == pytest.approx(0.9597, abs=0.001)
    # The two thalami touch at the midline only (interthalamic adhesion).
    assert dice(l72, r60) < 0.01
    # Containment of 7.2 in 6.0 is the sensitivity of 6.0 against 7.2.
    assert containment(l72 | r72, l60 | r60) == pytest.approx(sensitivity(l72 | r72, l60 | r60))
