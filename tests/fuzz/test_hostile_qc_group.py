"""Fuzz corpus, QC and group side: thresholds that apply, numbers checked when parsed, group runs while
participant jobs run or died, damaged TemplateFlow files, writes without a file name, broken tools.

Built at test time from ../shared/data (bert cropped; the participant
outputs written directly, masks from bert's FreeSurfer 7.2 and 6.0 asegs).
Each case checks the exit code, the file named in the message and that no
earlier output is changed or left stale.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fuzz.dataset_cases import Result, make_dataset, run_app, tree_digest, write_participant_outputs
from thalamus_bidsapp.bidsio.atomic import json_text, read_tsv, write_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.errors import ThalamusError


@pytest.fixture
def group_case(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    out = tmp_path / "out"
    written = write_participant_outputs(out, bids, {("01", None): "ok", ("02", None): "ok"})
    return {"bids": bids, "out": out, "work": tmp_path / "work", "written": written, "tmp": tmp_path}


@pytest.fixture
def group_run(group_case, caplog, capsys):
    def run(*more) -> Result:
        caplog.clear()
        with caplog.at_level("INFO"):
            code = main([str(a) for a in (group_case["bids"], group_case["out"], "group", "-w", group_case["work"],
                                          *more)])
        captured = capsys.readouterr()
        return Result(code, caplog.text + captured.out + captured.err)

    return run


# ----------------------------------------------------------------------------------- QC thresholds at group level


def _session_qc(group_case, dice: dict[str, float]) -> None:
    """Each session's QC table as the participant level writes it, judged by the default thresholds (pass)."""
    for (subject, _), files in group_case["written"].items():
        rows = [{"method": method, "contrast": "T1w", "check": "dice_methods", "value": value,
                 "threshold": "warn < 0.7, fail < 0.5", "status": "pass",
                 "reason": f"Median Dice {value:.3f} with the session's other methods."}
                for method, value in dice.items()]
        path = files["volumes"].with_name(f"sub-{subject}_label-thalamus_desc-segmentation_qc.tsv")
        write_tsv(pd.DataFrame(rows), path)


def test_group_qc_thresholds_reach_the_session_checks(group_case, group_run):
    _session_qc(group_case, {"freesurfer": 0.90, "first": 0.97})
    assert group_run("--qc-exclude", "fail").code == 0
    assert len(read_tsv(group_case["out"] / "group" / "excluded_sessions.tsv")) == 0  # the defaults pass all
    strict = group_case["tmp"] / "strict.yaml"
    strict.write_text("checks:\n  dice_methods: {warn: 0.95, fail: 0.93}\n")
    result = group_run("--qc-thresholds", strict, "--qc-exclude", "fail")
    assert result.code == 0, result.console
    assert str(strict) in result.console and "2 of 4 masks flagged (2 fail, 0 warn)" in result.console
    group = group_case["out"] / "group"
    excluded = read_tsv(group / "excluded_sessions.tsv")
    assert sorted(excluded["participant_id"]) == ["sub-01", "sub-02"]
    assert excluded["reason"].str.contains("freesurfer").all() and excluded["reason"].str.contains("dice_methods").all()
    qc = read_tsv(group / "qc.tsv")
    dice = qc[qc["check"] == "dice_methods"].set_index(["participant_id", "method"])
    assert set(dice["threshold"]) == {"warn < 0.95, fail < 0.93"}
    assert (dice.xs("freesurfer", level="method")["status"] == "fail").all()
    assert (dice.xs("first", level="method")["status"] == "pass").all()
    assert dice.loc[("sub-01", "freesurfer"), "reason"].endswith("another person's segmentation?).")
    assert set(read_tsv(group / "volumes.tsv")["method"]) == {"first"}


def test_a_measurement_setting_at_group_level_is_said_not_to_apply(group_case, group_run):
    _session_qc(group_case, {"freesurfer": 0.90, "first": 0.97})
    settings = group_case["tmp"] / "prior.json"
    settings.write_text(json.dumps({"prior_threshold": 0.3}))
    result = group_run("--qc-thresholds", settings)
    assert result.code == 0
    assert str(settings) in result.console and "prior_threshold" in result.console
    assert "rerun the participant level" in result.console


# ----------------------------------------------------------------------------------- numbers checked when parsed


@pytest.mark.parametrize("option, value", [("--flirt-cutoff", "nan"), ("--ants-cutoff", "-inf"),
                                           ("--mem-gb", "inf"), ("--mem-gb", "nan"), ("--flirt-cutoff", "1e999")])
