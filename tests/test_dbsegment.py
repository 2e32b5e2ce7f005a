"""DBSegment adapter: exact command, discovery, label table, and the way back to the native grid.

The fake DBSegment (tests/fakes/DBSegment) conforms its input with DBSegment's
own code (qform -> sform, MGH-style 256^3 1 mm identity-direction grid centred
on affine @ shape/2) and draws the labels from a real atlas, so the native
thalamus mask must come back voxel for voxel.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.tools import dbsegment

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    root = tmp_path / "dbsegment_models"
    trainer = root / dbsegment.MODEL_BUNDLE_ALL_FOLDS / dbsegment.TRAINER_SUBDIR
    for fold in range(5):
        (trainer / f"fold_{fold}").mkdir(parents=True)
    (trainer / "fold_0" / "model_final_checkpoint.model").write_bytes(b"not a real model")
    return root


@pytest.fixture
def fake_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(FAKES / "DBSegment", bin_dir / "DBSegment")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return bin_dir / "DBSegment"


def test_label_table() -> None:
    table = dbsegment.label_table()
    assert dbsegment.THALAMUS_LABELS == (24, 25, 26, 27, 30, 31)
    assert [table["Labels"][str(v)] for v in dbsegment.THALAMUS_LABELS] == [
        "THAL_L", "THAL_R", "VPL_L", "VPL_R", "VIM_L", "VIM_R"]


def test_command_is_exact(fake_on_path: Path, model_folder: Path, tmp_path: Path) -> None:
    exe = dbsegment.find_dbsegment()
    assert exe == fake_on_path
    assert dbsegment.find_model_folder(model_folder) == model_folder
    cmd = dbsegment.dbsegment_command(exe, tmp_path / "in", tmp_path / "out", model_folder)
    assert cmd == [str(fake_on_path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                   "-mp", str(model_folder) + os.sep, "-v", "v3", "-f", "0", "1", "2", "3", "4",
                   "--disable_tta", "False"]
    # DBSegment's own defaults (folds 4 and 6, no TTA) stay reachable
    assert dbsegment.dbsegment_command(exe, "i", "o", "m", folds=None, tta=False)[-2:] == ["--disable_tta", "True"]
    prov = dbsegment.provenance(cmd, exe, model_folder, checksums=True)
    assert prov["Folds"] == [0, 1, 2, 3, 4] and prov["TestTimeAugmentation"] is True
    assert set(prov["ModelChecksums"]) == {"fold_0"}
    assert prov["LabelsTaken"]["30"] == "VIM_L"


def test_missing_tool_and_model_are_exit_66(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ThalamusError) as err:
        dbsegment.find_dbsegment()
    assert err.value.exit_code == 66 and "DBSegment" in str(err.value)
    # The variable is read with the run's configuration (as --dbsegment-model), never here.
    monkeypatch.setenv(dbsegment.MODEL_ENV, str(tmp_path))
    with pytest.raises(ThalamusError) as err:
        dbsegment.find_model_folder()
    assert err.value.exit_code == 66 and dbsegment.MODEL_ENV in str(err.value)
    with pytest.raises(ThalamusError) as err:
        dbsegment.find_model_folder(tmp_path)
    assert err.value.exit_code == 66 and "fold_0" in str(err.value)


def _run_round_trip(t1w_path: Path, atlas_path: Path, tmp_path: Path, model_folder: Path,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH", str(atlas_path))
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH_LEFT", "77")
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH_RIGHT", "78")
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH_OTHER", "71:2,72:3")
    return dbsegment.run_dbsegment(t1w_path, tmp_path / "work", model_folder=model_folder)


@pytest.mark.slow
def test_round_trip_colin27_native_grid(fake_on_path: Path, model_folder: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ch2 is 181x217x181 RAS: not conformed, odd sizes (half-voxel offset from the conformed grid)."""
    ch2_path = shared_file("colin27_aal", "ch2.nii.gz")
    aal_path = shared_file("colin27_aal", "AAL.nii")
    seg_path, cmd = _run_round_trip(ch2_path, aal_path, tmp_path, model_folder, monkeypatch)
    assert seg_path == tmp_path / "work" / "output" / "preprocessed_v3" / "T1w.nii.gz"
    assert (tmp_path / "work" / "input" / "preprocessed_v3" / "T1w_0000.nii.gz").is_file()

    ch2 = nib.load(ch2_path)
    seg = nib.load(seg_path)
    # DBSegment's space: 256^3, 1 mm, identity direction (nibabel RAS), centred on ch2's affine @ shape/2
    assert seg.shape == (256, 256, 256)
    assert nib.aff2axcodes(seg.affine) == ("R", "A", "S")
    assert np.allclose(seg.affine, dbsegment.conformed_affine(ch2), atol=1e-4)
    assert np.allclose(seg.affine[:3, 3], ch2.affine[:3, :3] @ (np.array(ch2.shape) / 2) + ch2.affine[:3, 3] - 128)
    assert set(np.unique(np.asanyarray(seg.dataobj))) >= {0, 1, 2, 3, 24, 25, 26, 27, 30, 31}

    mask = dbsegment.dbsegment_thalamus_mask(seg_path, ch2)
    aal = np.asanyarray(nib.load(aal_path).dataobj)
    expected = np.isin(aal, (77, 78))
    assert mask.shape == ch2.shape and np.allclose(mask.affine, ch2.affine)
    data = np.asanyarray(mask.dataobj).astype(bool)
    assert int(expected.sum()) == 8700 + 8399
    assert np.array_equal(data, expected)
    # caudate (mapped to DBSegment 2/3) is not taken
    assert not (data & np.isin(aal, (71, 72))).any()


