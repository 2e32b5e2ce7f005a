"""FreeSurfer's longitudinal stream: the commands, reuse, rebuild of the base, the rows, the skips (fake recon-all)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.methods import ToolCheck
from thalamus_bidsapp.methods.freesurfer import METHOD as FREESURFER
from thalamus_bidsapp.stats.change import CHANGE_COLUMNS
from thalamus_bidsapp.tools import freesurfer_longitudinal as fl
from thalamus_bidsapp.workflows import longitudinal_streams as ls

FAKE = Path(__file__).parents[1] / "fakes" / "recon-all"
#: aseg voxels of the left thalamus relabelled as white matter in the second session (1 mm voxels).
REMOVED = 500


def test_stream_commands_are_exact(tmp_path):
    sd = tmp_path / "fs"
    sd.mkdir()
    assert fl.base_command("sub-01_base", ["sub-01_ses-1", "sub-01_ses-2"], sd) == [
        "recon-all", "-all", "-base", "sub-01_base", "-tp", "sub-01_ses-1", "-tp", "sub-01_ses-2", "-sd", str(sd)]
    assert fl.base_command("sub-01_base", ["sub-01_ses-1", "sub-01_ses-2", "sub-01_ses-3"], sd, nthreads=4) == [
        "recon-all", "-all", "-base", "sub-01_base", "-tp", "sub-01_ses-1", "-tp", "sub-01_ses-2",
        "-tp", "sub-01_ses-3", "-openmp", "4", "-sd", str(sd)]
    assert fl.long_command("sub-01_ses-2", "sub-01_base", sd) == [
        "recon-all", "-all", "-long", "sub-01_ses-2", "sub-01_base", "-sd", str(sd)]
    assert fl.long_id(fl.timepoint_id("01", "2"), fl.base_id("01")) == "sub-01_ses-2.long.sub-01_base"


@pytest.fixture
def stream(tmp_path, monkeypatch):
    """Two sessions with finished cross-sectional subjects (bert's aseg; the second with a smaller left thalamus)."""
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    licence = tmp_path / "license.txt"
    licence.write_text("fake licence\n")
    home = tmp_path / "freesurfer_home"
    (home / "bin").mkdir(parents=True)
    shutil.copy2(FAKE, home / "bin" / "recon-all")
    root = SimpleNamespace(sd=tmp_path / "fs", out=tmp_path / "out", bids=tmp_path / "bids", licence=licence,
                           home=home, aseg=aseg, thalamus={})
    data = np.asanyarray(aseg.dataobj)
    inside = np.argwhere(np.isin(data, (10, 49)))
    low, high = inside.min(0) - 6, inside.max(0) + 7
    # The T1w grid: a box of the conformed grid around the thalami, so the expected masks are the aseg's own voxels.
    root.box = tuple(slice(a, b) for a, b in zip(low, high))
    root.t1w_affine = aseg.affine @ np.vstack([np.column_stack([np.eye(3), low]), [0, 0, 0, 1]])
    (root.bids / "sub-01").mkdir(parents=True)
    pd.DataFrame({"session_id": ["ses-1", "ses-2", "ses-3"], "acq_time": ["2020-01-01", "2022-01-01", "2023-01-01"]}
                 ).to_csv(root.bids / "sub-01" / "sub-01_sessions.tsv", sep="\t", index=False)
    for label in ("1", "2"):
        add_session(root, label)
    return root


def add_session(root, label: str) -> None:
    data = np.asanyarray(root.aseg.dataobj).copy()
    if label != "1":
        left = np.argwhere(data == 10)
        data[tuple(left[:REMOVED].T)] = 2
    timepoint = root.sd / f"sub-01_ses-{label}"
    for folder in ("mri", "stats"):
        (timepoint / folder).mkdir(parents=True)
    nib.save(nib.MGHImage(data, root.aseg.affine, root.aseg.header), str(timepoint / "mri" / "aseg.mgz"))
    shutil.copy(shared_file("freesurfer_bert_7.2", "stats", "aseg.stats"), timepoint / "stats" / "aseg.stats")
    root.thalamus[label] = data[root.box]
    anat = root.out / "sub-01" / f"ses-{label}" / "anat"
    anat.mkdir(parents=True)
    shape = root.thalamus[label].shape
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), root.t1w_affine),
             anat / f"sub-01_ses-{label}_desc-preproc_T1w.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), root.t1w_affine),
             anat / f"sub-01_ses-{label}_space-T1w_desc-brain_mask.nii.gz")
    pd.DataFrame({"method": ["freesurfer"] * 3, "hemisphere": ["left", "right", "bilateral"],
                  "volume_ml": [8.0, 8.5, 16.5]}).to_csv(anat / f"sub-01_ses-{label}_label-thalamus_volumes.tsv",
                                                         sep="\t", index=False)


