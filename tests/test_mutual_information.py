"""Mutual information QC metric: the definition, edge cases, and its scale on real images."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests import registration_helpers as helpers
from tests.conftest import shared_file
from thalamus_bidsapp.image.mutual_information import (
    DEFAULT_BINS,
    mutual_information,
    mutual_information_images,
)

MS = ("ms_lesjak2017_mni", "patient07")


def test_hand_computed_two_bins() -> None:
    a = np.array([0.0, 0.0, 1.0, 1.0])
    mask = np.ones(4)
    # Identical two-level images: MI = H = ln 2.
    assert mutual_information(a, a, mask, bins=2, range_percentiles=(0, 100)) == pytest.approx(np.log(2))
    # Independent halves: every joint cell has p = 1/4 = p(a) p(b), MI = 0.
    b = np.array([0.0, 1.0, 0.0, 1.0])
    assert mutual_information(a, b, mask, bins=2, range_percentiles=(0, 100)) == pytest.approx(0.0, abs=1e-12)
    # Reversed contrast carries the same information.
    assert mutual_information(a, 1 - a, mask, bins=2, range_percentiles=(0, 100)) == pytest.approx(np.log(2))


def test_identical_image_gives_its_binned_entropy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 20, 20))
    mask = np.ones_like(x)
    lo, hi = np.percentile(x, (0.5, 99.5))
    idx = np.minimum(np.floor((np.clip(x, lo, hi) - lo) / (hi - lo) * DEFAULT_BINS), DEFAULT_BINS - 1)
    p = np.bincount(idx.astype(int).ravel(), minlength=DEFAULT_BINS) / x.size
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    assert mutual_information(x, x, mask) == pytest.approx(entropy)
    assert mutual_information(x, x, mask) <= np.log(DEFAULT_BINS)


def test_independent_noise_is_near_zero_and_symmetric() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 40, 40, 40))
    mask = np.ones(a.shape)
    mi = mutual_information(a, b, mask)
    assert 0.0 <= mi < 0.02  # plug-in bias ~ 31**2 / (2 * 64000) = 0.0075
    assert mutual_information(b, a, mask) == pytest.approx(mi)


def test_linear_intensity_change_and_outside_mask_do_not_matter() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 30, 30))
    b = a + 0.5 * rng.normal(size=a.shape)
    mask = np.zeros(a.shape)
    mask[5:25, 5:25, 5:25] = 1
    mi = mutual_information(a, b, mask)
    assert mutual_information(a, 3.0 * b + 7.0, mask) == pytest.approx(mi, rel=1e-6)
    b2 = b.copy()
    b2[mask == 0] = rng.normal(size=int((mask == 0).sum())) * 1e6
    assert mutual_information(a, b2, mask) == pytest.approx(mi)


def test_constant_image_nan_and_errors() -> None:
    a = np.arange(27.0).reshape(3, 3, 3)
    mask = np.ones_like(a)
    assert mutual_information(a, np.full_like(a, 5.0), mask) == 0.0
    b = a.copy()
    b[0, 0, 0] = np.nan  # ignored, not propagated
    assert np.isfinite(mutual_information(a, b, mask))
    with pytest.raises(ValueError, match="shapes"):
        mutual_information(a, a[:2], mask)
    with pytest.raises(ValueError, match="no voxel"):
        mutual_information(a, a, np.zeros_like(a))
    with pytest.raises(ValueError, match="bins"):
        mutual_information(a, a, mask, bins=1)


def test_images_must_share_the_grid(tmp_path: Path) -> None:
    data = np.random.default_rng(3).normal(size=(8, 8, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii.gz"))
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    nib.save(nib.Nifti1Image(data, shifted), str(tmp_path / "b.nii.gz"))
    with pytest.raises(ValueError, match="grid"):
        mutual_information_images(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "a.nii.gz")


def test_real_flair_t1w_aligned_passes_and_misaligned_fails(tmp_path: Path) -> None:
    """Calibration on real MS data: the aligned FLAIR/T1w pair passes the FLIRT cut-off, a 5 mm shift fails."""
    t1 = shared_file(*MS, "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    flair = shared_file(*MS, "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    mask_path = helpers.make_brain_mask(t1, tmp_path / "mask.nii.gz")
    t1_data = np.asarray(nib.load(str(t1)).dataobj, dtype=np.float32)
    flair_data = np.asarray(nib.load(str(flair)).dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0

    aligned = mutual_information(t1_data, flair_data, mask)
    shifted = mutual_information(t1_data, ndimage.shift(flair_data, (5, 0, 0), order=1), mask)
    noise = mutual_information(t1_data, np.random.default_rng(0).normal(size=t1_data.shape), mask)
    assert aligned > 0.40  # measured 0.449
    assert shifted < 0.10  # measured 0.065
    assert noise < 0.01
    assert mutual_information_images(t1, flair, mask_path) == pytest.approx(aligned, rel=1e-6)
