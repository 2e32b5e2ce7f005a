"""``thalamus-bidsapp --check-tools`` against fake FSL, FreeSurfer and DBSegment trees.

The trees have the real layout: compiled programs are copies of a real ELF
program of this machine (so ``ldd`` really runs on them), scripts are shell
scripts, model files are small files with known checksums. Each case breaks
one thing and checks the exit status and the message that names it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, missing_prerequisite
from thalamus_bidsapp.cli import check_tools
from thalamus_bidsapp.tools import dbsegment, mindglide
from thalamus_bidsapp.tools.check import writable_dir
from thalamus_bidsapp.tools.first import FIRST_MODELS, FIRST_PROGRAMS, FIRST_TEMPLATES
from thalamus_bidsapp.tools.freesurfer import FREESURFER_HELPERS, FREESURFER_LONGITUDINAL_PROGRAMS, FREESURFER_PROGRAMS

FAKES = Path(__file__).parent / "fakes"
MESHNET = SHARED_DATA / "brainchop" / "models" / "model30chan18cls"
REAL_ELF = Path(shutil.which("true") or "/bin/true").resolve()
LICENCE_SECRET = "licence-content-that-must-never-be-printed"
ALL_METHODS = ["freesurfer", "first", "dbsegment", "meshnet", "mindglide"]


def _script(path: Path, body: str = "exit 0\n", shebang: str = "#!/bin/sh") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{shebang}\n{body}")
    path.chmod(0o755)
    return path


def _program(path: Path, source: Path = REAL_ELF) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, path)
    path.chmod(0o755)
    return path


def _is_script_name(name: str) -> bool:
    return name in {"run_first_all", "first_flirt", "run_first", "fsl_sub", "imtest", "remove_ext", "imrm",
                    "recon-all", "fs_time", "talairach_avi", "nu_correct"}


def make_fsl(root: Path) -> Path:
    for name in FIRST_PROGRAMS:
        if _is_script_name(name):
            # run_first_all mentions what it calls, as the real script does.
            body = ('${FSLDIR}/bin/fsl_sub ${FSLDIR}/bin/first_flirt\n'
                    'ref=${FSLDIR}/data/standard/MNI152_T1_1mm_subbr_mask\nexit 0\n')
            _script(root / "bin" / name, body)
        else:
            _program(root / "bin" / name)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "fslversion").write_text("6.0.7:abc123\n")
    for rel in (*FIRST_MODELS, *FIRST_TEMPLATES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"fake {rel}".encode())
    return root


def make_freesurfer(root: Path) -> Path:
    for name in (*FREESURFER_PROGRAMS, *FREESURFER_LONGITUDINAL_PROGRAMS):
        folder = root / "mni" / "bin" if name == "nu_correct" else root / "bin"
        if _is_script_name(name):
            _script(folder / name, shebang="#!/usr/bin/env perl" if name == "nu_correct" else "#!/bin/sh")
        else:
            _program(folder / name)
    (root / "build-stamp.txt").write_text("freesurfer-linux-ubuntu22_x86_64-7.4.1-20230614-7eb8460\n")
    return root


def make_dbsegment_model(root: Path) -> Path:
    trainer = dbsegment.model_bundle(root)
    trainer.mkdir(parents=True)
    (trainer / "plans.pkl").write_bytes(b"plans")
    for fold in dbsegment.DEFAULT_FOLDS:
        (trainer / f"fold_{fold}").mkdir()
        (trainer / f"fold_{fold}" / "model_final_checkpoint.model").write_bytes(f"weights {fold}".encode())
        (trainer / f"fold_{fold}" / "model_final_checkpoint.model.pkl").write_bytes(b"pkl")
    bundle = root / dbsegment.MODEL_BUNDLE_ALL_FOLDS
    for sub in dbsegment.NNUNET_SUBDIRS:
        (bundle / sub).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every method installed and valid: FSL, FreeSurfer (+ licence), DBSegment, MeshNet, a MindGlide file."""
    if not (MESHNET / "model.bin").is_file():
        missing_prerequisite(f"real MeshNet weights not found: {MESHNET}")
    fsl = make_fsl(tmp_path / "fsl")
    fs = make_freesurfer(tmp_path / "freesurfer")
    licence = tmp_path / "license.txt"
    licence.write_text(LICENCE_SECRET)
    helpers = tmp_path / "helpers"
    for name in FREESURFER_HELPERS:
        _script(helpers / name)
    shutil.copy2(FAKES / "DBSegment", helpers / "DBSegment")
    models = make_dbsegment_model(tmp_path / "dbsegment-models")
    weights = tmp_path / "mindglide" / "custom_checkpoint.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"a checkpoint the user chose")
    home = tmp_path / "home"
    home.mkdir()
    # TEMPLATEFLOW_HOME stays: the test home (conftest) holds the template files the check looks for.
    for var in ("FS_LICENSE", "MODEL_PATH", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FSLDIR", str(fsl))
    monkeypatch.setenv("FREESURFER_HOME", str(fs))
    monkeypatch.setenv("PATH", os.pathsep.join([str(helpers), str(fs / "bin"), os.environ.get("PATH", "")]))
    monkeypatch.setenv("FS_LICENSE", str(licence))
    monkeypatch.setenv(dbsegment.MODEL_ENV, str(models))
    monkeypatch.setenv("THALAMUS_MESHNET_MODEL", str(MESHNET))
    monkeypatch.setenv("MODEL_PATH", str(weights))
    return {"fsl": fsl, "freesurfer": fs, "licence": licence, "helpers": helpers, "dbsegment": models,
            "mindglide": weights, "home": home, "tmp": tmp_path}


def run_check(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = check_tools.main(["--check-tools", *args])
    return code, capsys.readouterr().out


def block(out: str, kind: str, name: str) -> str:
    """The lines of one report block."""
    start = next(i for i, line in enumerate(out.splitlines()) if f"] {kind} {name}:" in line)
    lines = out.splitlines()[start:]
    end = next((i for i, line in enumerate(lines[1:], 1) if not line.startswith("    ")), len(lines))
    return "\n".join(lines[:end])


def test_everything_present_exits_0(tools, capsys) -> None:
    code, out = run_check(capsys)
    assert code == 0, out
    for name in ALL_METHODS:
        assert f"[ok] method {name}: can run" in out
    first = block(out, "method", "first")
    assert f"fsl_sub: {tools['fsl'] / 'bin' / 'fsl_sub'}" in first
    assert "FSL version: FSL 6.0.7" in first
    assert "linkage of flirt: all libraries found" in first
    assert "FIRST model L_Thal_05mm.bmv:" in first and "sha256" in first
    assert "template MNI152_T1_1mm_subbr_mask.nii.gz" in first
    freesurfer = block(out, "method", "freesurfer")
    assert f"licence: found: {tools['licence']}" in freesurfer
    assert "freesurfer-linux-ubuntu22_x86_64-7.4.1" in freesurfer
    assert "linkage of nu_correct: interpreter" in freesurfer
    dbseg = block(out, "method", "dbsegment")
    assert "fold_4 checkpoint:" in dbseg and "nnU-Net folders: present" in dbseg
    assert "model.bin:" in block(out, "method", "meshnet") and "(as pinned)" in block(out, "method", "meshnet")
    assert "no published sha256 to compare" in block(out, "method", "mindglide")
    assert LICENCE_SECRET not in out
    assert out.rstrip().endswith("exit 0")


def test_missing_fsl_sub_fails_first_with_66(tools, capsys) -> None:
    (tools["fsl"] / "bin" / "fsl_sub").unlink()
    code, out = run_check(capsys, "--methods", "first")
    assert code == 66
    assert "[FAIL] method first: CANNOT RUN" in out
    assert f"FAIL  fsl_sub: not found ({tools['fsl'] / 'bin' / 'fsl_sub'})" in out
    assert "method first: fsl_sub: not found" in out.split("cannot run:")[1]


def test_missing_first_model_and_version_file(tools, capsys) -> None:
    (tools["fsl"] / FIRST_MODELS[1]).unlink()
    (tools["fsl"] / "etc" / "fslversion").unlink()
    code, out = run_check(capsys, "--methods", "first")
    assert code == 66
    first = block(out, "method", "first")
    assert f"FIRST model R_Thal_05mm.bmv: missing: {tools['fsl'] / FIRST_MODELS[1]}" in first
    assert "Version: null" in first


def test_missing_method_only_matters_when_asked_for(tools, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FSLDIR")
    code, out = run_check(capsys, "--methods", "meshnet")
    assert code == 0, out
    assert "method first" not in out
    code, out = run_check(capsys)
    assert code == 66
    assert "FSL: FSL not found: FSLDIR is not set" in block(out, "method", "first")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_unlinkable_binary_fails_with_the_library_named(tools, capsys, tmp_path) -> None:
    """A real program linked against a shared library that is then removed: ldd says 'not found'."""
    cc = shutil.which("cc") or shutil.which("gcc")
    build = tmp_path / "build"
    build.mkdir()
    (build / "lib.c").write_text("int thalamus_answer(void) { return 42; }\n")
    (build / "main.c").write_text("int thalamus_answer(void);\nint main(void) { return thalamus_answer() != 42; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(build / "libthalamusgone.so"), str(build / "lib.c")],
                   check=True)
    target = tools["freesurfer"] / "bin" / "mri_convert"
    target.unlink()
    subprocess.run([cc, "-o", str(target), str(build / "main.c"), f"-L{build}", "-lthalamusgone"], check=True)
    (build / "libthalamusgone.so").unlink()
    code, out = run_check(capsys, "--methods", "freesurfer")
    assert code == 66
    assert ("FAIL  linkage of mri_convert: " f"{target} needs libraries that are not found: libthalamusgone.so") in out


def test_missing_longitudinal_program_is_reported_without_failing_freesurfer(tools, capsys) -> None:
    (tools["freesurfer"] / "bin" / "mri_robust_template").unlink()
    code, out = run_check(capsys, "--methods", "freesurfer")
    assert code == 0
    line = next(line for line in out.splitlines() if "mri_robust_template (longitudinal stream)" in line)
    assert "not found" in line


def test_script_with_missing_interpreter_fails(tools, capsys) -> None:
    _script(tools["fsl"] / "bin" / "imtest", shebang="#!/opt/nowhere/bin/python3")
    code, out = run_check(capsys, "--methods", "first")
    assert code == 66
    assert "linkage of imtest: its interpreter /opt/nowhere/bin/python3" in out


def test_missing_helper_on_path_fails_freesurfer(tools, capsys, tmp_path, monkeypatch) -> None:
    """No procps: recon-all's fs_time would abort without uptime."""
    (tools["helpers"] / "uptime").unlink()
    only_ldd = tmp_path / "only-ldd"
    only_ldd.mkdir()
    (only_ldd / "ldd").symlink_to(shutil.which("ldd"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(tools["helpers"]), str(tools["freesurfer"] / "bin"),
                                                str(only_ldd)]))
    code, out = run_check(capsys, "--methods", "freesurfer")
    assert code == 66
    assert "uptime: not on PATH" in out


def test_wrong_meshnet_checksum_fails_with_both_sums(tools, capsys, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "meshnet"
    shutil.copytree(MESHNET, broken)
    with open(broken / "model.bin", "ab") as handle:
        handle.write(b"\0")
    monkeypatch.setenv("THALAMUS_MESHNET_MODEL", str(broken))
    code, out = run_check(capsys, "--methods", "meshnet")
    assert code == 66
    line = next(line for line in out.splitlines() if "FAIL  model.bin:" in line)
    expected = "7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4"
    assert f"{broken / 'model.bin'} has sha256 " in line and line.endswith(f"expected {expected}")


def test_wrong_mindglide_checksum_fails(tools, capsys, tmp_path, monkeypatch) -> None:
    revision, filename, published = mindglide.pinned_weights()
    assert published == "881e30efd9444a25ee70c01d795dd9fb21ac750a48f1ba8070fcd79fb75e76ca"
    fake = tmp_path / "hub" / filename
    fake.parent.mkdir()
    fake.write_bytes(b"not the published checkpoint")
    monkeypatch.setenv("MODEL_PATH", str(fake))
    code, out = run_check(capsys, "--methods", "meshnet", "mindglide")
    assert code == 66
    assert f"expected {published}" in block(out, "method", "mindglide")


def test_mindglide_needs_an_envelope_method(tools, capsys) -> None:
    code, out = run_check(capsys, "--methods", "mindglide")
    assert code == 66
    assert "envelope method: none of first, meshnet, freesurfer, dbsegment can run" in out


def test_licence_is_required_except_for_installed(tools, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FS_LICENSE")
    code, out = run_check(capsys, "--methods", "freesurfer")
    assert code == 66 and "FAIL  licence: not found" in out
    code, out = run_check(capsys, "installed", "--methods", "freesurfer")
    assert code == 0, out
    assert "warn  licence: not found" in out and "a run-time input" in out


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot create files in: permission bits, or /sys for root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return folder
    try:
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink(name)
    pytest.skip("root can write everywhere here; no unwritable folder to test with")


def test_unwritable_work_folder_fails_with_66(tools, capsys, tmp_path) -> None:
    work = _unwritable_folder(tmp_path) / "work"
    code, out = run_check(capsys, "--methods", "meshnet", "-w", str(work))
    assert code == 66
    line = next(line for line in out.splitlines() if "work folder (-w)" in line)
    assert line.strip().startswith("FAIL") and "is not writable" in line and str(work) in line


def test_unwritable_meshnet_cache_without_weights_fails(tools, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("THALAMUS_MESHNET_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(_unwritable_folder(tmp_path) / "cache"))
    code, out = run_check(capsys, "--methods", "meshnet")
    assert code == 66
    assert "FAIL  model cache:" in block(out, "method", "meshnet")


def test_meshnet_weights_not_downloaded_yet_is_a_warning(tools, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("THALAMUS_MESHNET_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out = run_check(capsys, "--methods", "meshnet")
    assert code == 0, out
    assert "warn  weights: not in" in out and "needs network" in out
    assert not (tmp_path / "cache" / "thalamus_bidsapp").exists(), "the check must not download or create anything"


def test_dbsegment_nnunet_folders(tools, capsys) -> None:
    bundle = tools["dbsegment"] / dbsegment.MODEL_BUNDLE_ALL_FOLDS
    shutil.rmtree(bundle / "preprocess_nnUNet")
    # Missing but creatable by this user: nnunet makes it on import.
    assert dbsegment.nnunet_folders_problem(tools["dbsegment"]) is None
    if os.geteuid() == 0:
        pytest.skip("root can write the model folder; the unwritable case needs another user")
    bundle.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out = run_check(capsys, "--methods", "dbsegment")
    finally:
        bundle.chmod(stat.S_IRWXU)
    assert code == 66
    assert "nnU-Net folders:" in out and "preprocess_nnUNet" in out and "not writable" in out


def test_missing_fold_checkpoint_fails(tools, capsys) -> None:
    checkpoint = dbsegment.model_bundle(tools["dbsegment"]) / "fold_3" / "model_final_checkpoint.model"
    checkpoint.unlink()
    code, out = run_check(capsys, "--methods", "dbsegment")
    assert code == 66
    assert f"fold_3 checkpoint: missing: {checkpoint}" in out


def test_writable_dir_does_not_create_the_folder(tmp_path) -> None:
    target = tmp_path / "a" / "b"
    finding = writable_dir("x", target)
    assert finding.ok and "created on first use" in finding.detail
    assert not (tmp_path / "a").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert not writable_dir("x", blocker / "sub").ok


def test_console_script_needs_no_positional_arguments(tools) -> None:
    """The installed command, as a user types it (PYTHONPATH comes from the environment)."""
    exe = Path(sys.executable).with_name("thalamus-bidsapp")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "thalamus_bidsapp"]
    proc = subprocess.run([*cmd, "--check-tools", "--methods", "meshnet", "first"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] method meshnet: can run" in proc.stdout and "[ok] method first: can run" in proc.stdout
    proc = subprocess.run([*cmd, "--check-tools", "--methods", "dbsegment", "--dbsegment-model", str(tools["tmp"])],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 66
    assert "Traceback" not in proc.stderr


def test_without_check_tools_positionals_are_still_required(capsys) -> None:
    from thalamus_bidsapp.cli.run import main

    assert main([]) == 64
    assert "required" in capsys.readouterr().err


def test_programs_the_scripts_mention_beyond_the_list_are_warnings(tools, capsys) -> None:
    """What the installed run_first_all itself calls is checked too, as warnings (it may name optional tools)."""
    _script(tools["fsl"] / "bin" / "run_first_all",
            "${FSLDIR}/bin/first_roi_slicesdir x\nstd=${FSLDIR}/data/standard/MNI152_T1_1mm_first_brain_mask\n"
            "res=${FSLDIR}/data/standard/MNI152_T1_${res}mm\n")
    code, out = run_check(capsys, "--methods", "first")
    assert code == 0, out
    first = block(out, "method", "first")
    assert "warn  first_roi_slicesdir:" in first and "called by FIRST's scripts but missing" in first
    assert "warn  template MNI152_T1_1mm_first_brain_mask.nii.gz:" in first
    # A name built from a variable is not guessed at.
    assert "MNI152_T1_ " not in first and "template MNI152_T1_.nii.gz" not in first
