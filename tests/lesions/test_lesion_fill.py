"""Lesion filling on real anatomy (bert): only lesion voxels change, from nearby NAWM or thalamus, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.lesions.conftest import stand_in_prior
from tests.lesions.planting import WHITE_MATTER, plant_lesions
from thalamus_bidsapp.image.lesion_fill import fill_lesions, thalamic_lesions
from thalamus_bidsapp.image.tissue_classes import kmeans_1d, tissue_classes

ZOOMS = (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def planted(bert_crop):
    return plant_lesions(bert_crop.t1w, bert_crop.aseg, seed=7)


def test_kmeans_finds_three_real_tissue_classes(bert_crop):
    classes = tissue_classes(bert_crop.t1w, bert_crop.brain)
    csf, grey, white = classes.centres
    assert csf < grey < white
    # The white-matter class is mostly aseg white matter (the thalamus is bright on T1w too).
    wm = np.isin(bert_crop.aseg, WHITE_MATTER)
    assert (classes.white_matter & wm).sum() / wm.sum() > 0.85
    centres, _ = kmeans_1d(np.r_[np.full(50, 10.0), np.full(50, 50.0), np.full(50, 90.0)], np.array([0, 40, 100]))
    assert np.allclose(centres, [10, 50, 90])


def test_only_lesion_voxels_change_and_fill_values_are_nawm_intensities(bert_crop, planted):
    result = fill_lesions(planted.image, planted.lesion, bert_crop.brain, ZOOMS)
    changed = result.image != planted.image
    assert changed.any()
    assert not (changed & ~planted.lesion).any()
    # Without a prior the intra-thalamic lesions (surrounded by grey matter) are filled as grey, the rest as NAWM.
    from scipy import ndimage

    from thalamus_bidsapp.image.lesion_fill import grey_surrounded_lesions
    from thalamus_bidsapp.image.tissue_classes import grey_band

    intra = planted.lesion & bert_crop.thalamus
    classes = tissue_classes(planted.image, bert_crop.brain, exclude=ndimage.binary_dilation(planted.lesion))
    grey = grey_surrounded_lesions(planted.lesion, grey_band(planted.image, bert_crop.brain, classes), bert_crop.brain)
    assert (grey & intra).sum() == intra.sum() and (grey & ~intra).sum() < 0.1 * (planted.lesion & ~intra).sum()
    assert result.n_from_thalamus == grey.sum() and result.n_from_white_matter == (planted.lesion & ~grey).sum()
    white = planted.lesion & ~grey
    low, high = result.white_matter_range
    assert result.image[white].min() >= low and result.image[white].max() <= high
    # Drawn from white matter, not a constant: spread like the real white matter, mean near it.
    wm = bert_crop.t1w[np.isin(bert_crop.aseg, WHITE_MATTER)]
    filled = result.image[white]
    assert np.unique(filled).size >= 5 and filled.std() > 0.5  # integer-valued norm.mgz: a few levels
    assert abs(filled.mean() - np.median(wm)) < 0.1 * np.median(wm)
    assert any("no thalamus prior" in n for n in result.notes)
    thalamic = bert_crop.t1w[bert_crop.thalamus & ~planted.lesion]
    assert abs(np.median(result.image[intra]) - np.median(thalamic)) < 0.08 * np.median(thalamic)


def test_nawm_is_the_white_matter_peak_without_thalamus_or_partial_volume(bert_crop, planted):
    """The brightest k-means class reaches down into the thalamus; the NAWM from the peak does not."""
    from scipy import ndimage

    from thalamus_bidsapp.image.tissue_classes import normal_appearing_white_matter

    classes = tissue_classes(planted.image, bert_crop.brain, exclude=ndimage.binary_dilation(planted.lesion))
    nawm = normal_appearing_white_matter(planted.image, bert_crop.brain, classes, planted.lesion)
    thalamus = bert_crop.thalamus
    assert (ndimage.binary_erosion(classes.white_matter) & thalamus).sum() > 0.3 * thalamus.sum()  # the class
    assert (nawm & thalamus).sum() < 0.03 * thalamus.sum()  # the NAWM
    wm = bert_crop.t1w[np.isin(bert_crop.aseg, WHITE_MATTER)]
    assert abs(classes.white_peak - np.percentile(wm, 75)) < 3  # the peak, not the partial-volume-laden class mean
    near = nawm & (ndimage.distance_transform_edt(~thalamus) <= 8)
    assert np.percentile(planted.image[near], 5) > np.percentile(bert_crop.t1w[thalamus], 90)


def test_fill_is_reproducible_with_a_seed(bert_crop, planted):
    a = fill_lesions(planted.image, planted.lesion, bert_crop.brain, ZOOMS, seed=3).image
    b = fill_lesions(planted.image, planted.lesion, bert_crop.brain, ZOOMS, seed=3).image
    c = fill_lesions(planted.image, planted.lesion, bert_crop.brain, ZOOMS, seed=4).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_intrathalamic_lesions_get_thalamic_intensity(bert_crop):
    intra = plant_lesions(bert_crop.t1w, bert_crop.aseg, seed=2, kinds=("intra",))
    prior = stand_in_prior(bert_crop) >= 0.5
    result = fill_lesions(intra.image, intra.lesion, bert_crop.brain, ZOOMS, thalamus=prior)
    assert result.n_from_thalamus == int(intra.lesion.sum()) and result.n_from_white_matter == 0
    thalamic = bert_crop.t1w[bert_crop.thalamus & ~intra.lesion]
    filled = result.image[intra.lesion]
    low, high = result.thalamus_range
    assert filled.min() >= low and filled.max() <= high
    assert abs(np.median(filled) - np.median(thalamic)) < 0.06 * np.median(thalamic)


def test_white_matter_lesions_grazing_a_wide_prior_stay_white_matter(bert_crop):
    juxta = plant_lesions(bert_crop.t1w, bert_crop.aseg, seed=5, kinds=("juxta",))
    wide = stand_in_prior(bert_crop, dilate=2) >= 0.5
    assert (juxta.lesion & wide).any()  # the prior overlaps the juxtathalamic lesions ...
    assert thalamic_lesions(juxta.lesion, wide).sum() < 0.2 * (juxta.lesion & wide).sum()  # ... but few are thalamic


def test_no_lesion_changes_nothing(bert_crop):
    empty = np.zeros(bert_crop.t1w.shape, dtype=bool)
    result = fill_lesions(bert_crop.t1w, empty, bert_crop.brain, ZOOMS)
    assert np.array_equal(result.image, bert_crop.t1w)
    assert result.n_from_white_matter == result.n_from_thalamus == 0
