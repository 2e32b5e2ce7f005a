"""One bad session does not stop the others; the exit status and logs name it."""

from __future__ import annotations

import gzip

import pytest

from tests.foundation.datasets import bert_t1w, make_bert_dataset
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main


#: The tests that read mixed_run, a participant run of three sessions: about 2 CPU-minutes, so not in the fast tier.
SLOW_RUN = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    bids, subjects_dir = make_bert_dataset(root, subjects=("01", "02"))
    # sub-02: a truncated gzip stream; its header still reads, its data does not.
    t1w = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    t1w.write_bytes(t1w.read_bytes()[: 200_000])
    # sub-03: no T1w, only a FLAIR.
    anat = bids / "sub-03" / "anat"
    anat.mkdir(parents=True)
    import nibabel as nib

    nib.save(bert_t1w(), str(anat / "sub-03_FLAIR.nii.gz"))
    out = root / "out"
    code = main([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                 "-w", str(root / "work"), "--nprocs", "1", "--skip-bids-validation"])
    (run_dir,) = [p for p in (out / "logs").iterdir() if p.is_dir()]
    return {"code": code, "out": out, "status": read_tsv(run_dir / "sessions.tsv"), "run_dir": run_dir}


@SLOW_RUN
def test_exit_status_is_1(mixed_run):
    assert mixed_run["code"] == 1


@SLOW_RUN
def test_good_session_completes(mixed_run):
    anat = mixed_run["out"] / "sub-01" / "anat"
    assert (anat / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz").is_file()
    assert (anat / "sub-01_label-thalamus_volumes.tsv").is_file()


@SLOW_RUN
def test_failed_sessions_are_named_with_reasons(mixed_run):
    status = mixed_run["status"].set_index("session")
    assert status.loc["sub-01", "status"] == "ok"
    assert status.loc["sub-02", "status"] == "failed"
    assert "sub-02_T1w.nii.gz" in status.loc["sub-02", "reason"]
    assert status.loc["sub-03", "status"] == "failed"
    assert "no T1w" in status.loc["sub-03", "reason"]
    # The truncated image is caught by the preflight, before any tool runs.
    assert "cannot read" in status.loc["sub-02", "reason"]


@SLOW_RUN
def test_failed_session_writes_no_partial_outputs(mixed_run):
    anat = mixed_run["out"] / "sub-02" / "anat"
    assert not list(anat.glob("*volumes.tsv")) if anat.exists() else True
    assert not list(mixed_run["out"].rglob(".*.tmp*"))


def test_only_session_without_t1w_exits_66(tmp_path, caplog):
    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    import nibabel as nib

    nib.save(bert_t1w(), str(anat / "sub-01_FLAIR.nii.gz"))
    assert main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w"),
                 "--skip-bids-validation"]) == 66
    assert "no T1w" in caplog.text


def test_gzip_truncation_is_really_corrupt(tmp_path):
    # Guard for the fixture above: the truncated file must fail when read whole.
    path = tmp_path / "x.nii.gz"
    import nibabel as nib

    nib.save(bert_t1w(), str(path))
    path.write_bytes(path.read_bytes()[:200_000])
    with pytest.raises((EOFError, OSError, gzip.BadGzipFile, ValueError)):
        nib.load(str(path)).get_fdata()