def test_non_finite_numbers_are_usage_errors(tmp_path, capsys, option, value):
    bids, _ = make_dataset(tmp_path / "bids")
    code = main([str(bids), str(tmp_path / "out"), "participant", f"{option}={value}"])
    err = capsys.readouterr().err
    assert code == 64
    assert option in err and value in err and "must be a finite number" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text, key", [
    ("nan.yaml", "checks:\n  dice_methods: {warn: .nan}\n", "checks.dice_methods.warn"),
    ("nan.json", '{"checks": {"cohort_robust_z": {"fail": NaN}}}', "checks.cohort_robust_z.fail"),
    ("inf.yaml", "checks:\n  lr_ratio: {warn: [0.8, .inf]}\n", "checks.lr_ratio.warn"),
    ("cohort.yaml", "min_cohort_sessions: .inf\n", "min_cohort_sessions"),
])
def test_non_finite_qc_thresholds_are_usage_errors(tmp_path, capsys, name, text, key):
    bids, _ = make_dataset(tmp_path / "bids")
    path = tmp_path / name
    path.write_text(text)
    code = main([str(bids), str(tmp_path / "out"), "group", "--qc-thresholds", str(path)])
    err = capsys.readouterr().err
    assert code == 64
    assert str(path) in err and key in err


def test_config_json_is_always_valid_json(tmp_path):
    from thalamus_bidsapp.config import RunConfig

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path, analysis_level="participant", work_dir=tmp_path,
                       mem_gb=math.inf, flirt_cutoff=math.nan)
    loaded = json.loads(json_text(config.to_json()), parse_constant=refuse)
    assert loaded["mem_gb"] is None and loaded["flirt_cutoff"] is None


# ----------------------------------------------------------------------------------- group while jobs run or died


def _running_record(out: Path, run_id: str, sessions: list[str], host: str, pid: int) -> None:
    log_dir = out / "logs" / run_id
    write_tsv(pd.DataFrame([{"session": s, "status": "running", "reason": "in progress"} for s in sessions]),
              log_dir / "sessions.tsv")
    (log_dir / "process.json").write_text(json.dumps({"host": host, "pid": pid}))


def test_group_before_any_session_finished_is_75_not_66(tmp_path, caplog):
    bids, _ = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    out = tmp_path / "out"
    _running_record(out, "20260101-000000_fuzz0000", ["sub-01", "sub-02"], "node-elsewhere", 1)
    code = main([str(bids), str(out), "group", "-w", str(tmp_path / "work")])
    err = caplog.text
    assert code == 75
    assert "sub-01, sub-02" in err and "logs/20260101-000000_fuzz0000/sessions.tsv" in err
    assert "run the participant level first" not in err
    assert not (out / "group").exists()


def test_group_after_a_killed_rerun_is_75_as_documented(group_case, group_run):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _running_record(group_case["out"], "20260103-000000_fuzz0003", ["sub-02"], socket.gethostname(), gone.pid)
    before = tree_digest(group_case["out"] / "sub-02")
    result = group_run()
    assert result.code == 75
    assert "sub-02" in result.console and "killed" in result.console
    assert "logs/20260103-000000_fuzz0003/sessions.tsv" in result.console
    assert not (group_case["out"] / "group").exists()
    result = group_run("--skip-running-sessions")
    assert result.code == 0
    excluded = read_tsv(group_case["out"] / "group" / "excluded_sessions.tsv")
    assert list(excluded["participant_id"]) == ["sub-02"] and "interrupted" in excluded["reason"][0]
    assert tree_digest(group_case["out"] / "sub-02") == before  # the earlier outputs are left as they were


# ----------------------------------------------------------------------------------- damaged TemplateFlow files


