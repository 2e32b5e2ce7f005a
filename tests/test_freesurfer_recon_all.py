"""FreeSurfer without a finished subject: recon-all's command, a fake recon-all run, the licence."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import make_bert_dataset
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.tools import freesurfer

FAKES = Path(__file__).parent / "fakes"


def test_recon_all_command_is_exact(tmp_path):
    t1w, t2w = tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"
    t1w.write_bytes(b"")
    t2w.write_bytes(b"")
    (tmp_path / "fs").mkdir()  # nipype's ReconAll requires an existing SUBJECTS_DIR
    assert freesurfer.recon_all_command(t1w, "sub-01_ses-1", tmp_path / "fs") == [
        "recon-all", "-all", "-i", str(t1w), "-subjid", "sub-01_ses-1", "-sd", str(tmp_path / "fs")]
    assert freesurfer.recon_all_command(t1w, "sub-01", tmp_path / "fs", t2w=t2w, nthreads=4) == [
        "recon-all", "-all", "-i", str(t1w), "-T2", str(t2w), "-openmp", "4", "-subjid", "sub-01",
        "-sd", str(tmp_path / "fs"), "-T2pial"]


@pytest.fixture
def freesurfer_home(tmp_path, monkeypatch):
    home = tmp_path / "freesurfer_home"
    (home / "bin").mkdir(parents=True)
    shutil.copy2(FAKES / "recon-all", home / "bin" / "recon-all")
    monkeypatch.setenv("FREESURFER_HOME", str(home))
    monkeypatch.setenv("FAKE_RECON_ALL_SUBJECT", str(shared_file("freesurfer_bert_7.2")))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.delenv("FS_LICENSE", raising=False)
    return home


@pytest.mark.slow
def test_recon_all_runs_when_no_subject_exists(tmp_path, freesurfer_home):
    (freesurfer_home / "license.txt").write_text("fake licence\n")
    bids, _ = make_bert_dataset(tmp_path)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--methods", "freesurfer", "-w", str(tmp_path / "work"),
                 "--nprocs", "1"])
    assert code == 0
    subject = out / "sourcedata" / "freesurfer" / "sub-01"
    assert "-all -i" in (subject / "scripts" / "recon-all.log").read_text()
    mask = nib.load(str(out / "sub-01" / "anat" / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz"))
    assert int(np.asanyarray(mask.dataobj).sum()) == 17060
    row = read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv").iloc[0]
    assert row["icv_ml"] == pytest.approx(1520.021264474)


def test_missing_licence_is_exit_66_naming_the_three_places(tmp_path, freesurfer_home, caplog):
    bids, _ = make_bert_dataset(tmp_path)
    code = main([str(bids), str(tmp_path / "out"), "participant", "--methods", "freesurfer",
                 "-w", str(tmp_path / "work")])
    assert code == 66
    for place in ("--fs-license-file", "$FS_LICENSE", "$FREESURFER_HOME/license.txt"):
        assert place in caplog.text


def test_missing_licence_skips_freesurfer_by_default(tmp_path, freesurfer_home, caplog):
    bids, _ = make_bert_dataset(tmp_path)
    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.config import Environment, RunConfig
    from thalamus_bidsapp.methods import ToolCheck, plan_methods

    # The environment is read once, into the configuration, as the command line does.
    config = RunConfig(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                       work_dir=tmp_path / "work", environment=Environment.from_environ(os.environ))
    session = SessionInputs(subject="01", session=None, t1w=bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    plan = plan_methods(session, config, ToolCheck(reasons={}))
    assert "freesurfer" not in plan.run
    assert "license" in plan.skipped["freesurfer"]
