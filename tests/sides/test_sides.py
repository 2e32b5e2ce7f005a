"""Left and right thalamus: side maps from labels, from the nearer seed, from the envelope; records and volumes."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio.tables import session_volumes_table
from thalamus_bidsapp.image import sides as sd
from thalamus_bidsapp.methods.records import read_mask_record, write_mask_record
from thalamus_bidsapp.methods.registry import all_methods, get_method

FAKES = Path(__file__).resolve().parents[1] / "fakes"
BERT_LEFT, BERT_RIGHT = 8431, 8629  # aseg labels 10 and 49 on bert's own grid


# --------------------------------------------------------------------------- pure side maps


def test_sides_from_labels_and_overlap_is_an_error() -> None:
    labels = np.array([[0, 10, 49], [24, 25, 7]])
    np.testing.assert_array_equal(sd.sides_from_labels(labels, (10, 24), (49, 25)), [[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match="both left and right"):
        sd.sides_from_labels(labels, (10,), (10, 49))


def test_split_by_nearest_gives_each_voxel_the_nearer_seed_and_keeps_the_mask() -> None:
    mask = np.zeros((20, 5, 5), bool)
    mask[2:18, 1:4, 1:4] = True
    left, right = np.zeros_like(mask), np.zeros_like(mask)
    left[0, 2, 2] = right[19, 2, 2] = True  # seeds outside the mask
    out = sd.split_by_nearest(mask, left, right)
    np.testing.assert_array_equal(out > 0, mask)
    assert (out[2:10][mask[2:10]] == sd.LEFT).all() and (out[10:18][mask[10:18]] == sd.RIGHT).all()
    assert out.dtype == np.uint8
    # Anisotropic voxels: distances are in mm, not in voxels.
    point = np.zeros((6, 6, 1), bool)
    point[5, 5, 0] = True
    left, right = np.zeros_like(point), np.zeros_like(point)
    left[0, 5, 0] = right[5, 0, 0] = True  # five voxels away along i and along j
    assert sd.split_by_nearest(point, left, right, zooms=(1.0, 2.0, 1.0))[5, 5, 0] == sd.LEFT
    assert sd.split_by_nearest(point, left, right, zooms=(2.0, 1.0, 1.0))[5, 5, 0] == sd.RIGHT


def test_empty_seed_falls_back_to_world_x() -> None:
    mask = np.zeros((10, 3, 3), bool)
    mask[1:9, 1, 1] = True
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # voxel i grows to the subject's left (smaller x is right... in RAS+)
    out = sd.split_by_nearest(mask, np.zeros_like(mask), np.zeros_like(mask), affine=affine)
    # x = -i: the larger i, the smaller x, the more left.
    assert (out[5:9, 1, 1] == sd.LEFT).all() and (out[1:5, 1, 1] == sd.RIGHT).all()
    with pytest.raises(ValueError, match="affine"):
        sd.split_by_nearest(mask, np.zeros_like(mask), np.zeros_like(mask))


def test_asymmetry_index_and_world_check() -> None:
    assert sd.asymmetry_index(1.1, 0.9) == pytest.approx(0.2)
    assert np.isnan(sd.asymmetry_index(0.0, 0.0))
    sides = np.zeros((4, 1, 1), np.uint8)
    sides[0], sides[3] = sd.LEFT, sd.RIGHT
    assert sd.world_sides_agree(sides, np.eye(4)) is True
    assert sd.world_sides_agree(sides, np.diag([-1.0, 1, 1, 1])) is False
    assert sd.world_sides_agree(np.zeros((2, 2, 2)), np.eye(4)) is None


def test_every_method_declares_disjoint_side_labels() -> None:
    for method in all_methods():
        assert not set(method.labels.left) & set(method.labels.right), method.name
        if method.name != "mindglide":  # its sides come from the envelope's
            assert method.labels.left and method.labels.right, method.name
    from thalamus_bidsapp.tools import dbsegment, first, freesurfer

    assert set(get_method("freesurfer").labels.bilateral) == set(freesurfer.thalamus_labels())
    assert set(get_method("first").labels.bilateral) == set(first.FIRST_THALAMUS_LABELS)
    assert set(get_method("dbsegment").labels.bilateral) == set(dbsegment.THALAMUS_LABELS)
    assert get_method("dbsegment").labels.left == (24, 26, 30)


# --------------------------------------------------------------------------- records and volumes


def _img(data: np.ndarray, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(data.astype(np.uint8), np.diag([0.5, 1.0, 2.0, 1.0]) if affine is None else affine)


def test_record_saves_sides_and_volumes_have_three_rows(tmp_path: Path) -> None:
    sides = np.zeros((6, 6, 6), np.uint8)
    sides[0:2, 1:4, 1:4] = sd.LEFT
    sides[3:6, 1:4, 1:4] = sd.RIGHT
    mask = _img(sides > 0)
    record = read_mask_record(write_mask_record(mask, "first", "T1w", {"Tool": "x"}, folder=tmp_path, sides=sides,
                                                side_labels={"Left": [10], "Right": [49]}))
    assert record["side_labels"] == {"Left": [10], "Right": [49]}
    saved = nib.load(record["sides_file"])
    assert saved.get_data_dtype() == np.uint8 and np.allclose(saved.affine, mask.affine)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), sides)
    brain = tmp_path / "brain.nii.gz"
    nib.save(_img(np.ones((6, 6, 6))), brain)
    table = session_volumes_table([Path(record["mask_file"])], ["first"], ["T1w"], brain_mask=brain,
                                  sides_files=[Path(record["sides_file"])])
    assert list(table["hemisphere"]) == ["bilateral", "left", "right"]
    assert list(table["n_voxels"]) == [45, 18, 27]
    assert table["volume_ml"].iloc[0] == pytest.approx(45 * 1.0 / 1000)
    assert table["volume_ml"].iloc[1] + table["volume_ml"].iloc[2] == pytest.approx(table["volume_ml"].iloc[0])


def test_sides_that_differ_from_the_mask_are_refused(tmp_path: Path) -> None:
    sides = np.zeros((4, 4, 4), np.uint8)
    sides[1, 1, 1] = sd.LEFT
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1
    with pytest.raises(ValueError, match="differ in 1 voxels"):
        write_mask_record(_img(mask), "x", "T1w", {}, folder=tmp_path, sides=sides)


def test_mindglide_masks_take_the_envelopes_sides(tmp_path: Path) -> None:
    from thalamus_bidsapp.methods.mindglide import _EnvelopeSides

    envelope_sides = np.zeros((10, 4, 4), np.uint8)
    envelope_sides[1:5, 1:3, 1:3] = sd.LEFT
    envelope_sides[5:9, 1:3, 1:3] = sd.RIGHT
    envelope = read_mask_record(write_mask_record(_img(envelope_sides > 0), "first", "T1w", {}, folder=tmp_path,
                                                  sides=envelope_sides))
    dgm = np.zeros_like(envelope_sides)
    dgm[3:7, 1:3, 1:3] = 1
    dgm[0, 1, 1] = 1  # outside the envelope: the nearer side
    fields = _EnvelopeSides(envelope)(_img(dgm))
    np.testing.assert_array_equal(fields["sides"] > 0, dgm > 0)
    assert (fields["sides"][3:5, 1:3, 1:3] == sd.LEFT).all() and (fields["sides"][5:7, 1:3, 1:3] == sd.RIGHT).all()
    assert fields["sides"][0, 1, 1] == sd.LEFT
    assert "first" in fields["side_labels"]["Source"]
    assert _EnvelopeSides({"method": "plugin", "mask_file": "x"})(_img(dgm)) == {}


# --------------------------------------------------------------------------- methods on real anatomy


def _run_node(interface, tmp_path: Path) -> dict:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = interface.run(cwd=str(tmp_path))
    finally:
        os.chdir(cwd)
    return read_mask_record(result.outputs.record_file)


def _bert_t1w(flip: bool = False) -> nib.Nifti1Image:
    norm = nib.load(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))
    data, affine = np.asanyarray(norm.dataobj).astype(np.float32), norm.affine.copy()
    if flip:  # data and affine both flipped along the first axis: the same image in the world
        n = data.shape[0]
        data = data[::-1]
        affine = affine @ np.array([[-1, 0, 0, n - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    return nib.Nifti1Image(data, affine)


def _check_sides_are_aseg(record: dict, aseg: np.ndarray, flip: bool = False) -> None:
    sides = np.asarray(nib.load(record["sides_file"]).dataobj)
    mask = np.asarray(nib.load(record["mask_file"]).dataobj)
    if flip:
        sides, mask = sides[::-1], mask[::-1]
    np.testing.assert_array_equal(sides > 0, mask > 0)
    np.testing.assert_array_equal(sides == sd.LEFT, aseg == 10)
    np.testing.assert_array_equal(sides == sd.RIGHT, aseg == 49)
    assert int((sides == sd.LEFT).sum()) == BERT_LEFT and int((sides == sd.RIGHT).sum()) == BERT_RIGHT


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True], ids=["as-is", "flipped"])
def test_freesurfer_sides_are_aseg_10_and_49_whatever_the_voxel_order(tmp_path: Path, flip: bool) -> None:
    from thalamus_bidsapp.methods.freesurfer import FreeSurferThalamus

    t1w = _bert_t1w(flip)
    reference = tmp_path / "t1w.nii.gz"
    nib.save(t1w, reference)
    record = _run_node(FreeSurferThalamus(subject_dir=str(shared_file("freesurfer_bert_7.2")),
                                          reference=str(reference)), tmp_path)
    aseg = np.asanyarray(nib.load(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")).dataobj)
    _check_sides_are_aseg(record, aseg, flip)
    assert record["side_labels"]["Left"] == [10] and record["side_labels"]["Right"] == [49]
    # Left is the subject's left in world coordinates: smaller x (RAS+) either way.
    assert sd.world_sides_agree(np.asarray(nib.load(record["sides_file"]).dataobj), t1w.affine) is True


@pytest.mark.slow
def test_first_fake_gives_sides_from_labels_10_and_49(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fsl_home: Path) -> None:
    from thalamus_bidsapp.methods.first import FirstThalamus

    monkeypatch.setenv("FAKE_FIRST_ASEG", str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    brainmask = nib.load(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz"))
    nib.save(_bert_t1w(), tmp_path / "t1w.nii.gz")
    nib.save(nib.Nifti1Image((np.asanyarray(brainmask.dataobj) > 0).astype(np.uint8), brainmask.affine),
             tmp_path / "brain.nii.gz")
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    record = _run_node(FirstThalamus(t1w=str(tmp_path / "t1w.nii.gz"), brain_mask=str(tmp_path / "brain.nii.gz")),
                       node_dir)
    aseg = np.asanyarray(nib.load(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")).dataobj)
    _check_sides_are_aseg(record, aseg)
    assert record["side_labels"]["Left"] == [10] and "firstseg" in record["side_labels"]["Source"]


@pytest.mark.slow
def test_dbsegment_fake_gives_sides_from_24_26_30_and_25_27_31(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from thalamus_bidsapp.methods.dbsegment import DBSegmentThalamus
    from thalamus_bidsapp.tools import dbsegment

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(FAKES / "DBSegment", bin_dir / "DBSegment")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    models = tmp_path / "models"
    trainer = models / dbsegment.MODEL_BUNDLE_ALL_FOLDS / dbsegment.TRAINER_SUBDIR
    for fold in range(5):
        (trainer / f"fold_{fold}").mkdir(parents=True)
    aal_path = shared_file("colin27_aal", "AAL.nii")
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH", str(aal_path))
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH_LEFT", "77")
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH_RIGHT", "78")
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    record = _run_node(DBSegmentThalamus(t1w=str(shared_file("colin27_aal", "ch2.nii.gz")),
                                         model_folder=str(models)), node_dir)
    aal = np.asanyarray(nib.load(aal_path).dataobj)
    sides = np.asarray(nib.load(record["sides_file"]).dataobj)
    np.testing.assert_array_equal(sides == sd.LEFT, aal == 77)
    np.testing.assert_array_equal(sides == sd.RIGHT, aal == 78)
    np.testing.assert_array_equal(sides > 0, np.asarray(nib.load(record["mask_file"]).dataobj) > 0)
    assert record["side_labels"]["Left"] == [24, 26, 30] and record["side_labels"]["Right"] == [25, 27, 31]
    json.dumps(record)


def test_meshnet_needs_the_sides_model_unless_bilateral_only_is_asked_for(tmp_path: Path) -> None:
    from thalamus_bidsapp.config import RunConfig

    models = {"meshnet_model": shared_file("brainchop", "models", "model30chan18cls"),
              "meshnet_sides_model": tmp_path / "nowhere"}
    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                       work_dir=tmp_path / "work", method_options=dict(models))
    status = get_method("meshnet").check_tools(config)
    assert status.reason is not None and "model21_104class" in status.reason
    bilateral = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                          work_dir=tmp_path / "work", method_options={**models, "meshnet_sides": "off"})
    status = get_method("meshnet").check_tools(bilateral)
    assert status.reason is None and status.settings["sides_model_dir"] is None and status.settings["sides_off"]
    sides = shared_file("brainchop", "models", "model21_104class")
    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                       work_dir=tmp_path / "work", method_options={**models, "meshnet_sides_model": sides})
    status = get_method("meshnet").check_tools(config)
    assert status.settings["sides_model_dir"] == sides.resolve()
