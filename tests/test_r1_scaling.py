"""R1 intensity scaling: clip at the in-mask 99th percentile, rescale to 0..1000, 0 outside."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.image.intensity import scale_r1, scale_r1_image


@pytest.fixture
def small_r1() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    r1 = rng.gamma(4.0, 0.2, size=(6, 7, 8))  # positive, right-skewed like R1 in s^-1
    r1[0, 0, 0] = 50.0  # an outlier inside the mask, above the 99th percentile
    mask = np.zeros(r1.shape, dtype=np.uint8)
    mask[:, 1:6, 1:7] = 1
    mask[0, 0, 0] = 1
    r1[~mask.astype(bool)] = 99.0  # bright background must not influence anything
    return r1, mask


def test_percentile_range_and_zero_outside(small_r1: tuple[np.ndarray, np.ndarray]) -> None:
    r1, mask = small_r1
    out = scale_r1(r1, mask)
    inside = mask.astype(bool)
    lo, p99 = r1[inside].min(), np.percentile(r1[inside], 99)

    assert out.dtype == np.float32 and out.shape == r1.shape
    assert np.all(out[~inside] == 0)
    assert out[inside].min() == 0.0 and out[inside].max() == pytest.approx(1000.0)
    # Everything at or above the 99th percentile is clipped to 1000, the outlier too.
    assert np.allclose(out[inside & (r1 >= p99)], 1000.0)
    assert out[0, 0, 0] == pytest.approx(1000.0)
    # Linear in between.
    mid = inside & (r1 < p99)
    np.testing.assert_allclose(out[mid], (r1[mid] - lo) / (p99 - lo) * 1000.0, rtol=1e-5)
    assert np.sum(inside & (r1 >= p99)) == pytest.approx(0.01 * inside.sum(), abs=2)


def test_order_preserved(small_r1: tuple[np.ndarray, np.ndarray]) -> None:
    r1, mask = small_r1
    out = scale_r1(r1, mask)
    inside = mask.astype(bool)
    order = np.argsort(r1[inside], kind="stable")
    scaled_sorted = out[inside][order]
    assert np.all(np.diff(scaled_sorted) >= 0)  # monotonic
    # Strictly rank-preserving below the clip point: distinct values stay distinct and ordered.
    below = r1[inside] < np.percentile(r1[inside], 99)
    values, scaled = r1[inside][below], out[inside][below]
    order = np.argsort(values)
    assert np.all(np.diff(values[order]) > 0)
    assert np.all(np.diff(scaled[order]) > 0)


def test_nan_and_degenerate_inputs() -> None:
    r1 = np.arange(1.0, 28.0).reshape(3, 3, 3)
    mask = np.ones(r1.shape)
    r1[1, 1, 1] = np.nan
    out = scale_r1(r1, mask)
    assert out[1, 1, 1] == 0.0 and np.isfinite(out).all()
    with pytest.raises(ValueError, match="constant"):
        scale_r1(np.ones((3, 3, 3)), mask)
    with pytest.raises(ValueError, match="no finite"):
        scale_r1(r1, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        scale_r1(r1, mask[:2])


def test_nifti_wrapper(tmp_path: Path, small_r1: tuple[np.ndarray, np.ndarray]) -> None:
    r1, mask = small_r1
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    nib.save(nib.Nifti1Image(r1.astype(np.float32), affine), str(tmp_path / "r1.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / "mask.nii.gz"))
    img = scale_r1_image(nib.load(str(tmp_path / "r1.nii.gz")), nib.load(str(tmp_path / "mask.nii.gz")))
    assert np.array_equal(img.affine, nib.load(str(tmp_path / "r1.nii.gz")).affine)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.get_fdata(), scale_r1(r1.astype(np.float32), mask), rtol=1e-6)

    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 1.0, 1.0])), str(tmp_path / "other.nii.gz"))
    with pytest.raises(ThalamusError) as err:
        scale_r1_image(nib.load(str(tmp_path / "r1.nii.gz")), nib.load(str(tmp_path / "other.nii.gz")),
                       names=("r1.nii.gz", "other.nii.gz"))
    assert err.value.exit_code == 65
    assert "other.nii.gz" in str(err.value)
