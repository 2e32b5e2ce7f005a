"""End to end on a real T1w: two sessions (a rescan and a rescan with 2 % thalamic atrophy) through the CLI."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import write_description
from tests.longitudinal.simulate import Contraction, covering_ball, rescan
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.stats.change import CHANGE_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    t1w = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz")))
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    original = nib.Nifti1Image(np.asarray(t1w.dataobj, dtype=np.float32), t1w.affine)
    thalamus = nib.Nifti1Image(np.isin(np.asarray(aseg.dataobj), (10, 49)).astype(np.uint8), aseg.affine)
    center, radius = covering_ball(thalamus)
    root = tmp_path_factory.mktemp("longitudinal")
    bids = root / "bids"
    write_description(bids, "bert rescanned")
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t40\n")
    for label, seed, change in (("1", 1, 0.0), ("2", 2, -0.02)):
        anat = bids / "sub-01" / f"ses-{label}" / "anat"
        anat.mkdir(parents=True)
        contraction = Contraction(center, radius, change) if change else None
        nib.save(rescan(original, seed, contraction=contraction), anat / f"sub-01_ses-{label}_T1w.nii.gz")
    # Dates out of label order are not needed here; a 2-year interval gives the annualized column.
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-1\t2020-01-01T10:00:00\n"
                                                          "ses-2\t2022-01-01T10:00:00\n")
    out, work = root / "out", root / "work"
    args = [str(bids), str(out), "participant", "--methods", "meshnet", "--template", "none", "-w", str(work),
            "--longitudinal", "auto"]
    code = main(args)
    group = main([str(bids), str(out), "group", "-w", str(work)])
    return {"out": out, "code": code, "group": group, "args": args}


def _long_rows(out):
    table = read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv")
    return table, table[table["mode"] == "longitudinal"].set_index("hemisphere")


def test_change_table_recovers_the_atrophy_to_the_target(two_sessions):
    assert two_sessions["code"] == 0
    _, long = _long_rows(two_sessions["out"])
    assert long.loc["bilateral", "change_pct"] == pytest.approx(-2.0, abs=0.3)
    for side in ("left", "right"):
        assert long.loc[side, "change_pct"] == pytest.approx(-2.0, abs=0.5)


def test_change_table(two_sessions):
    assert two_sessions["code"] == 0 and two_sessions["group"] == 0
    out = two_sessions["out"]
    table, long = _long_rows(out)
    assert tuple(table.columns) == CHANGE_COLUMNS
    assert set(table["mode"]) == {"longitudinal", "cross-sectional"}
    assert set(long.index) == {"left", "right", "bilateral"}
    assert -2.5 < long.loc["bilateral", "change_pct"] < -1.0  # the direction and the order of the change
    assert long.loc["bilateral", "interval_years"] == pytest.approx(731 / 365.25)
    assert long.loc["bilateral", "annualized_change_pct"] == pytest.approx(
        long.loc["bilateral", "change_pct"] / long.loc["bilateral", "interval_years"])
    group = read_tsv(out / "group" / "longitudinal_change.tsv")
    assert tuple(group.columns) == CHANGE_COLUMNS and len(group) == len(table)


def test_long_masks_and_sidecars(two_sessions):
    out = two_sessions["out"]
    for label in ("1", "2"):
        anat = out / "sub-01" / f"ses-{label}" / "anat"
        mask = anat / f"sub-01_ses-{label}_space-T1w_label-thalamus_desc-meshnetLong_mask.nii.gz"
        data = np.asarray(nib.load(str(mask)).dataobj)
        assert 10000 < data.sum() < 25000  # voxels of an adult thalamus at 1 mm
        sidecar = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Template"] == "bids::sub-01/anat/sub-01_desc-longitudinaltemplate_T1w.nii.gz"
        assert (anat / f"sub-01_ses-{label}_from-T1w_to-longitudinal_mode-image_xfm.txt").is_file()
    assert (out / "sub-01" / "anat" / "sub-01_desc-longitudinaltemplate_T1w.nii.gz").is_file()


def test_rerun_reuses_the_template(two_sessions, caplog):
    with caplog.at_level(logging.INFO):
        assert main(two_sessions["args"]) == 0
    assert "longitudinal results reused" in caplog.text
