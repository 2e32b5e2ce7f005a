"""``--meshnet-sides off`` through the participant level: no sides, and every output says so.

bert's T1w with the real MeshNet, no left/right model anywhere (the variable
points to an empty folder): the run goes on only because bilateral only was
asked for, and the volumes, QC table, sidecar and report say what was not run.
"""

from __future__ import annotations

import json

import pytest

from tests.foundation.datasets import make_bert_dataset
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

SIDE_CHECKS = {"components_left", "components_right", "lr_ratio", "centroid_left", "centroid_right", "side_swap"}


@pytest.fixture(scope="module")
def bilateral_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bilateral")
    bids, _ = make_bert_dataset(root)
    (root / "empty").mkdir()
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THALAMUS_MESHNET_SIDES_MODEL", str(root / "empty"))
        refused = main([str(bids), str(root / "refused"), "participant", "--methods", "meshnet", "--template",
                        "none", "-w", str(root / "work_refused")])
        code = main([str(bids), str(out), "participant", "--methods", "meshnet", "--meshnet-sides", "off",
                     "--template", "none", "-w", str(root / "work"), "--nprocs", "1", "--omp-nthreads", "2"])
    return {"out": out, "code": code, "refused": refused, "anat": out / "sub-01" / "anat"}


def test_without_the_model_the_run_is_refused_and_with_off_it_runs(bilateral_run):
    assert bilateral_run["refused"] == 66
    assert bilateral_run["code"] == 0


def test_no_side_rows_and_the_sidecar_says_why(bilateral_run):
    anat = bilateral_run["anat"]
    volumes = read_tsv(anat / "sub-01_label-thalamus_volumes.tsv")
    assert set(volumes.loc[volumes["method"] == "meshnet", "hemisphere"]) == {"bilateral"}
    sidecar = json.loads((anat / "sub-01_space-T1w_label-thalamus_desc-meshnet_mask.json").read_text())
    assert sidecar["Sides"]["Run"] is False and "--meshnet-sides off" in sidecar["Sides"]["Reason"]
    assert not list(anat.glob("*_desc-meshnet_dseg.nii.gz"))


def test_qc_and_report_say_the_side_checks_were_not_run(bilateral_run):
    qc = read_tsv(bilateral_run["anat"] / "sub-01_label-thalamus_desc-segmentation_qc.tsv")
    sides = qc[qc["check"].isin(SIDE_CHECKS)]
    assert len(sides) == len(SIDE_CHECKS) and (sides["status"] == "skipped").all()
    assert sides["reason"].str.contains("bilateral only").all()
    html = (bilateral_run["out"] / "sub-01.html").read_text()
    assert "incomplete" in html and 'qc-light pass"' not in html
    assert "No left and right thalamus for meshnet" in html
