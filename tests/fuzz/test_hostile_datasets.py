"""Fuzz corpus, dataset side: work folders, BIDS indexing quirks, stale caches, the group level's read-back.

Every case is built at test time from ../shared/data (bert cropped around
the thalamus) and checked for the exit code, a message naming the file, no
traceback on the console, an input tree left byte-identical, and no
half-written or stale outputs. The image-side cases (NaN voxels, singular
affines, ...) are in test_hostile_images.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.fuzz.dataset_cases import (
    Result,
    add_t1w,
    fs_subjects_dir,
    make_dataset,
    run_app,
    start_app,
    thalamus_mask,
    tree_digest,
    wait_app,
    write_description,
    write_participant_outputs,
)
from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.bidsio.checksums import files_digest, remembered_digest
from thalamus_bidsapp.bidsio.staging import STAGING_FOLDER
from thalamus_bidsapp.cli.run import build_config, main
from thalamus_bidsapp.group.readback import read_participant_outputs


def _clean(result, *names: str | os.PathLike) -> None:
    """No traceback on the console, and every name appears in it."""
    assert "Traceback" not in result.console, result.console
    for name in names:
        assert str(name) in result.console, (name, result.console)


def _no_temporaries(root: Path) -> None:
    leftovers = [p for p in root.rglob(".*") if ".tmp" in p.name or p.name.startswith(".group-")
                 or p.name == STAGING_FOLDER]
    assert not leftovers, leftovers


# ----------------------------------------------------------------------------------- work folders


@pytest.mark.parametrize("inside", ["work", "", "sub-01/work"])
def test_work_dir_inside_the_input_is_refused(tmp_path, inside):
    bids, _ = make_dataset(tmp_path / "bids")
    before = tree_digest(bids)
    work = bids / inside if inside else bids
    result = run_app(bids, tmp_path / "out", "participant", "-w", work)
    assert result.code == 64
    _clean(result, work.resolve(), "work folder")
    assert tree_digest(bids) == before


def test_default_work_dir_is_never_inside_the_input(tmp_path, monkeypatch):
    bids, _ = make_dataset(tmp_path / "bids")
    monkeypatch.chdir(bids)  # the README's command run from the dataset root
    config = build_config([str(bids), str(tmp_path / "out"), "participant"])
    assert config.work_dir == (tmp_path / "out" / "sourcedata" / "work").resolve()
    assert bids.resolve() not in config.work_dir.parents
    result = run_app(".", tmp_path / "out", "participant", "-w", "work", cwd=bids)  # ./work, explicitly
    assert result.code == 64
    _clean(result, "work folder")


def test_help_names_the_default_work_dir():
    result = run_app("--help")
    assert result.code == 0
    assert "OUTPUT_DIR/sourcedata/work" in result.console.replace("\n", " ").replace("  ", " ")


def test_unwritable_work_dir_exits_73_naming_it(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    before = tree_digest(bids)
    blocker = tmp_path / "scratch"
    blocker.write_text("a file where the work folder's parent should be")
    result = run_app(bids, tmp_path / "out", "participant", "-w", blocker / "work")
    assert result.code == 73
    _clean(result, blocker / "work", "work folder")
    assert "not a usable BIDS dataset" not in result.console  # the input is not blamed
    assert tree_digest(bids) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_work_dir_exits_73_naming_it(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o500)
    try:
        result = run_app(bids, tmp_path / "out", "participant", "-w", work)
    finally:
        work.chmod(0o700)
    assert result.code == 73
    _clean(result, work, "work folder")


# ----------------------------------------------------------------------------------- BIDS indexing


def _sessions(bids: Path, work: Path | None = None, labels=None, validate: bool = False):
    layout = inputs.open_layout(bids, validate=validate, database_dir=work)
    return inputs.collect_sessions(layout, {}, inputs.default_queries(), participant_labels=labels,
                                   session_labels=None)


@pytest.mark.parametrize("parent", ["anat", "func", "perf", "dwi", "motion"])
@pytest.mark.parametrize("validate", [False, True])
def test_dataset_under_a_datatype_named_folder_finds_its_t1w(tmp_path, parent, validate):
    # pybids 0.22 parses entities from the absolute path (pybids issue 1270): /data/perf/ds -> datatype=perf.
    bids, _ = make_dataset(tmp_path / parent / "ds")
    (session,) = _sessions(bids, tmp_path / "work", validate=validate)
    assert session.t1w == bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


def test_invalid_subject_labels_are_all_listed_and_none_is_taken_for_another(tmp_path, caplog):
    bids, _ = make_dataset(tmp_path / "bids")
    for label in ("a+b", "x y", "ä1", "01-02"):
        add_t1w(bids, label)
    (bids / "sub-02" / "ses-a+b" / "anat").mkdir(parents=True)
    add_t1w(bids, "02")
    sessions = _sessions(bids)
    assert [(s.subject, s.session) for s in sessions] == [("01", None), ("02", None)]
    assert sessions[0].t1w.name == "sub-01_T1w.nii.gz"  # not sub-01-02's
    for folder in ("sub-a+b", "sub-x y", "sub-ä1", "sub-01-02", "sub-02/ses-a+b"):
        assert folder in caplog.text
    assert "not valid BIDS labels" in caplog.text


def test_explicit_invalid_label_exits_66_naming_the_ignored_folder(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    add_t1w(bids, "a+b")
    before = tree_digest(bids)
    result = run_app(bids, tmp_path / "out", "participant", "--participant-label", "a+b", "-w", tmp_path / "w")
    assert result.code == 66
    _clean(result, "a+b", "sub-a+b")
    assert tree_digest(bids) == before


def test_sessionless_t1w_beside_sessions_is_a_warning(tmp_path, caplog):
    bids, _ = make_dataset(tmp_path / "bids")
    add_t1w(bids, "01", "1")
    sessions = _sessions(bids)
    assert [(s.subject, s.session) for s in sessions] == [("01", "1")]
    assert "sub-01_T1w.nii.gz" in caplog.text and "ignored" in caplog.text


def test_runs_are_ordered_numerically_with_a_note(tmp_path):
    bids = tmp_path / "bids"
    write_description(bids)
    for run in (10, 2, 11):
        add_t1w(bids, "01", run=run)
    (session,) = _sessions(bids)
    assert session.t1w.name == "sub-01_run-2_T1w.nii.gz"
    (note,) = session.notes
    assert "3 t1w images" in note and "using sub-01_run-2_T1w.nii.gz" in note


def test_index_sees_a_subject_added_after_it_was_cached(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    work = tmp_path / "work"
    assert [s.subject for s in _sessions(bids, work)] == ["01"]
    add_t1w(bids, "02")
    assert [s.subject for s in _sessions(bids, work)] == ["01", "02"]
    assert [s.subject for s in _sessions(bids, work, labels=["02"])] == ["02"]
    assert not list(work.glob(".bids_db_*")), "half-built indexes left behind"
    # The index of the earlier content goes once it is old enough that no process can still be opening it.
    (first, second) = sorted(work.glob("bids_db_*"), key=lambda p: p.stat().st_mtime)
    os.utime(first, (0, 0))
    add_t1w(bids, "03")
    assert [s.subject for s in _sessions(bids, work)] == ["01", "02", "03"]
    assert not first.exists() and second.exists()


def test_index_key_follows_the_indexed_files_only(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    key = inputs.dataset_fingerprint(bids)
    (bids / "derivatives" / "fmriprep").mkdir(parents=True)  # never indexed: no new key
    (bids / "derivatives" / "fmriprep" / "x.json").write_text("{}")
    assert inputs.dataset_fingerprint(bids) == key
    t1w = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    os.utime(t1w, ns=(t1w.stat().st_atime_ns, t1w.stat().st_mtime_ns + 1))
    assert inputs.dataset_fingerprint(bids) != key


def test_content_digest_sees_an_in_place_edit_with_the_same_size_and_mtime(tmp_path):
    path = add_t1w(tmp_path / "bids", "01", extension=".nii")
    memo = tmp_path / "digests"
    before = files_digest([path], memo)
    assert files_digest([path], memo) == before  # remembered, same answer
    info = path.stat()
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    data[data > 0] += 1.0
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # touch -r: same mtime
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns
    assert files_digest([path], memo) != before
    assert remembered_digest(path, memo) == remembered_digest(path, None)


# ----------------------------------------------------------------------------------- group level


@pytest.fixture
def group_case(tmp_path):
    """An input dataset with two subjects, their participant outputs (both ok) and an earlier group run."""
    bids, _ = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    out = tmp_path / "out"
    write_participant_outputs(out, bids, {("01", None): "ok", ("02", None): "ok"})
    return {"bids": bids, "out": out, "work": tmp_path / "work", "input": tree_digest(bids)}


@pytest.fixture
def group_run(group_case, caplog, capsys):
    """Run the group level in this process (the imports are paid once); console = log + stdout + stderr."""

    def run(*more: str | os.PathLike) -> Result:
        caplog.clear()
        code = main([str(a) for a in (group_case["bids"], group_case["out"], "group", "-w", group_case["work"],
                                      *more)])
        captured = capsys.readouterr()
        return Result(code, caplog.text + captured.out + captured.err)

    return run


def test_group_reads_back_exactly_what_the_participant_level_wrote(tmp_path):
    bids = tmp_path / "perf" / "bids"  # under a datatype-named folder, with sessions
    write_description(bids)
    out = tmp_path / "func" / "out"
    sessions = {("01", "1"): "ok", ("01", "2"): "ok", ("02", None): "ok"}
    written = write_participant_outputs(out, bids, sessions)
    outputs = read_participant_outputs(out)
    assert sorted(map(Path, outputs.volumes["path"])) == sorted(f["volumes"] for f in written.values())
    assert sorted(map(Path, outputs.masks["path"])) == sorted(f[m] for f in written.values()
                                                              for m in ("freesurfer", "first"))
    keys = set(zip(outputs.masks["participant_id"], outputs.masks["session_id"], outputs.masks["method"]))
    assert ("sub-01", "ses-2", "first") in keys and ("sub-02", None, "freesurfer") in keys


def test_group_unknown_label_exits_66_and_keeps_the_tables(group_case, group_run):
    assert group_run().code == 0
    group_dir = group_case["out"] / "group"
    before = tree_digest(group_dir)
    result = group_run("--participant-label", "1")
    assert result.code == 66
    _clean(result, "not found")
    assert tree_digest(group_dir) == before
    assert tree_digest(group_case["bids"]) == group_case["input"]


def test_group_tables_are_one_set(group_case, group_run):
    assert group_run().code == 0
    group_dir = group_case["out"] / "group"
    (group_dir / "agreement_old.tsv").write_text("method\tdice\nx\t0.5\n")  # a table this run does not write
    # sub-02's latest run failed: only sub-01 is used, and the tables say why sub-02 is not there.
    write_participant_outputs(group_case["out"], group_case["bids"], {("02", None): "failed"},
                              run_id="20260102-000000_fuzz0001")
    result = group_run()
    assert result.code == 0
    _clean(result, "agreement_old.tsv", "sub-02")
    assert not (group_dir / "agreement_old.tsv").exists()
    assert set(read_tsv(group_dir / "volumes.tsv")["participant_id"]) == {"sub-01"}
    excluded = read_tsv(group_dir / "excluded_sessions.tsv")
    assert list(excluded["participant_id"]) == ["sub-02"] and "failed" in excluded["reason"][0]
    assert "sub-02" in (group_dir / "report.html").read_text()
    # Only sub-02 asked for, and it failed: the volumes table empties, and the log says so.
    result = group_run("--participant-label", "02")
    assert result.code == 0
    _clean(result, "volumes.tsv had 2 row(s) and now has none")
    _no_temporaries(group_case["out"])


@pytest.mark.parametrize("content, named", [
    (b"participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t31\tF\nsub-01\t30\tF\n", "sub-01"),
    (b"participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t31\n", "line 3"),
    (b"participant_id\tage\tsex\nsub-01\t30\tF\textra\nsub-02\t31\tF\n", "line 2"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03binary", "binary"),
    (b"", "empty"),
    (b"participant_id\tage\nsub-01\t\xff\xfe\n", "UTF-8"),
])
def test_bad_participants_tsv_exits_65_naming_it(group_case, group_run, content, named):
    assert group_run().code == 0
    group_dir = group_case["out"] / "group"
    before = tree_digest(group_dir)
    bids = group_case["bids"]
    (bids / "participants.tsv").write_bytes(content)
    result = group_run()
    assert result.code == 65
    _clean(result, bids / "participants.tsv", named)
    assert tree_digest(group_dir) == before  # the earlier set stays whole
    _no_temporaries(group_case["out"])


def test_group_staging_of_a_killed_group_run_is_removed(group_case, group_run):
    # What a group run killed half-way leaves: its staging folder, owned by a process that is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = group_case["out"] / STAGING_FOLDER / "20260104-000000_fuzz0003"
    (killed / "group").mkdir(parents=True)
    (killed / "group" / "volumes.tsv").write_text("participant_id\tvolume_ml\nsub-99\t1.0\n")
    (killed / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                   "started": 0}))
    assert group_run().code == 0
    assert "sub-99" not in (group_case["out"] / "group" / "volumes.tsv").read_text()
    _no_temporaries(group_case["out"])


def test_participant_missing_from_participants_tsv_is_a_warning(group_case, group_run):
    (group_case["bids"] / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t30\tF\n")
    result = group_run()
    assert result.code == 0
    _clean(result, "missing from", "sub-02")
    volumes = read_tsv(group_case["out"] / "group" / "volumes.tsv")
    assert len(volumes) == 4  # no row duplicated or lost


def test_group_refuses_while_participant_jobs_run(group_case, group_run):
    write_participant_outputs(group_case["out"], group_case["bids"], {("02", None): "running"},
                              run_id="20260103-000000_fuzz0002")
    log_dir = group_case["out"] / "logs" / "20260103-000000_fuzz0002"
    # A live process on another machine of the cluster: it cannot be checked, so it counts as running.
    (log_dir / "process.json").write_text(json.dumps({"host": "node-elsewhere", "pid": 1}))
    result = group_run()
    assert result.code == 75
    _clean(result, "sub-02", "still running", "--skip-running-sessions")
    assert not (group_case["out"] / "group").exists()
    result = group_run("--skip-running-sessions")
    assert result.code == 0
    _clean(result, "sub-02")
    excluded = read_tsv(group_case["out"] / "group" / "excluded_sessions.tsv")
    assert list(excluded["participant_id"]) == ["sub-02"] and "running" in excluded["reason"][0]


@pytest.mark.parametrize("damage", ["truncated", "not an image", "other grid"])
def test_corrupt_mask_at_group_level_leaves_that_session_out(group_case, group_run, damage):
    mask = (group_case["out"] / "sub-02" / "anat" / "sub-02_space-T1w_label-thalamus_desc-first_mask.nii.gz")
    if damage == "truncated":
        mask.write_bytes(mask.read_bytes()[:300])
    elif damage == "not an image":
        mask.write_text("not a NIfTI file")
    else:
        img = thalamus_mask("6.0")
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-2], img.affine), str(mask))
    result = group_run()
    assert result.code == 1
    _clean(result, mask)
    group_dir = group_case["out"] / "group"
    excluded = read_tsv(group_dir / "excluded_sessions.tsv")
    assert list(excluded["participant_id"]) == ["sub-02"] and str(mask) in excluded["reason"][0]
    assert set(read_tsv(group_dir / "volumes.tsv")["participant_id"]) == {"sub-01"}
    assert len(read_tsv(group_dir / "containment.tsv"))  # the other tables are written
    assert (group_dir / "report.html").is_file()
    assert tree_digest(group_case["bids"]) == group_case["input"]
    _no_temporaries(group_case["out"])


def test_corrupt_volumes_table_leaves_that_session_out(group_case):
    table = group_case["out"] / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv"
    table.write_bytes(b"\x00\x01garbage")
    # As a user runs it, in a process of its own: the console has the message, no traceback.
    result = run_app(group_case["bids"], group_case["out"], "group", "-w", group_case["work"])
    assert result.code == 1
    _clean(result, table)
    assert set(read_tsv(group_case["out"] / "group" / "volumes.tsv")["participant_id"]) == {"sub-02"}


# ----------------------------------------------------------------------------------- end to end


def _participant(bids: Path, out: Path, work: Path, fs: Path, *labels: str) -> list[str]:
    args = [bids, out, "participant", "-w", work, "--fs-subjects-dir", fs, "--methods", "freesurfer",
            "--nprocs", "1", "--skip-bids-validation"]
    if labels:
        args += ["--participant-label", *labels]
    return [str(a) for a in args]


@pytest.mark.slow
def test_three_participant_jobs_share_one_work_folder(tmp_path):
    # What a SLURM array launched from one folder does: same -w, same output folder, one subject each.
    bids, fs = make_dataset(tmp_path / "anat" / "bids", subjects=("01", "02", "03"))
    before = tree_digest(bids)
    out, work = tmp_path / "out", tmp_path / "work"
    jobs = [start_app(*_participant(bids, out, work, fs, label), log=tmp_path / f"job{label}.log")
            for label in ("01", "02", "03")]
    results = [wait_app(job, tmp_path / f"job{label}.log") for job, label in zip(jobs, ("01", "02", "03"))]
    for result in results:
        assert result.code == 0, result.console
        _clean(result)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"]
    for label in ("01", "02", "03"):
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_label-thalamus_volumes.tsv").is_file()
        assert (out / f"sub-{label}.html").is_file()
    statuses = [read_tsv(p) for p in out.glob("logs/*/sessions.tsv")]
    assert len(statuses) == 3 and all(list(s["status"]) == ["ok"] for s in statuses)
    assert tree_digest(bids) == before
    group = run_app(bids, out, "group", "-w", work)
    assert group.code == 0, group.console
    assert sorted(read_tsv(out / "group" / "volumes.tsv")["participant_id"].unique()) == ["sub-01", "sub-02",
                                                                                          "sub-03"]
    _no_temporaries(out)
    _no_temporaries(work)


@pytest.mark.slow
def test_rerun_sees_a_new_subject_and_an_in_place_edit(tmp_path):
    bids = tmp_path / "perf" / "bids"
    write_description(bids)
    t1w = add_t1w(bids, "01", extension=".nii")
    fs = fs_subjects_dir(tmp_path / "freesurfer", ("01", "02"))
    out, work = tmp_path / "out", tmp_path / "work"
    first = run_app(*_participant(bids, out, work, fs))
    assert first.code == 0, first.console
    preproc = out / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz"
    old = np.asanyarray(nib.load(str(preproc)).dataobj).copy()

    add_t1w(bids, "02")
    info = t1w.stat()
    img = nib.load(str(t1w))
    data = np.asanyarray(img.dataobj).copy()
    data[data > 0] = data.max() + 1.0 - data[data > 0]  # an edit in place: same size...
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine, img.header), str(t1w))
    os.utime(t1w, ns=(info.st_atime_ns, info.st_mtime_ns))  # ...and the same mtime (touch -r)
    assert t1w.stat().st_size == info.st_size

    second = run_app(*_participant(bids, out, work, fs))
    assert second.code == 0, second.console
    _clean(second, "sub-02")
    assert (out / "sub-02" / "anat" / "sub-02_label-thalamus_volumes.tsv").is_file()
    new = np.asanyarray(nib.load(str(preproc)).dataobj)
    assert not np.array_equal(new, old)
    assert np.allclose(np.sort(new.ravel()), np.sort(data.ravel()))
    assert explicit_label_run_works(bids, out, work, fs)
    _no_temporaries(out)


def explicit_label_run_works(bids: Path, out: Path, work: Path, fs: Path) -> bool:
    """With the cached index of the two-subject dataset, an explicit label of a third, new subject is found."""
    add_t1w(bids, "03")
    fs_subjects_dir(fs, ("03",))
    result = run_app(*_participant(bids, out, work, fs, "03"))
    return result.code == 0 and (out / "sub-03" / "anat" / "sub-03_label-thalamus_volumes.tsv").is_file()


@pytest.mark.slow
def test_default_work_dir_run_from_the_dataset_root_leaves_the_input_alone(tmp_path):
    bids, fs = make_dataset(tmp_path / "bids")
    before = tree_digest(bids)
    out = tmp_path / "out"
    result = run_app(".", out, "participant", "--fs-subjects-dir", fs, "--methods", "freesurfer", "--nprocs", "1",
                     "--skip-bids-validation", cwd=bids)
    assert result.code == 0, result.console
    _clean(result)
    assert tree_digest(bids) == before
    assert (out / "sourcedata" / "work" / "thalamus_bidsapp_wf").is_dir()
    assert (out / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv").is_file()