def config(root, *, recon_all: bool = True, methods=None):
    options = {"fs_subjects_dir": root.sd, "fs_license_file": root.licence}
    return SimpleNamespace(output_dir=root.out, bids_dir=root.bids, methods=methods, option=options.get,
                           environment=SimpleNamespace(freesurfer_home=root.home if recon_all else None))


def run(root, **kwargs) -> str:
    return ls.run_subject(config(root, **kwargs), FREESURFER, "01")


def table(root) -> pd.DataFrame:
    return read_tsv(root.out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv")


@pytest.mark.slow
def test_two_sessions_give_freesurfer_longitudinal_rows_and_masks(stream):
    assert run(stream) == "ok: 2 sessions measured, 3 change rows"
    for name in ("sub-01_base/base-tps", "sub-01_ses-1.long.sub-01_base/mri/aseg.mgz",
                 "sub-01_ses-2.long.sub-01_base/scripts/recon-all.done"):
        assert (stream.sd / name).is_file()
    rows = table(stream)
    assert list(rows.columns) == list(CHANGE_COLUMNS)
    long_rows = rows[rows["mode"] == "longitudinal"].set_index("hemisphere")
    assert set(long_rows["method"]) == {"freesurfer"}
    left, right = 8431 / 1000, 8629 / 1000
    assert long_rows.loc["left", "volume_from_ml"] == pytest.approx(left)
    assert long_rows.loc["left", "volume_to_ml"] == pytest.approx(left - REMOVED / 1000)
    assert long_rows.loc["right", "change_ml"] == pytest.approx(0.0)
    assert long_rows.loc["bilateral", "change_pct"] == pytest.approx(-100 * REMOVED / (1000 * (left + right)))
    assert long_rows.loc["left", "interval_years"] == pytest.approx(731 / 365.25)
    assert (long_rows["session_from"] == "ses-1").all() and (long_rows["session_to"] == "ses-2").all()
    # Without a table from the template step, the cross-sectional rows are there beside them.
    cross = rows[rows["mode"] == "cross-sectional"]
    assert len(cross) == 3 and (cross["change_ml"] == 0).all()
    for label in ("1", "2"):
        anat = stream.out / "sub-01" / f"ses-{label}" / "anat"
        dseg = nib.load(str(anat / f"sub-01_ses-{label}_space-T1w_seg-thalamus_desc-freesurferLong_dseg.nii.gz"))
        expected = np.where(stream.thalamus[label] == 10, 1, np.where(stream.thalamus[label] == 49, 2, 0))
        # Voxel for voxel the timepoint's aseg: the base's transform was undone (the fake shifts by 2, -3, 1 mm).
        np.testing.assert_array_equal(np.asanyarray(dseg.dataobj), expected)
        mask = anat / f"sub-01_ses-{label}_space-T1w_label-thalamus_desc-freesurferLong_mask.nii.gz"
        assert int(np.asanyarray(nib.load(str(mask)).dataobj).sum()) == int((expected > 0).sum())


@pytest.mark.slow
def test_rows_join_the_existing_table_and_replace_their_earlier_ones(stream):
    path = stream.out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv"
    path.parent.mkdir(parents=True)
    meshnet = {"participant_id": "sub-01", "method": "meshnet", "hemisphere": "bilateral", "session_from": "ses-1",
               "session_to": "ses-2", "volume_from_ml": 15.0, "volume_to_ml": 14.9, "change_ml": -0.1,
               "change_pct": -0.667, "interval_years": 2.0, "annualized_change_pct": -0.333, "mode": "longitudinal"}
    stale = {**meshnet, "method": "freesurfer", "volume_from_ml": 1.0}
    pd.DataFrame([meshnet, stale]).to_csv(path, sep="\t", index=False)
    run(stream)
    rows = table(stream)
    assert sorted(rows["method"]) == ["freesurfer"] * 3 + ["meshnet"]
    assert (rows["mode"] == "longitudinal").all()
    assert not (rows["volume_from_ml"] == 1.0).any()


@pytest.mark.slow
def test_finished_long_subjects_are_reused_without_recon_all(stream, monkeypatch, caplog):
    run(stream)
    first = table(stream)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    caplog.set_level(logging.INFO)
    assert run(stream, recon_all=False) == "ok: 2 sessions measured, 3 change rows"
    assert calls == []
    assert "reused" in caplog.text
    pd.testing.assert_frame_equal(table(stream), first)


@pytest.mark.slow
def test_a_new_session_rebuilds_the_base_and_its_long_subjects(stream, caplog):
    run(stream)
    add_session(stream, "3")
    caplog.set_level(logging.INFO)
    assert run(stream) == "ok: 3 sessions measured, 6 change rows"
    assert (stream.sd / "sub-01_base" / "base-tps").read_text().split() == [
        "sub-01_ses-1", "sub-01_ses-2", "sub-01_ses-3"]
    assert "was made from sub-01_ses-1, sub-01_ses-2" in caplog.text
    aside = sorted(p.name.split(".replaced-")[0] for p in stream.sd.glob("*.replaced-*"))
    assert aside == ["sub-01_base", "sub-01_ses-1.long.sub-01_base", "sub-01_ses-2.long.sub-01_base"]
    rows = table(stream)
    long_rows = rows[rows["mode"] == "longitudinal"]
    assert list(long_rows["session_to"].unique()) == ["ses-2", "ses-3"]
    assert long_rows.set_index(["session_to", "hemisphere"]).loc[("ses-3", "left"), "change_ml"] == pytest.approx(0.0)


def test_plan_reruns_an_unfinished_long_subject_only(tmp_path):
    sd = tmp_path / "fs"
    (sd / "sub-01_base" / "scripts").mkdir(parents=True)
    (sd / "sub-01_base" / "scripts" / "recon-all.done").write_text("")
    (sd / "sub-01_base" / "base-tps").write_text("sub-01_ses-2\nsub-01_ses-1\n")
    for name in ("sub-01_ses-1.long.sub-01_base", "sub-01_ses-2.long.sub-01_base"):
        (sd / name / "mri").mkdir(parents=True)
        (sd / name / "mri" / "aseg.mgz").write_bytes(b"")
    (sd / "sub-01_ses-1.long.sub-01_base" / "scripts").mkdir()
    (sd / "sub-01_ses-1.long.sub-01_base" / "scripts" / "recon-all.done").write_text("")
    plan = fl.plan_stream(sd, "01", ["sub-01_ses-1", "sub-01_ses-2"])
    assert not plan.run_base and plan.run_long == ["sub-01_ses-2"]
    assert plan.set_aside == [sd / "sub-01_ses-2.long.sub-01_base"]


def test_missing_recon_all_is_a_logged_skip_without_rows(stream, caplog):
    assert run(stream, recon_all=False) == ("skipped: recon-all is not installed (set FREESURFER_HOME); "
                                            "no freesurfer longitudinal rows")
    assert "FreeSurfer longitudinal stream skipped" in caplog.text and "sub-01_base" in caplog.text
    assert not (stream.out / "sub-01" / "anat").exists()
    assert not (stream.sd / "sub-01_base").exists()


def test_step_runs_only_with_freesurfer_among_the_methods(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sessions = [SimpleNamespace(subject="01", session=label, t1w=tmp_path / "t1w.nii.gz") for label in ("1", "2")]
    assert ls.longitudinal_streams_step(SimpleNamespace(), sessions, ToolCheck({"meshnet": None})) == {}
    assert "freesurfer is not among the run's methods" in caplog.text


def test_one_finished_timepoint_is_a_logged_skip(stream, caplog):
    shutil.rmtree(stream.sd / "sub-01_ses-2")
    assert run(stream) == "skipped: fewer than two finished timepoints; no freesurfer longitudinal rows"
    assert "no finished FreeSurfer subject sub-01_ses-2" in caplog.text


@pytest.mark.slow
def test_step_with_the_run_configuration_writes_freesurfer_rows(stream):
    from thalamus_bidsapp.config import Environment, RunConfig

    run_config = RunConfig(bids_dir=stream.bids, output_dir=stream.out, analysis_level="participant",
                           work_dir=stream.out / "work", methods=("freesurfer",),
                           method_options={"fs_subjects_dir": stream.sd, "fs_license_file": stream.licence},
                           environment=Environment({"FREESURFER_HOME": str(stream.home)}))
    sessions = [SimpleNamespace(subject="01", session=label, t1w=Path("t1w.nii.gz")) for label in ("1", "2")]
    outcomes = ls.longitudinal_streams_step(run_config, sessions, ToolCheck({"freesurfer": None}))
    assert outcomes == {"freesurfer": {"01": "ok: 2 sessions measured, 3 change rows"}}
    rows = table(stream)
    assert set(rows.loc[rows["mode"] == "longitudinal", "method"]) == {"freesurfer"}


@pytest.mark.slow
def test_a_failed_long_run_leaves_its_session_out_and_is_run_again_next_time(stream, monkeypatch, caplog):
    add_session(stream, "3")
    monkeypatch.setenv("FAKE_RECON_ALL_FAIL", "sub-01_ses-2.long.sub-01_base")
    assert run(stream) == "ok: 2 sessions measured, 3 change rows"
    assert "recon-all failed for sub-01_ses-2.long.sub-01_base" in caplog.text
    long_rows = table(stream).query("mode == 'longitudinal'")
    assert set(zip(long_rows["session_from"], long_rows["session_to"])) == {("ses-1", "ses-3")}
    monkeypatch.delenv("FAKE_RECON_ALL_FAIL")
    assert run(stream) == "ok: 3 sessions measured, 6 change rows"
    assert [p.name.split(".replaced-")[0] for p in stream.sd.glob("*.replaced-*")] == ["sub-01_ses-2.long.sub-01_base"]


def test_a_failed_base_is_an_error_naming_its_log(stream, monkeypatch):
    from thalamus_bidsapp.errors import ThalamusError

    monkeypatch.setenv("FAKE_RECON_ALL_FAIL", "sub-01_base")
    with pytest.raises(ThalamusError, match=r"recon-all failed for sub-01_base .*recon-all\.log"):
        run(stream)
    assert not (stream.out / "sub-01" / "anat").exists()


def long_files(root) -> list[str]:
    return sorted(p.relative_to(root.out).as_posix() for p in root.out.rglob("*_desc-freesurferLong_*"))


@pytest.mark.slow
def test_an_interrupted_publish_leaves_the_earlier_set_and_table(stream, monkeypatch):
    from tests.fuzz.dataset_cases import tree_digest
    from thalamus_bidsapp.bidsio import staging as staging_module
    from thalamus_bidsapp.errors import ThalamusError

    run(stream)
    add_session(stream, "3")
    before = tree_digest(stream.out)
    moves = []
    original = staging_module._move

    def full_after_one(staged, final):
        if moves:
            raise OSError(28, "No space left on device", str(final))
        moves.append(final)
        original(staged, final)

    monkeypatch.setattr(staging_module, "_move", full_after_one)
    with pytest.raises(ThalamusError, match="No space left on device"):
        run(stream)
    assert len(moves) == 1  # one file of the new set was in place before the failure
    assert tree_digest(stream.out) == before
    assert not (stream.out / ".thalamus_staging").exists()
    # With space again, the whole new set is published.
    monkeypatch.setattr(staging_module, "_move", original)
    assert run(stream) == "ok: 3 sessions measured, 6 change rows"
    assert len(long_files(stream)) == 3 * 5
    assert not (stream.out / ".thalamus_staging").exists()


@pytest.mark.slow
def test_a_publish_replaces_the_set_and_leaves_no_staging_folder(stream, caplog):
    add_session(stream, "3")
    run(stream)
    shutil.rmtree(stream.sd / "sub-01_ses-3")  # the session is left out: its files go with the new set
    caplog.set_level(logging.INFO)
    assert run(stream) == "ok: 2 sessions measured, 3 change rows"
    assert caplog.text.count("its session is not in the freesurfer longitudinal set") == 5
    assert long_files(stream) == sorted(
        f"sub-01/ses-{label}/anat/sub-01_ses-{label}_space-T1w_{kind}" for label in ("1", "2") for kind in (
            "label-thalamus_desc-freesurferLong_mask.nii.gz", "label-thalamus_desc-freesurferLong_mask.json",
            "seg-thalamus_desc-freesurferLong_dseg.nii.gz", "seg-thalamus_desc-freesurferLong_dseg.json",
            "seg-thalamus_desc-freesurferLong_dseg.tsv"))
    assert (stream.out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.json").is_file()
    assert set(table(stream).query("mode == 'longitudinal'").session_to) == {"ses-2"}
    assert not (stream.out / ".thalamus_staging").exists()
    assert not [p for p in stream.out.rglob(".*")]


@pytest.mark.slow
def test_a_skipped_rerun_removes_the_earlier_freesurfer_set_and_rows(stream, caplog):
    run(stream)
    path = stream.out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv"
    meshnet = {"participant_id": "sub-01", "method": "meshnet", "hemisphere": "bilateral", "session_from": "ses-1",
               "session_to": "ses-2", "volume_from_ml": 15.0, "volume_to_ml": 14.9, "change_ml": -0.1,
               "change_pct": -0.667, "interval_years": 2.0, "annualized_change_pct": -0.333, "mode": "longitudinal"}
    rows = pd.concat([table(stream), pd.DataFrame([meshnet])], ignore_index=True)
    rows.to_csv(path, sep="\t", index=False, na_rep="n/a")
    assert len(long_files(stream)) == 2 * 5
    shutil.rmtree(stream.sd / "sub-01_ses-2")
    caplog.set_level(logging.INFO)
    assert run(stream) == "skipped: fewer than two finished timepoints; no freesurfer longitudinal rows"
    assert long_files(stream) == []
    after = table(stream)
    assert not ((after["method"] == "freesurfer") & (after["mode"] == "longitudinal")).any()
    assert len(after) == len(rows) - 3 and "meshnet" in set(after["method"])
    assert (after["mode"] == "cross-sectional").sum() == 3
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")]
    assert len(removed) == 10 and all("did not run this time (fewer than two finished timepoints)" in m
                                      for m in removed)
    assert "3 earlier freesurfer longitudinal rows removed" in caplog.text
    assert not (stream.out / ".thalamus_staging").exists()
    # A second skipped run finds nothing left to remove and says nothing of it.
    caplog.clear()
    run(stream)
    assert "removed" not in caplog.text
    pd.testing.assert_frame_equal(table(stream), after)


def test_fewer_than_two_sessions_removes_the_earlier_freesurfer_set(stream, caplog):
    anat = stream.out / "sub-01" / "ses-1" / "anat"
    earlier = anat / "sub-01_ses-1_space-T1w_label-thalamus_desc-freesurferLong_mask.nii.gz"
    earlier.write_bytes(b"earlier")
    shutil.rmtree(stream.out / "sub-01" / "ses-2")
    assert run(stream) == "skipped: fewer than two sessions with a processed T1w"
    assert not earlier.exists() and "fewer than two sessions with a processed T1w" in caplog.text
    assert (anat / "sub-01_ses-1_desc-preproc_T1w.nii.gz").is_file()
