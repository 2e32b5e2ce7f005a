"""End to end: a FreeSurfer subject that belongs to another person is flagged by the session QC.

bert's T1w (cropped around the thalamus) is segmented by FreeSurfer from a
subjects folder whose ``sub-01`` holds subject2's aseg (with bert's
aseg.stats, so the eTIV is plausible), and by the test suite's fake FIRST,
which writes bert's own aseg thalamus. The two masks lie about 19 mm apart:
the QC must fail them, in the session's QC table, its volumes table and the
participant report; the thalamus prior from template space singles out the
FreeSurfer mask as the one in the wrong place (the crop and the fast
registration schedule make the prior itself a few mm off, so only the
comparison between the two masks is asserted).
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
from tests.foundation.datasets import write_description
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

FAKES = Path(__file__).resolve().parents[1] / "fakes"
HALF_WIDTH = (48, 30, 48)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wrong_subject_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrong_subject")
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    centre = np.array(np.nonzero(np.isin(np.asanyarray(aseg.dataobj), [10, 49]))).mean(axis=1).round().astype(int)
    window = tuple(slice(c - h, c + h) for c, h in zip(centre, HALF_WIDTH))
    brain = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz")))
    t1w = nib.Nifti1Image(np.asanyarray(brain.dataobj)[window].astype(np.float32), brain.slicer[window].affine)
    bids = root / "bids"
    write_description(bids, "bert with another person's FreeSurfer subject")
    (bids / "sub-01" / "anat").mkdir(parents=True)
    nib.save(t1w, str(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t35\tM\n")
    subject = root / "freesurfer" / "sub-01"
    (subject / "mri").mkdir(parents=True)
    (subject / "stats").mkdir()
    (subject / "mri" / "aseg.mgz").symlink_to(shared_file("freesurfer_subject2", "aparc.a2009s+aseg.mgz"))
    (subject / "stats" / "aseg.stats").symlink_to(shared_file("freesurfer_bert_7.2", "stats", "aseg.stats"))
    fsl = root / "fsl"
    (fsl / "bin").mkdir(parents=True)
    (fsl / "etc").mkdir()
    (fsl / "etc" / "fslversion").write_text("6.0.7.9\n")
    shutil.copy2(FAKES / "run_first_all", fsl / "bin" / "run_first_all")
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FSLDIR", str(fsl))
        patch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        patch.setenv("FAKE_FIRST_ASEG", str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
        code = main([str(bids), str(out), "participant", "--methods", "freesurfer", "first",
                     "--fs-subjects-dir", str(subject.parent), "-w", str(root / "work"), "--nprocs", "1"])
    return {"out": out, "code": code}


def test_the_session_runs_and_its_qc_fails(wrong_subject_run):
    out = wrong_subject_run["out"]
    assert wrong_subject_run["code"] == 0  # QC flags, it does not fail the run
    anat = out / "sub-01" / "anat"
    qc = read_tsv(anat / "sub-01_label-thalamus_desc-segmentation_qc.tsv")
    dice = qc[qc["check"] == "dice_methods"].set_index("method")
    assert set(dice.index) == {"freesurfer", "first"}
    assert (dice["status"] == "fail").all() and (dice["value"] < 0.5).all()
    assert dice["reason"].str.contains("another person's segmentation").all()
    # The template prior (17a) tells which of the two is wrong: another person's thalamus barely touches it.
    prior = qc[qc["check"] == "dice_prior"].set_index("method")
    assert prior.loc["freesurfer", "status"] == "fail"
    assert prior.loc["freesurfer", "value"] < 0.5 * prior.loc["first", "value"]
    volumes = read_tsv(anat / "sub-01_label-thalamus_volumes.tsv")
    assert set(volumes["qc_status"]) == {"fail"}
    report = (out / "sub-01.html").read_text()
    assert 'class="qc-light fail"' in report and "dice_methods" in report
