"""Group agreement step: synthetic edge cases and an end-to-end run on real segmentations."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.group.agreement import _read_mask, run_agreement, session_counts

TABLES = {
    "voxelwise": "agreement_voxelwise.tsv",
    "summary": "agreement_summary.tsv",
    "pairwise": "agreement_pairwise.tsv",
    "containment": "containment.tsv",
    "volumetric": "agreement_volumetric.tsv",
}


def _save(path: Path, mask: np.ndarray, affine: np.ndarray | None = None, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fortran order is NIfTI's on-disk order: nibabel then writes it in one piece.
    img = nib.Nifti1Image(np.asfortranarray(mask, dtype=dtype), np.eye(4) if affine is None else affine)
    img.header.set_zooms((1.0, 1.0, 1.0)[: mask.ndim])
    nib.save(img, str(path))
    return path


def _box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def test_session_counts_match_numpy(tmp_path):
    rng = np.random.default_rng(1)
    shape = (20, 18, 16)
    arrays = []
    for i in range(4):
        m = np.zeros(shape, bool)
        lo = rng.integers(0, 8, 3)
        m[lo[0] : lo[0] + 9, lo[1] : lo[1] + 7, lo[2] : lo[2] + 6] = rng.random((9, 7, 6)) < 0.7
        arrays.append(m)
    arrays.append(np.zeros(shape, bool))  # an empty mask
    # Mixed storage: uint8, int16, float32 (binarised at 0.5) and Fortran/C order.
    dtypes = [np.uint8, np.int16, np.float32, np.uint8, np.uint8]
    masks = [_read_mask(_save(tmp_path / f"m{i}.nii.gz", a, dtype=d)) for i, (a, d) in enumerate(zip(arrays, dtypes))]
    counts, inter = session_counts(masks)
    expected = np.array([[np.count_nonzero(a & b) for b in arrays] for a in arrays])
    np.testing.assert_array_equal(inter, expected)
    np.testing.assert_array_equal(counts, [a.sum() for a in arrays])


def _tables(method_rows, manual_rows, out_dir, **kw):
    methods = pd.DataFrame(method_rows, columns=["participant_id", "session_id", "method", "path"])
    manual = pd.DataFrame(manual_rows, columns=["participant_id", "session_id", "path"])
    return run_agreement(methods, manual, out_dir, **kw)


def test_manual_on_other_grid_is_an_error_naming_the_file(tmp_path):
    shape = (12, 12, 12)
    m = _box(shape, (3, 3, 3), (8, 8, 8))
    method = _save(tmp_path / "sub-01_desc-first_mask.nii.gz", m)
    shifted = np.eye(4)
    shifted[:3, 3] = [2.0, 0, 0]
    manual_affine = _save(tmp_path / "sub-01_desc-manual_mask.nii.gz", m, affine=shifted)
    manual_shape = _save(tmp_path / "sub-02_desc-manual_mask.nii.gz", np.zeros((12, 12, 13), bool))
    for manual in (manual_affine, manual_shape):
        with pytest.raises(ThalamusError) as err:
            _tables([("sub-01", "ses-1", "first", method)], [("sub-01", "ses-1", manual)], tmp_path / "g", figures=False)
        assert err.value.exit_code == 65
        assert str(manual) in str(err.value)


def test_missing_file_and_duplicates(tmp_path):
    m = _save(tmp_path / "a.nii.gz", _box((6, 6, 6), (1, 1, 1), (4, 4, 4)))
    with pytest.raises(ThalamusError) as err:
        _tables([("s1", "", "first", tmp_path / "missing.nii.gz")], [], tmp_path / "g", figures=False)
    assert err.value.exit_code == 66 and "missing.nii.gz" in str(err.value)
    with pytest.raises(ThalamusError, match="more than one mask"):
        _tables([("s1", "", "first", m), ("s1", "", "first", m)], [], tmp_path / "g", figures=False)


def test_empty_masks_give_nan_with_a_warning_and_no_crash(tmp_path, caplog):
    shape = (10, 10, 10)
    full = _box(shape, (2, 2, 2), (7, 7, 7))
    rows, manual = [], []
    for i in range(4):
        sub = f"sub-{i:02d}"
        grown = _box(shape, (2, 2, 2), (7, 7, 7 + (i % 2)))
        rows.append((sub, np.nan, "first", _save(tmp_path / f"{sub}_first.nii.gz", grown)))
        # Session 0's dbsegment mask is empty (a failed segmentation).
        db = np.zeros(shape, bool) if i == 0 else full
        rows.append((sub, np.nan, "dbsegment", _save(tmp_path / f"{sub}_dbsegment.nii.gz", db)))
        manual.append((sub, np.nan, _save(tmp_path / f"{sub}_manual.nii.gz", full)))
    with caplog.at_level(logging.WARNING, logger="thalamus_bidsapp.group.agreement"):
        res = _tables(rows, manual, tmp_path / "group", figures=False)
    assert "sub-00_dbsegment.nii.gz" in caplog.text and "empty" in caplog.text
    vox = res["voxelwise"].set_index(["participant_id", "method"])
    assert np.isnan(vox.loc[("sub-00", "dbsegment"), ["dice", "precision", "sensitivity"]].astype(float)).all()
    assert vox.loc[("sub-00", "dbsegment"), "volume_method_ml"] == 0.0
    assert vox.loc[("sub-01", "dbsegment"), "dice"] == 1.0
    # first is 125 or 150 voxels vs manual 125: Dice 1 or 250/275.
    assert vox.loc[("sub-01", "first"), "dice"] == pytest.approx(250 / 275)
    summary = res["summary"].set_index(["method", "metric"])
    assert summary.loc[("dbsegment", "dice"), "n"] == 3
    cont = res["containment"].set_index(["method_a", "method_b"])
    assert cont.loc[("dbsegment", "first"), "n_sessions"] == 3
    assert cont.loc[("dbsegment", "first"), "containment_mean"] == 1.0
    assert cont.loc[("first", "dbsegment"), "containment_mean"] == pytest.approx((1 + 125 / 150 + 125 / 150) / 3)
    # Datasets without sessions: session_id written as n/a.
    back = read_tsv(tmp_path / "group" / "agreement_voxelwise.tsv")
    assert back["session_id"].isna().all()


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory):
    """A small derivatives tree of real thalamus masks (labels 10/49; AAL 77/78)."""

    def thal(parts, labels=(10, 49)):
        img = nib.load(str(shared_file(*parts)))
        data = np.asanyarray(img.dataobj)
        return (data == labels[0]) | (data == labels[1]), img.affine

    fs72 = thal(("freesurfer_bert_7.2", "mri", "aseg.mgz"))
    fs60 = thal(("freesurfer_bert_6.0", "mri", "aseg.mgz"))
    s03 = thal(("synthseg_label_maps", "training_seg_03.nii.gz"))
    s04 = thal(("synthseg_label_maps", "training_seg_04.nii.gz"))  # same grid as 03
    aal = thal(("colin27_aal", "AAL.nii"), labels=(77, 78))
    root = tmp_path_factory.mktemp("derivatives")

    def put(name, mask):
        return _save(root / f"{name}_space-T1w_label-thalamus_mask.nii.gz", mask[0], mask[1])

    # Each real mask is written once and used in several roles.
    f72, f60, f03, f04, faal = (put(n, m) for n, m in
                                (("fs72", fs72), ("fs60", fs60), ("s03", s03), ("s04", s04), ("aal", aal)))
    methods = [
        # bert: FreeSurfer 6.0 as a method, 7.2 as "manual"; first = 7.2 itself (a perfect method).
        ("sub-bert", "ses-1", "freesurfer", f60),
        ("sub-bert", "ses-1", "first", f72),
        # SynthSeg training maps 03 and 04 share a grid: each is the other's "method".
        ("sub-s03", "ses-1", "freesurfer", f04),
        ("sub-s03", "ses-1", "first", f03),
        ("sub-s04", "ses-1", "freesurfer", f03),
        ("sub-s04", "ses-1", "first", f04),
        # Colin27 AAL: a session without manual mask (containment only).
        ("sub-colin", "ses-1", "aal", faal),
    ]
    manual = [("sub-bert", "ses-1", f72), ("sub-s03", "ses-1", f03), ("sub-s04", "ses-1", f04)]
    out = tmp_path_factory.mktemp("out") / "group"
    res = _tables(methods, manual, out)
    return res, out


def test_real_end_to_end_values(real_tree):
    res, _ = real_tree
    vox = res["voxelwise"].set_index(["participant_id", "method"])
    assert len(vox) == 6  # colin has no manual mask
    bert = vox.loc[("sub-bert", "freesurfer")]
    assert bert["dice"] == pytest.approx(0.9597, abs=1e-3)
    # Volumes = voxel count x 1 mm^3: 8431 + 8629 (7.2) and 8483 + 8781 (6.0) voxels (data README).
    assert bert["volume_manual_ml"] == pytest.approx(17.060)
    assert bert["volume_method_ml"] == pytest.approx(17.264)
    assert (bert["tp"] + bert["fn"], bert["tp"] + bert["fp"]) == (17060, 17264)
    assert (vox.xs("first", level="method")["dice"] == 1.0).all()
    # 03 vs 04 and 04 vs 03: same Dice, precision and sensitivity swapped.
    a, b = vox.loc[("sub-s03", "freesurfer")], vox.loc[("sub-s04", "freesurfer")]
    assert a["dice"] == pytest.approx(b["dice"])
    assert a["precision"] == pytest.approx(b["sensitivity"])

    vol = res["volumetric"].set_index("method")
    assert list(vol["n"]) == [3, 3]
    assert vol.loc["first", "ccc"] == pytest.approx(1.0)
    assert vol.loc["first", "bias_ml"] == pytest.approx(0.0, abs=1e-12)
    manual_ml = vox.xs("freesurfer", level="method")["volume_manual_ml"]
    method_ml = vox.xs("freesurfer", level="method")["volume_method_ml"]
    assert vol.loc["freesurfer", "bias_ml"] == pytest.approx((method_ml - manual_ml).mean())
    assert vol.loc["freesurfer", "loa_high_ml"] - vol.loc["freesurfer", "bias_ml"] == pytest.approx(
        1.96 * vol.loc["freesurfer", "sd_ml"]
    )

    cont = res["containment"].set_index(["method_a", "method_b"])
    assert len(cont) == 9  # 3 methods x 3
    assert cont.loc[("aal", "aal"), "containment_mean"] == 1.0
    assert cont.loc[("aal", "first"), "n_sessions"] == 0 and np.isnan(cont.loc[("aal", "first"), "containment_mean"])
    # containment(first -> freesurfer) averaged over 3 sessions = mean sensitivity of freesurfer vs manual.
    assert cont.loc[("first", "freesurfer"), "containment_mean"] == pytest.approx(
        vox.xs("freesurfer", level="method")["sensitivity"].mean()
    )

    pw = res["pairwise"]
    assert set(pw["metric"]) == {"dice", "precision", "sensitivity"}
    assert (pw[["method_a", "method_b"]].drop_duplicates().to_numpy() == [["first", "freesurfer"]]).all()


def test_real_end_to_end_files(real_tree):
    res, out = real_tree
    for key, name in TABLES.items():
        tsv = out / name
        sidecar = json.loads(tsv.with_suffix(".json").read_text())
        back = read_tsv(tsv)
        assert list(back.columns) == list(res[key].columns)
        assert set(sidecar) == set(back.columns), name
        assert all(isinstance(v.get("Description"), str) and v["Description"] for v in sidecar.values())
    assert json.loads((out / "agreement_volumetric.json").read_text())["bias_ml"]["Units"] == "mL"
    for stem in ("agreement_boxplots", "containment_heatmap", "agreement_scatter", "agreement_blandaltman"):
        for ext in ("png", "svg"):
            f = out / "figures" / f"{stem}.{ext}"
            assert f.stat().st_size > 1000, f
    assert not list(out.rglob(".*.tmp*"))  # no leftovers of the atomic writes


def test_method_masks_of_one_session_must_share_a_grid(tmp_path):
    a = _save(tmp_path / "a.nii.gz", _box((8, 8, 8), (2, 2, 2), (5, 5, 5)))
    b = _save(tmp_path / "b.nii.gz", _box((8, 8, 9), (2, 2, 2), (5, 5, 5)))
    with pytest.raises(ThalamusError) as err:
        _tables([("s1", "1", "first", a), ("s1", "1", "meshnet", b)], [], tmp_path / "g", figures=False)
    assert err.value.exit_code == 65 and "b.nii.gz" in str(err.value)
