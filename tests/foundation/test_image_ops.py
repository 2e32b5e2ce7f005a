"""Reorientation, label resampling and mask volumes on real images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.image.masks import integer_labels, mask_from_labels, mask_volume
from thalamus_bidsapp.image.reorient import reorient_to_ras
from thalamus_bidsapp.image.resample import labels_to_grid, same_grid


@pytest.fixture(scope="module")
def bert_aseg():
    return nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))


def test_reorient_lia_to_ras_keeps_world_positions(bert_aseg):
    out, record = reorient_to_ras(bert_aseg)
    assert record["original_orientation"] == "LIA"
    assert record["orientation"] == "RAS"
    assert "".join(nib.aff2axcodes(out.affine)) == "RAS"
    data, new = np.asanyarray(bert_aseg.dataobj), np.asanyarray(out.dataobj)
    # Every voxel keeps its label at the same world position.
    rng = np.random.default_rng(0)
    voxels = rng.integers(0, 256, size=(200, 3))
    world = nib.affines.apply_affine(bert_aseg.affine, voxels)
    new_voxels = np.rint(nib.affines.apply_affine(np.linalg.inv(out.affine), world)).astype(int)
    assert np.array_equal(data[tuple(voxels.T)], new[tuple(new_voxels.T)])
    # The recorded voxel transform maps old indices to new ones.
    transform = np.array(record["voxel_transform"])
    assert np.allclose(nib.affines.apply_affine(transform, voxels), new_voxels)


def test_reorient_ras_input_is_unchanged():
    img = nib.load(str(shared_file("colin27_aal", "ch2.nii.gz")))
    out, record = reorient_to_ras(img)
    assert record["original_orientation"] == record["orientation"] == "RAS"
    assert np.allclose(out.affine, img.affine)
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(img.dataobj))
    assert out.header.get_xyzt_units() == ("mm", "sec")


def test_labels_to_grid_identity_preserves_counts(bert_aseg):
    out = labels_to_grid(bert_aseg, bert_aseg)
    assert same_grid(out, bert_aseg)
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(bert_aseg.dataobj))


def test_labels_to_grid_round_trip_through_reoriented_grid(bert_aseg):
    ras, _ = reorient_to_ras(bert_aseg)
    mask = mask_from_labels(labels_to_grid(bert_aseg, ras), [10, 49])
    assert mask_volume(mask)["n_voxels"] == 8431 + 8629
    back = labels_to_grid(ras, bert_aseg)
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(bert_aseg.dataobj))


def test_labels_to_grid_outside_source_is_zero():
    labels = nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.int16), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0  # reference starts 2 mm further along x
    out = np.asanyarray(labels_to_grid(labels, nib.Nifti1Image(np.zeros((4, 4, 4)), shifted)).dataobj)
    assert out[:2].all() and not out[2:].any()


def test_mask_volume_uses_header_zooms():
    data = np.zeros((10, 10, 10), dtype=np.uint8)
    data[2:5, 2:5, 2:5] = 1
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 0.8, 1.0]))
    vol = mask_volume(img)
    assert vol["n_voxels"] == 27
    assert vol["volume_mm3"] == pytest.approx(27 * 0.512)
    assert vol["volume_ml"] == pytest.approx(27 * 0.512 / 1000)


def test_integer_labels_round_float_stored_labels_and_keep_integer_ones():
    stored_as_float = np.array([0.0, 9.6, 10.4, 49.0001], dtype=np.float32)
    assert integer_labels(stored_as_float).tolist() == [0, 10, 10, 49]
    assert integer_labels(stored_as_float).dtype == np.int64
    stored_as_int = np.array([0, 10, 49], dtype=np.int16)
    assert integer_labels(stored_as_int, np.uint8).tolist() == [0, 10, 49]
    assert integer_labels(stored_as_int, np.uint8).dtype == np.uint8
