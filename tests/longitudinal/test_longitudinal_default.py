"""The longitudinal mode with default options: two T1w sessions get the change table, one session is left alone.

Whole participant runs through the CLI on bert's T1w cropped around the
thalami, with FSL FIRST as the test suite's fake ``run_first_all`` (bert's
aseg thalamus) and the SyN to the template replaced by the identity, so that
each run takes seconds; tests/longitudinal/test_longitudinal_pipeline.py runs
the real networks and SyN.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import shared_file
from tests.fuzz.dataset_cases import add_t1w, write_description
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

#: Default options but for the inputs: FIRST only (fake), no template space.
OPTIONS = ("--methods", "first", "--template", "none", "--nprocs", "1", "--skip-bids-validation")


@pytest.fixture
def first_fake(fsl_home, monkeypatch):
    monkeypatch.setenv("FAKE_FIRST_ASEG", str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    return fsl_home


def _dataset(root, sessions: tuple[str, ...]):
    bids = root / "bids"
    write_description(bids, "bert, default longitudinal mode")
    for label in sessions:
        add_t1w(bids, "01", label)
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t40\tF\n")
    return bids


def _run_dir(out):
    (run_dir,) = [p for p in (out / "logs").iterdir() if p.is_dir()]
    return run_dir


def test_two_sessions_get_the_change_table_by_default(tmp_path, first_fake, cheap_syn):
    bids, out = _dataset(tmp_path, ("1", "2")), tmp_path / "out"
    assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), *OPTIONS]) == 0
    run_dir = _run_dir(out)
    assert json.loads((run_dir / "config.json").read_text())["longitudinal"] == "auto"
    assert len(cheap_syn) == 2  # one SyN per session
    table = read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv")
    long = table[table["mode"] == "longitudinal"]
    assert set(long["method"]) == {"first"} and set(long["hemisphere"]) == {"left", "right", "bilateral"}
    assert set(table["mode"]) == {"longitudinal", "cross-sectional"}
    for label in ("1", "2"):
        anat = out / "sub-01" / f"ses-{label}" / "anat"
        assert (anat / f"sub-01_ses-{label}_space-T1w_label-thalamus_desc-firstLong_mask.nii.gz").is_file()
    assert json.loads((run_dir / "longitudinal.json").read_text())["sub-01"].startswith("ok: 2 sessions")


def test_one_session_is_cross_sectional_only_and_the_log_says_why(tmp_path, first_fake, cheap_syn, caplog):
    bids, out = _dataset(tmp_path, ("1",)), tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), *OPTIONS]) == 0
    assert "sub-01: longitudinal mode not run: 1 session with a T1w (two or more are needed)" in caplog.text
    assert (out / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-thalamus_volumes.tsv").is_file()
    assert not list(out.rglob("*desc-longitudinal_volumes.tsv")) and not list(out.rglob("*Long_mask.nii.gz"))
    assert not cheap_syn and not (_run_dir(out) / "longitudinal.json").exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