@pytest.mark.slow
def test_round_trip_reoriented_lia(fake_on_path: Path, model_folder: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same brain stored LIA (flipped and permuted axes) comes back voxel for voxel too."""
    ch2 = nib.load(shared_file("colin27_aal", "ch2.nii.gz"))
    aal = nib.load(shared_file("colin27_aal", "AAL.nii"))
    ornt = nib.orientations.ornt_transform(nib.io_orientation(ch2.affine), nib.orientations.axcodes2ornt("LIA"))
    t1w_lia = nib.Nifti1Image(np.asanyarray(ch2.dataobj), ch2.affine).as_reoriented(ornt)
    aal_lia = nib.Nifti1Image(np.asanyarray(aal.dataobj).astype(np.int16), aal.affine).as_reoriented(ornt)
    assert nib.aff2axcodes(t1w_lia.affine) == ("L", "I", "A")
    t1w_path = tmp_path / "sub-colin_T1w.nii.gz"
    nib.save(t1w_lia, t1w_path)
    # the fake samples its labels from a label map on the input grid, as DBSegment samples the input image
    aal_path = tmp_path / "aal_lia.nii.gz"
    nib.save(aal_lia, aal_path)
    seg_path, _ = _run_round_trip(t1w_path, aal_path, tmp_path, model_folder, monkeypatch)
    native_t1w = nib.load(t1w_path)
    mask = dbsegment.dbsegment_thalamus_mask(seg_path, native_t1w)
    expected = np.isin(np.asanyarray(aal_lia.dataobj), (77, 78))
    assert np.allclose(mask.affine, native_t1w.affine)
    assert np.array_equal(np.asanyarray(mask.dataobj).astype(bool), expected)


def test_to_native_grid_marker_lands_at_nearest_world_point() -> None:
    """A block of conformed voxels lands on the 2 mm LIA native voxels whose centres lie inside it."""
    native = nib.Nifti1Image(np.zeros((40, 50, 30), np.float32),
                             np.array([[-2.0, 0, 0, 30], [0, 0, 2.0, -40], [0, -2.0, 0, 20], [0, 0, 0, 1]]))
    conf_aff = dbsegment.conformed_affine(native)
    seg = np.zeros((256, 256, 256), np.uint8)
    j = np.array([130, 120, 125])
    seg[j[0] - 1:j[0] + 2, j[1] - 1:j[1] + 2, j[2] - 1:j[2] + 2] = 24
    out = np.asanyarray(dbsegment.to_native_grid(nib.Nifti1Image(seg, conf_aff), native).dataobj)
    hits = np.argwhere(out == 24)
    world_j = conf_aff[:3, :3] @ j + conf_aff[:3, 3]
    assert len(hits) >= 1
    for h in hits:
        world_h = native.affine[:3, :3] @ h + native.affine[:3, 3]
        assert np.all(np.abs(world_h - world_j) <= 1.5 + 1e-6)
    # and every native voxel whose centre is well inside the block is hit
    grid = np.indices(out.shape).reshape(3, -1)
    world = native.affine[:3, :3] @ grid + native.affine[:3, 3:4]
    inside = np.all(np.abs(world - world_j[:, None]) < 1.0, axis=0)
    assert np.all(out.reshape(-1)[inside] == 24)


def test_failure_names_command(fake_on_path: Path, model_folder: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_DBSEGMENT_TRUTH", raising=False)
    t1 = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), t1)
    with pytest.raises(ThalamusError) as err:
        dbsegment.run_dbsegment(t1, tmp_path / "work", model_folder=model_folder)
    assert err.value.exit_code == 65
    assert "-mp " + str(model_folder) + os.sep in str(err.value) and "FAKE_DBSEGMENT_TRUTH" in str(err.value)
