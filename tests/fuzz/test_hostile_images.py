"""Fuzz corpus of hostile images and arguments at the participant level.

Each case is built at test time from bert (../shared/data), cropped small, and
checked for: the exit code, a message naming the file, no traceback on the
console, the input tree byte-identical, and no half-written or stale outputs
(a failed session publishes nothing new; its earlier outputs stay).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import urllib.error

import nibabel as nib
import numpy as np
import pytest

from tests.foundation.datasets import tree_digest
from tests.fuzz.image_cases import (
    cropped_bert,
    derivative_files,
    leftovers,
    run_cli,
    save_raw,
    sessions_table,
    with_header,
    write_dataset,
)
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

FS_ONLY = ["--methods", "freesurfer", "--skip-bids-validation", "--nprocs", "1"]


def _singular(img: nib.Nifti1Image) -> nib.Nifti1Image:
    sform = img.affine.copy()
    sform[:3, 2] = 0.0  # the third voxel axis maps to no world direction
    return with_header(img, sform=sform, qform_code=0)


def _zeros(img):
    return nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine)


def _constant(img):
    return nib.Nifti1Image(np.full(img.shape, 7, np.int16), img.affine)


def _all_nan(img):
    return nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine)


def _with_nonfinite(img: nib.Nifti1Image, count: int = 300) -> nib.Nifti1Image:
    data = np.asanyarray(img.dataobj).astype(np.float32)
    picked = np.random.default_rng(13).choice(data.size, size=count, replace=False)
    data[np.unravel_index(picked[: count // 2], data.shape)] = np.nan
    data[np.unravel_index(picked[count // 2:], data.shape)] = np.inf
    assert np.count_nonzero(~np.isfinite(data)) == count
    return nib.Nifti1Image(data, img.affine)


def _sheared(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """sform sheared and stretched (voxel 1.2 mm3); qform and pixdim hold the 1 mm3 geometry (they disagree)."""
    sform = img.affine.copy()
    sform[:3, :3] = sform[:3, :3] @ np.array([[1.2, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return with_header(img, sform=sform, qform=img.affine)


# --- sessions that fail in the preflight ------------------------------------------------------

PREFLIGHT_CASES = {
    # subject: (case, T1w maker, extra images maker, expected message, the file it names)
    "01": ("t1w_all_zeros", _zeros, None, "image has no signal", "sub-01_T1w.nii.gz"),
    "02": ("t1w_constant", _constant, None, "image has no signal", "sub-02_T1w.nii.gz"),
    "03": ("t1w_all_nan", _all_nan, None, "image has no signal", "sub-03_T1w.nii.gz"),
    "04": ("t1w_singular_affine", _singular, None, "affine is not invertible", "sub-04_T1w.nii.gz"),
    "05": ("flair_all_zeros", None, lambda img: {"FLAIR": _zeros(img)}, "image has no signal",
           "sub-05_FLAIR.nii.gz"),
    "06": ("t2w_singular_affine", None, lambda img: {"T2w": _singular(img)}, "affine is not invertible",
           "sub-06_T2w.nii.gz"),
}


@pytest.fixture(scope="module")
def preflight_run(tmp_path_factory):
    """One run over six subjects, each with one defect that the preflight must catch (one process start)."""
    root = tmp_path_factory.mktemp("preflight")
    clean = cropped_bert()
    bids, subjects_dir = write_dataset(root, subjects=tuple(PREFLIGHT_CASES))
    for subject, (_, make_t1w, make_extra, _, _) in PREFLIGHT_CASES.items():
        anat = bids / f"sub-{subject}" / "anat"
        if make_t1w:
            save_raw(make_t1w(clean), anat / f"sub-{subject}_T1w.nii.gz")
        for suffix, img in (make_extra(clean) if make_extra else {}).items():
            save_raw(img, anat / f"sub-{subject}_{suffix}.nii.gz")
    before = tree_digest(bids)
    out = root / "out"
    result = run_cli([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                      "-w", str(root / "work"), *FS_ONLY], timeout=300)
    return {"result": result, "out": out, "bids": bids, "before": before,
            "rows": {row["session"]: row for row in sessions_table(out)}}


def test_preflight_failures_exit_1_and_leave_nothing(preflight_run):
    result, out = preflight_run["result"], preflight_run["out"]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert tree_digest(preflight_run["bids"]) == preflight_run["before"]
    assert derivative_files(out) == {}  # nothing new: no masks, volumes or reports
    assert not list(out.glob("sub-*.html"))
    assert leftovers(out) == []


@pytest.mark.parametrize("subject", sorted(PREFLIGHT_CASES), ids=[c[0] for _, c in sorted(PREFLIGHT_CASES.items())])
def test_session_fails_in_the_preflight_naming_the_file(preflight_run, subject):
    _, _, _, message, named = PREFLIGHT_CASES[subject]
    lines = [line for line in preflight_run["result"].stderr.splitlines()
             if message in line and f"sub-{subject}" in line]
    assert lines and named in lines[0], preflight_run["result"].stderr[-3000:]
    row = preflight_run["rows"][f"sub-{subject}"]
    assert row["status"] == "failed" and message in row["reason"] and named in row["reason"]


# --- usage errors and missing methods ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    bids, subjects_dir = write_dataset(root)
    return bids, subjects_dir, tree_digest(bids)


@pytest.mark.parametrize("filters, key", [
    ({"t1w": 5}, "'t1w'"),
    ({"t1w": {"colour": "blue"}}, "t1w.colour"),
    ({"t1w": {"acquisition": {"nested": 1}}}, "t1w.acquisition"),
    ({"t1w": {"subject": "02"}}, "t1w.subject"),
    ({"t1": {}}, "'t1'"),
])
def test_bad_bids_filter_file_is_a_usage_error(tmp_path, small_dataset, capsys, filters, key):
    bids, _, before = small_dataset
    filter_file = tmp_path / "filter.json"
    filter_file.write_text(json.dumps(filters))
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--bids-filter-file", str(filter_file),
                 "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 64
    assert key in err and str(filter_file) in err and "Traceback" not in err
    assert not out.exists() and tree_digest(bids) == before


@pytest.mark.parametrize("text, key", [
    ("columns: 5\n", "'columns'"),
    ("columns:\n  age: 5\n", "'columns.age'"),
    ("longitudinal: [1, 2]\n", "'longitudinal'"),
])
def test_bad_clinical_config_is_a_usage_error(tmp_path, small_dataset, capsys, text, key):
    bids, _, before = small_dataset
    config = tmp_path / "clinical.yaml"
    config.write_text(text)
    for level in ("participant", "group"):
        code = main([str(bids), str(tmp_path / "out"), level, "--clinical-config", str(config),
                     "-w", str(tmp_path / "work")])
        err = capsys.readouterr().err
        assert code == 64
        assert key in err and str(config) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and tree_digest(bids) == before


@pytest.mark.parametrize("label", ["01/../../X", "../01", "sub-01/x", "01 02", "ä1"])
def test_reports_only_validates_labels_like_the_participant_level(tmp_path, small_dataset, caplog, label):
    bids, _, before = small_dataset
    out = tmp_path / "deep" / "out"
    for extra in ([], ["--reports-only"]):
        caplog.clear()
        code = main([str(bids), str(out), "participant", "--participant-label", label, *extra,
                     "-w", str(tmp_path / "work"), "--skip-bids-validation"])
        assert code == 66 and label.removeprefix("sub-") in caplog.text and "Traceback" not in caplog.text
    assert not list(tmp_path.rglob("*.html")) and not (tmp_path / "X").exists()
    assert not list(out.rglob("sub-*")) and tree_digest(bids) == before


def test_reports_only_unknown_label_exits_66(tmp_path, small_dataset, caplog):
    bids, _, _ = small_dataset
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--participant-label", "77", "--reports-only",
                 "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == 66 and "77" in caplog.text and "not found" in caplog.text
    assert not list(tmp_path.rglob("*.html"))


def test_no_method_can_run_exits_66_listing_each_method(tmp_path, small_dataset, caplog, monkeypatch):
    """The README's first command on a machine without network, tools or models."""
    from thalamus_bidsapp.tools import weights

    bids, _, before = small_dataset
    for var in ("THALAMUS_MESHNET_MODEL", "MODEL_PATH", "FSLDIR", "FREESURFER_HOME", "DBSEGMENT_MODEL_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights, "_urlopen", offline)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == 66
    message = next(r.getMessage() for r in caplog.records if "no segmentation method can run" in r.getMessage())
    for method in ("freesurfer", "first", "dbsegment", "meshnet", "mindglide"):
        assert f"- {method}: " in message
    assert "Traceback" not in caplog.text
    assert derivative_files(out) == {} and tree_digest(bids) == before


# --- whole runs: repaired images, and outputs that cannot be written ----------------------------


@pytest.mark.slow
def test_nonfinite_voxels_and_sheared_sform(tmp_path):
    """sub-01: 300 NaN/Inf voxels, set to 0; sub-02: a sheared sform that disagrees with the qform."""
    clean = cropped_bert()
    bids, subjects_dir = write_dataset(tmp_path, _with_nonfinite(clean), subjects=("01", "02"))
    sheared = _sheared(clean)
    save_raw(sheared, bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    before = tree_digest(bids)
    out = tmp_path / "out"
    result = run_cli([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                      "-w", str(tmp_path / "work"), *FS_ONLY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert tree_digest(bids) == before
    nonfinite = [line for line in result.stderr.splitlines() if "non-finite" in line]
    assert nonfinite and "sub-01_T1w.nii.gz" in nonfinite[0] and "300 " in nonfinite[0]
    disagree = [line for line in result.stderr.splitlines() if "qform and sform disagree" in line]
    assert disagree and "sub-02_T1w.nii.gz" in disagree[0] and "using the sform" in disagree[0]

    anat1, anat2 = out / "sub-01" / "anat", out / "sub-02" / "anat"
    sidecar1 = json.loads((anat1 / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.json").read_text())
    assert sidecar1["InputGeometry"]["T1w"]["NonFiniteVoxelsSetToZero"] == 300
    assert sidecar1["Sources"] and "work" not in json.dumps(
        json.loads((anat1 / "sub-01_desc-preproc_T1w.json").read_text())["Sources"])
    assert np.isfinite(nib.load(str(anat1 / "sub-01_desc-preproc_T1w.nii.gz")).get_fdata()).all()

    sidecar2 = json.loads((anat2 / "sub-02_space-T1w_label-thalamus_desc-freesurfer_mask.json").read_text())
    assert sidecar2["InputGeometry"]["T1w"]["AffineUsed"] == "sform"
    assert sidecar2["InputGeometry"]["T1w"]["QformSformAgree"] is False
    volumes_sidecar = json.loads((anat2 / "sub-02_label-thalamus_volumes.json").read_text())
    assert volumes_sidecar["InputGeometry"]["T1w"]["AffineUsed"] == "sform"
    volumes = read_tsv(anat2 / "sub-02_label-thalamus_volumes.tsv").iloc[0]
    det = abs(np.linalg.det(sheared.header.get_sform()[:3, :3]))
    assert volumes["volume_mm3"] == pytest.approx(volumes["n_voxels"] * det, rel=1e-6)
    zooms = np.prod(nib.load(str(bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz")).header.get_zooms()[:3])
    assert det == pytest.approx(1.2) and zooms == pytest.approx(1.0)  # the zooms would be 17% short
    assert leftovers(out) == []


def _run_in_process(bids, subjects_dir, tmp_path, out):
    return main([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                 "-w", str(tmp_path / "work"), *FS_ONLY])


@pytest.mark.slow
def test_disk_full_while_publishing_leaves_nothing_new(tmp_path, monkeypatch, caplog):
    from thalamus_bidsapp.bidsio import derivatives

    bids, subjects_dir = write_dataset(tmp_path)
    before = tree_digest(bids)
    original = derivatives.publish

    def disk_full(in_file, out_file, sidecar=None):
        if out_file.name.endswith("_volumes.tsv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_file))
        return original(in_file, out_file, sidecar)

    monkeypatch.setattr(derivatives, "publish", disk_full)
    out = tmp_path / "out"
    code = _run_in_process(bids, subjects_dir, tmp_path, out)
    assert code == 73
    final = out / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv"
    (row,) = sessions_table(out)
    assert row["status"] == "failed" and f"cannot write {final}" in row["reason"]
    assert f"cannot write {final}" in caplog.text
    assert derivative_files(out) == {} and leftovers(out) == []
    assert tree_digest(bids) == before

    # With space again, the rerun completes.
    monkeypatch.setattr(derivatives, "publish", original)
    assert _run_in_process(bids, subjects_dir, tmp_path, out) == 0
    assert final.is_file() and leftovers(out) == []


@pytest.mark.slow
def test_unwritable_anat_folder_keeps_the_earlier_outputs(tmp_path, monkeypatch, caplog):
    from thalamus_bidsapp.bidsio import staging

    bids, subjects_dir = write_dataset(tmp_path)
    out = tmp_path / "out"
    assert _run_in_process(bids, subjects_dir, tmp_path, out) == 0
    earlier = derivative_files(out)
    assert any(name.endswith("_volumes.tsv") for name in earlier)

    # The T1w is replaced by a brighter one: every output changes, but sub-01/anat cannot be written.
    t1w = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    img = nib.load(str(t1w))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * 1.5, img.affine, img.header), str(t1w))
    before = tree_digest(bids)
    anat = out / "sub-01" / "anat"
    if os.geteuid() != 0:
        anat.chmod(0o555)
    else:  # root ignores permissions: the same error, raised where the OS would raise it
        original = staging._move

        def read_only(staged, final):
            if final.parent == anat:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(final))
            return original(staged, final)

        monkeypatch.setattr(staging, "_move", read_only)
    try:
        code = _run_in_process(bids, subjects_dir, tmp_path, out)
    finally:
        anat.chmod(0o755)
    assert code == 73
    (row,) = sessions_table(out)
    assert row["status"] == "failed" and f"cannot write {anat}" in row["reason"]
    assert "Traceback" not in caplog.text
    # The derivatives are byte-identical to the earlier run's (the report is rewritten to show the failure).
    now = derivative_files(out)
    assert {k: v for k, v in now.items() if "/anat/" in k} == {k: v for k, v in earlier.items() if "/anat/" in k}
    assert leftovers(out) == [] and tree_digest(bids) == before
