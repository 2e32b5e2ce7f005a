"""Ensembles and intersections of binary masks, voxel-exact on small arrays."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.image import ensembles as ens

AFF = np.array([[-0.8, 0, 0, 10], [0, 0.8, 0, -5], [0, 0, 0.8, 3], [0, 0, 0, 1]])


def img(a, aff=AFF) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(a, dtype=np.uint8), aff)


A = np.array([[[1, 1, 0, 0], [1, 0, 0, 1]]])
B = np.array([[[1, 0, 1, 0], [0, 0, 1, 1]]])
C = np.array([[[0, 1, 1, 0], [1, 1, 0, 1]]])


def test_two_masks_give_union() -> None:
    out = ens.mean_vote([img(A), img(B)])
    assert np.array_equal(np.asanyarray(out.dataobj), A | B)
    assert out.get_data_dtype() == np.uint8 and np.allclose(out.affine, AFF)


def test_three_masks_give_majority() -> None:
    out = ens.mean_vote([img(A), img(B), img(C)])
    expected = np.array([[[1, 1, 1, 0], [1, 0, 0, 1]]])
    assert np.array_equal(np.asanyarray(out.dataobj), expected)
    assert np.array_equal(expected, ((A + B + C) >= 2).astype(int))


def test_threshold_is_inclusive_and_values_above_zero_count() -> None:
    a = img(np.array([[[2, 0]]]))
    b = img(np.array([[[0, 0]]]))
    assert np.array_equal(np.asanyarray(ens.mean_vote([a, b], threshold=0.5).dataobj), [[[1, 0]]])
    assert np.array_equal(np.asanyarray(ens.mean_vote([a, b], threshold=0.51).dataobj), [[[0, 0]]])


def test_intersection() -> None:
    out = ens.intersection(img(A), img(C))
    assert np.array_equal(np.asanyarray(out.dataobj), A & C)


def test_grid_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ThalamusError, match="FLAIR is not on the grid of T1w") as err:
        ens.mean_vote([img(A), img(B, np.eye(4))], names=["T1w", "FLAIR"])
    assert err.value.exit_code == 65
    with pytest.raises(ThalamusError, match="shape"):
        ens.intersection(img(A), img(np.zeros((1, 2, 5))))
    # float32 header rounding is not a mismatch
    ens.check_same_grid([img(A), img(B, AFF + 1e-6)])


def test_named_ensembles_record_missing_inputs() -> None:
    results = ens.build_ensembles({"T1w": img(A), "FLAIR": img(B), "R1": None})
    assert list(results) == ["T1wFLAIR", "T1wR1", "R1FLAIR", "T1wFLAIRR1"]
    assert results["T1wFLAIR"].built and results["T1wFLAIR"].missing == ()
    assert np.array_equal(np.asanyarray(results["T1wFLAIR"].mask.dataobj), A | B)
    for name in ("T1wR1", "R1FLAIR", "T1wFLAIRR1"):
        assert not results[name].built and results[name].missing == ("R1",)
    prov = results["T1wR1"].provenance()
    assert prov["MissingInputs"] == ["R1"] and prov["Built"] is False
    assert results["T1wFLAIR"].rule.endswith("(union)")

    full = ens.build_ensembles({"T1w": img(A), "FLAIR": img(B), "R1": img(C)})
    assert all(r.built for r in full.values())
    assert np.array_equal(np.asanyarray(full["T1wFLAIRR1"].mask.dataobj), (A + B + C) >= 2)
    assert np.array_equal(np.asanyarray(full["R1FLAIR"].mask.dataobj), C | B)
    assert full["T1wFLAIRR1"].rule.endswith("(majority)")


def test_mask_like_keeps_reference_codes() -> None:
    ref = nib.Nifti1Image(np.zeros((1, 2, 4), np.float32), AFF)
    ref.set_qform(AFF, code=1)
    ref.set_sform(AFF, code=4)
    out = ens.mask_like(A.astype(bool), ref)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 4