def _damaged_home(source: Path, target: Path, damage: str) -> Path:
    import nibabel as nib

    shutil.copytree(source, target, symlinks=False)
    atlas = target / "tpl-MNI152NLin2009cAsym" / "tpl-MNI152NLin2009cAsym_res-02_atlas-HOSPA_probseg.nii.gz"
    if damage == "truncated":
        atlas.write_bytes(atlas.read_bytes()[: atlas.stat().st_size // 2])
    else:  # a 3-D file under the atlas name: one volume only
        img = nib.load(str(atlas))
        nib.save(nib.Nifti1Image(img.dataobj[..., 3], img.affine), str(atlas))
    return atlas


@pytest.mark.parametrize("damage, named", [("truncated", "truncated"), ("3-D", "4-D atlas")])
def test_a_damaged_templateflow_atlas_is_66_before_any_tool(templateflow_home, tmp_path, monkeypatch, damage,
                                                            named):
    from thalamus_bidsapp.tools.templateflow import find_template_files

    atlas = _damaged_home(templateflow_home, tmp_path / "templateflow", damage)
    with pytest.raises(ThalamusError) as err:
        find_template_files("MNI152NLin2009cAsym", tmp_path / "templateflow")
    assert err.value.exit_code == 66 and str(atlas) in str(err.value) and named in str(err.value)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "templateflow"))
    bids, fs = make_dataset(tmp_path / "bids")
    work = tmp_path / "work"
    result = run_app(bids, tmp_path / "out", "participant", "-w", work, "--fs-subjects-dir", fs,
                     "--methods", "freesurfer", "--nprocs", "1", "--skip-bids-validation")
    assert result.code == 66, result.console
    assert str(atlas) in result.console and "Traceback" not in result.console and "EOFError" not in result.console
    assert not (work / "thalamus_bidsapp_wf").exists()  # no tool ran
    assert not list((tmp_path / "out").glob("sub-01/**/*.nii.gz"))
    check = run_app("--check-tools", "installed", "--methods", "freesurfer")
    assert check.code == 66 and f"{atlas}: " in check.console and named in check.console


# ----------------------------------------------------------------------------------- writes that name the file


def test_a_write_error_without_a_file_name_names_the_file(tmp_path, monkeypatch):
    from thalamus_bidsapp.bidsio import derivatives

    def full(data, path):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a compressed stream's flush raises it

    monkeypatch.setattr(derivatives, "write_if_changed", full)
    source = tmp_path / "in.tsv"
    source.write_text("a\n1\n")
    target = tmp_path / "out" / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv"
    with pytest.raises(OSError) as err:
        derivatives.publish(source, target, {"Description": "x"})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)


def test_a_crash_without_a_file_name_names_the_step_folder(tmp_path):
    from thalamus_bidsapp.bidsio.staging import Staging
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.participant.tracking import _write_error

    work = tmp_path / "work"
    step = work / "thalamus_bidsapp_wf" / "sub_01_wf" / "brain_mask"
    crash = tmp_path / "crash.txt"
    crash.write_text(f"Node: sub_01_wf.brain_mask\nWorking directory: {step}\n\nTraceback:\n"
                     "OSError: [Errno 28] No space left on device\n")
    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant", work_dir=work)
    message = _write_error("OSError: [Errno 28] No space left on device", Staging(tmp_path / "out", "r"), config,
                           crash)
    assert message == f"cannot write a file in {step}: No space left on device"


# ----------------------------------------------------------------------------------- --check-tools


def test_a_tool_whose_version_call_fails_is_reported(tmp_path):
    from thalamus_bidsapp.tools.check import executable

    broken = tmp_path / "flirt"
    broken.write_text("#!/bin/sh\necho 'flirt: error while loading shared libraries: libznz.so' >&2\nexit 127\n")
    broken.chmod(0o755)
    found, _, version = executable("flirt", broken, version_call=("-version",))
    assert found.ok and not version.ok and version.required
    assert f"`{broken} -version` exited 127" in version.detail and "libznz.so" in version.detail
    working = tmp_path / "ok" / "flirt"
    working.parent.mkdir()
    working.write_text("#!/bin/sh\necho 'FLIRT version 6.0'\n")
    working.chmod(0o755)
    assert all(f.ok for f in executable("flirt", working, version_call=("-version",)))


def test_check_tools_fails_first_with_a_broken_flirt(tmp_path, monkeypatch, capsys):
    from tests.test_check_tools import block, make_fsl
    from thalamus_bidsapp.cli import check_tools

    fsl = make_fsl(tmp_path / "fsl")
    flirt = fsl / "bin" / "flirt"
    flirt.unlink()
    flirt.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    flirt.chmod(0o755)
    monkeypatch.setenv("FSLDIR", str(fsl))
    code = check_tools.main(["--check-tools", "--methods", "first"])
    out = capsys.readouterr().out
    assert code == 66
    first = block(out, "method", "first")
    assert "[FAIL] method first" in first and f"`{flirt} -version` exited 139: Segmentation fault" in first
    registration = block(out, "step", "registration")
    assert "exited 139" in registration  # FLIRT is optional there (ANTs): a warning, not ok
