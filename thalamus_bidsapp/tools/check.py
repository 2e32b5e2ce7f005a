"""What can run here: every method and step, checked without running them (``--check-tools``).

For each method and step this finds the executables (path and version),
checks that compiled programs link (``ldd`` shows no "not found") and that
scripts' interpreters exist, checks model files (present, sha256 against the
pinned value where one is known), the FreeSurfer licence (found or not; its
content is never read), FIRST's models and templates, and that the caches
the run writes are writable by this user. Nothing is downloaded and no tool
is run beyond asking for its version.

It reuses the adapters' own discovery (``interfaces/``), so what it reports is
what a run would find. This module holds the building blocks, the checks of
the steps every session runs and those of FreeSurfer, FIRST and MindGlide;
each method declares its check in its ``methods/`` module
(``SegmentationMethod.check_installation``), and ``cli/check_tools.py`` loops
over the method registry.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from thalamus_bidsapp.bidsio.checksums import file_digest
from thalamus_bidsapp.config import Environment
from thalamus_bidsapp.errors import ThalamusError

LOGGER = logging.getLogger(__name__)

#: Programs FIRST runs for ``run_first_all -s L_Thal,R_Thal -b``, all in ``$FSLDIR/bin``: its own
#: scripts and programs, FLIRT for the registration to MNI152, avwutils, fsl_sub (every step
#: runs through it) and fslpy's imtest, remove_ext and imrm.
FIRST_PROGRAMS: tuple[str, ...] = (
    "run_first_all", "first_flirt", "run_first", "first", "first_utils", "first_boundary_corr",
    "first_mult_bcorr", "flirt", "convert_xfm", "fslmerge", "fslmaths", "fsl_sub", "imtest",
    "remove_ext", "imrm",
)
#: FIRST's shape models for the thalamus (relative to ``$FSLDIR``).
FIRST_MODELS: tuple[str, ...] = (
    "data/first/models_336_bin/05mm/L_Thal_05mm.bmv",
    "data/first/models_336_bin/05mm/R_Thal_05mm.bmv",
)
#: MNI152 templates first_flirt registers a brain-extracted (-b) T1w to.
FIRST_TEMPLATES: tuple[str, ...] = (
    "data/standard/MNI152_T1_1mm_brain.nii.gz",
    "data/standard/MNI152_T1_1mm_subbr_mask.nii.gz",
)
#: Compiled programs and scripts ``recon-all -all`` runs (FreeSurfer 7.4.1), looked up in
#: ``$FREESURFER_HOME/bin`` then ``$FREESURFER_HOME/mni/bin``.
FREESURFER_PROGRAMS: tuple[str, ...] = (
    "recon-all", "fs_time", "talairach_avi", "nu_correct", "mri_convert", "mri_info",
    "mri_add_xform_to_header", "mri_normalize", "mri_watershed", "mri_em_register", "mri_ca_normalize",
    "mri_ca_register", "mri_ca_label", "mri_segstats", "mri_segment", "mri_edit_wm_with_aseg", "mri_mask",
    "mri_fill", "mri_pretess", "mri_tessellate", "mri_cc", "mri_relabel_hypointensities", "mri_aparc2aseg",
    "mris_smooth", "mris_inflate", "mris_sphere", "mris_fix_topology", "mris_register", "mris_ca_label",
    "mris_place_surface", "mris_anatomical_stats", "mris_volmask",
)
#: The version call of the tools that have one (exit 0 when the tool works); the others are only found and linked.
VERSION_CALLS: dict[str, tuple[str, ...]] = {"flirt": ("-version",), "recon-all": ("--version",)}
#: Programs recon-all's scripts need on PATH; procps's uptime because fs_time aborts without it.
FREESURFER_HELPERS: tuple[str, ...] = ("tcsh", "bc", "perl", "uptime")
_LDD_TIMEOUT_S = 60
#: Seconds a tool's version call may take (FreeSurfer's scripts start a shell and read their build stamp).
_VERSION_TIMEOUT_S = 60
_FSLDIR_REFERENCE = re.compile(r"\$\{?FSLDIR\}?/(bin|data/standard)/([A-Za-z0-9_.\-]*[A-Za-z0-9_])(?![\w${-])")


@dataclass(frozen=True)
class Finding:
    """One thing checked: what, whether it is fine, and the detail (path, version, checksum or reason).

    A finding that is not ``required`` is a warning: reported, but it does not
    stop the method or step.
    """

    label: str
    ok: bool
    detail: str
    required: bool = True


@dataclass(frozen=True)
class CheckReport:
    """The findings for one method or step."""

    name: str
    kind: str  # "method" or "step"
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when every required finding is fine."""
        return all(f.ok for f in self.findings if f.required)

    @property
    def problems(self) -> list[Finding]:
        """The required findings that failed."""
        return [f for f in self.findings if f.required and not f.ok]

    @property
    def reason(self) -> str | None:
        """Why it cannot run (the failed findings), or None."""
        problems = self.problems
        return "; ".join(f"{f.label}: {f.detail}" for f in problems) if problems else None


@dataclass(frozen=True)
class CheckOptions:
    """What the user named on the command line (None: the defaults a run would use).

    ``require_license`` is False when checking an image as it is built: the
    FreeSurfer licence is a run-time input and never in the image.
    """

    method_options: Mapping[str, Any] = field(default_factory=dict)
    work_dir: Path | None = None
    require_license: bool = True
    #: ``--template`` (None: ``--template none``, no template space).
    template: str | None = "MNI152NLin2009cAsym"
    #: Method options that came from their environment variable (dest -> variable).
    option_sources: Mapping[str, str] = field(default_factory=dict)
    #: The honoured environment variables (:class:`thalamus_bidsapp.config.Environment`), read by the command.
    environment: Environment = field(default_factory=Environment)
    #: TemplateFlow's home folder (None: the templateflow package's default).
    templateflow_home: Path | None = None

    def option(self, name: str) -> Any:
        """A method's option as given on the command line (``--fs-license-file`` -> ``fs_license_file``), or None."""
        return self.method_options.get(name)


# --- building blocks ----------------------------------------------------------


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _interpreter(path: Path) -> list[str] | None:
    """The ``#!`` line of a script as words, or None when it has none."""
    try:
        with open(path, "rb") as handle:
            first = handle.read(512).split(b"\n", 1)[0]
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode(errors="replace").split()


def linkage(path: Path) -> Finding:
    """Whether ``path`` can start: ``ldd`` finds every library (ELF), or its interpreter exists (script)."""
    label = f"linkage of {path.name}"
    if _is_elf(path):
        ldd = shutil.which("ldd")
        if ldd is None:
            return Finding(label, False, "ldd not found: libraries not checked", required=False)
        try:
            proc = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=_LDD_TIMEOUT_S,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return Finding(label, False, f"ldd {path} failed: {err}")
        text = proc.stdout + proc.stderr
        missing = sorted({line.split("=>")[0].strip() for line in text.splitlines() if "not found" in line})
        if missing:
            return Finding(label, False, f"{path} needs libraries that are not found: {', '.join(missing)}")
        if proc.returncode != 0 and "not a dynamic executable" not in text:
            return Finding(label, False, f"ldd {path} exit {proc.returncode}: {text.strip()[-300:]}")
        return Finding(label, True, "all libraries found" if "not a dynamic" not in text else "static")
    words = _interpreter(path)
    if words is None:
        return Finding(label, True, "not a script or ELF program; not checked", required=False)
    program = words[0]
    if Path(program).name == "env" and len(words) > 1:
        program = next((w for w in words[1:] if not w.startswith("-")), words[1])
        found = shutil.which(program)
        if found is None:
            return Finding(label, False, f"its interpreter {program} (#!{' '.join(words)}) is not on PATH")
        return Finding(label, True, f"interpreter {found}")
    if not (Path(program).is_file() and os.access(program, os.X_OK)):
        return Finding(label, False, f"its interpreter {program} (#!{' '.join(words)}) is missing")
    return Finding(label, True, f"interpreter {program}")


def executable(label: str, path: Path | None, version: str | None = None, *, required: bool = True,
               version_call: tuple[str, ...] | None = None) -> list[Finding]:
    """An executable's findings: found (path, version), its linkage and, with ``version_call``, that call's result.

    ``version_call``: the arguments of the tool's own version call (``("-version",)`` for FLIRT); a tool
    that exits non-zero there, or cannot be started, would fail the same way in a run.
    """
    if path is None or not path.is_file():
        where = f" ({path})" if path is not None else ""
        return [Finding(label, False, f"not found{where}", required=required)]
    if not os.access(path, os.X_OK):
        return [Finding(label, False, f"{path} is not executable", required=required)]
    detail = str(path) + (f" ({version})" if version else "")
    link = linkage(path)
    findings = [Finding(label, True, detail, required=required),
                Finding(link.label, link.ok, link.detail, required=required and link.required)]
    if version_call is not None and link.ok:
        findings.append(version_finding(label, path, version_call, required=required))
    return findings


def version_finding(label: str, path: Path, arguments: tuple[str, ...], *, required: bool = True) -> Finding:
    """Run ``path arguments`` (the tool's version call): ok when it exits 0, else its exit status and last words."""
    command = " ".join([str(path), *arguments])
    name = f"{label} {' '.join(arguments)}"
    try:
        proc = subprocess.run([str(path), *arguments], capture_output=True, text=True, timeout=_VERSION_TIMEOUT_S,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Finding(name, False, f"`{command}` could not run: {err}", required=required)
    text = (proc.stdout + proc.stderr).strip()
    last = text.splitlines()[-1][:200] if text else "no output"
    if proc.returncode != 0:
        return Finding(name, False, f"`{command}` exited {proc.returncode}: {last}", required=required)
    return Finding(name, True, last)


def data_file(label: str, path: Path, expected_sha256: str | None = None, *, required: bool = True) -> Finding:
    """A model or data file: present, its sha256, and whether that is the one expected."""
    if not path.is_file():
        return Finding(label, False, f"missing: {path}", required=required)
    try:
        actual = file_digest(path)
    except OSError as err:
        return Finding(label, False, f"{path} cannot be read: {err}", required=required)
    if expected_sha256 and actual != expected_sha256:
        return Finding(label, False, f"{path} has sha256 {actual}, expected {expected_sha256}", required=required)
    verdict = "as pinned" if expected_sha256 else "no published sha256 to compare"
    return Finding(label, True, f"{path} sha256 {actual} ({verdict})", required=required)


def writable_dir(label: str, path: Path, *, required: bool = True) -> Finding:
    """Whether this user can create files in ``path`` (or create ``path`` in its nearest existing parent).

    Tries a real file, since permission bits do not tell about read-only mounts.
    """
    target = Path(path)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Finding(label, False, f"{target}: {probe} is not a folder", required=required)
    try:
        fd, name = tempfile.mkstemp(prefix=".thalamus-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        where = str(target) if probe == target else f"{target} (would be created in {probe})"
        return Finding(label, False, f"{where} is not writable: {err.strerror or err}", required=required)
    where = str(target) if probe == target else f"{target} (created on first use in {probe})"
    return Finding(label, True, f"{where} writable", required=required)


def package_version(name: str) -> str | None:
    """Installed version of a Python distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def python_package(label: str, distribution: str, *, required: bool = True) -> Finding:
    version = package_version(distribution)
    if version is None:
        return Finding(label, False, f"Python package {distribution} not installed", required=required)
    return Finding(label, True, f"{distribution} {version}", required=required)


def _script_references(scripts: Iterable[Path]) -> tuple[set[str], set[str]]:
    """``$FSLDIR/bin/<name>`` and ``$FSLDIR/data/standard/<name>`` names the installed scripts mention."""
    programs: set[str] = set()
    templates: set[str] = set()
    for script in scripts:
        try:
            text = script.read_text(errors="replace")
        except OSError:
            continue
        for folder, name in _FSLDIR_REFERENCE.findall(text):
            (programs if folder == "bin" else templates).add(name)
    return programs, templates


def _with_nifti_suffix(folder: Path, name: str) -> Path:
    if name.endswith((".nii", ".nii.gz")) or (folder / name).exists():
        return folder / name
    return folder / f"{name}.nii.gz"


# --- methods ------------------------------------------------------------------


def check_freesurfer(options: CheckOptions) -> CheckReport:
    """recon-all and what it runs (linkage), its helpers on PATH, and the licence."""
    from thalamus_bidsapp.tools import freesurfer

    findings: list[Finding] = []
    home = options.environment.freesurfer_home
    recon_all = freesurfer.recon_all_executable(home)
    if recon_all is None:
        findings.append(Finding("recon-all", False, "not found: install FreeSurfer 7.4.1 and set FREESURFER_HOME "
                                "(finished subjects given with --fs-subjects-dir are still read without it)"))
    else:
        home = home or Path(recon_all).resolve().parent.parent
        stamp = home / "build-stamp.txt"
        version = stamp.read_text().strip().splitlines()[0] if stamp.is_file() else None
        findings.append(Finding("FREESURFER_HOME", home.is_dir(), str(home)))
        findings.append(Finding("FreeSurfer version", version is not None,
                                version or f"unknown: {stamp} missing", required=False))
        for name in FREESURFER_PROGRAMS:
            path = next((folder / name for folder in (home / "bin", home / "mni" / "bin")
                         if (folder / name).is_file()), None)
            if path is None and name == "recon-all":
                path = Path(recon_all)
            findings += executable(name, path, version_call=VERSION_CALLS.get(name))
        for helper in FREESURFER_HELPERS:
            found = shutil.which(helper)
            findings.append(Finding(helper, found is not None, found or "not on PATH (recon-all's scripts need it)"))
    licence = freesurfer.find_license(options.option("fs_license_file"), options.environment.freesurfer_home)
    if licence is not None:
        findings.append(Finding("licence", True, f"found: {licence}"))
    else:
        findings.append(Finding(
            "licence", False,
            "not found: give --fs-license-file, or set FS_LICENSE, or put it at $FREESURFER_HOME/license.txt"
            + ("" if options.require_license else " (a run-time input, not required in this check)"),
            required=options.require_license))
    return CheckReport("freesurfer", "method", tuple(findings))


def check_first(options: CheckOptions) -> CheckReport:
    """FSL's FIRST: its programs (and what its scripts call), version, models and templates."""
    from thalamus_bidsapp.tools import first

    try:
        fsldir = first.find_fsl()
    except ThalamusError as err:
        return CheckReport("first", "method", (Finding("FSL", False, str(err)),))
    version = first.fsl_version(fsldir)
    findings = [
        Finding("FSLDIR", True, str(fsldir)),
        Finding("FSL version", version is not None,
                f"FSL {version}" if version else f"unknown: {fsldir / 'etc' / 'fslversion'} missing "
                "(sidecars would record Version: null)"),
    ]
    bindir = fsldir / "bin"
    for name in FIRST_PROGRAMS:
        findings += executable(name, bindir / name, version_call=VERSION_CALLS.get(name))
    for rel in FIRST_MODELS:
        findings.append(data_file(f"FIRST model {Path(rel).name}", fsldir / rel))
    for rel in FIRST_TEMPLATES:
        findings.append(data_file(f"template {Path(rel).name}", fsldir / rel))
    # What the installed scripts themselves call, beyond the list above: warnings only,
    # since a script may mention optional programs (viewers, QC pages).
    programs, templates = _script_references([bindir / "run_first_all", bindir / "first_flirt",
                                              bindir / "run_first"])
    for name in sorted(programs - set(FIRST_PROGRAMS)):
        if not (bindir / name).is_file():
            findings.append(Finding(name, False, f"{bindir / name} is called by FIRST's scripts but missing",
                                    required=False))
    known = {Path(rel).name for rel in FIRST_TEMPLATES}
    for name in sorted(templates):
        path = _with_nifti_suffix(fsldir / "data" / "standard", name)
        if path.name not in known and not path.exists():
            findings.append(Finding(f"template {path.name}", False,
                                    f"{path} is used by FIRST's scripts but missing", required=False))
    return CheckReport("first", "method", tuple(findings))


def check_mindglide(options: CheckOptions) -> CheckReport:
    """The mindglide package and its checkpoint (sha256 against the published one; never downloaded here)."""
    from thalamus_bidsapp.tools import mindglide

    findings = [python_package("mindglide", "mindglide"), python_package("PyTorch", "torch"),
                python_package("MONAI", "monai")]
    if not findings[0].ok:
        return CheckReport("mindglide", "method", tuple(findings))
    try:
        weights = mindglide.resolve_weights(options.option("mindglide_model"), allow_download=False,
                                            offline=options.environment.hf_hub_offline)
    except ThalamusError as err:
        findings.append(Finding("checkpoint", False, str(err)))
        return CheckReport("mindglide", "method", tuple(findings))
    revision, filename, published = mindglide.pinned_weights()
    # Only the package's pinned file has a known checksum; a checkpoint of another name is the user's choice.
    expected = published if weights.name == filename else None
    findings.append(data_file(f"checkpoint (revision {revision[:12]})" if expected else "checkpoint",
                              weights, expected))
    return CheckReport("mindglide", "method", tuple(findings))


# --- steps ----------------------------------------------------------------------


def check_brain_mask(options: CheckOptions) -> CheckReport:
    """deepbet (weights in its wheel) and PyTorch: every session's first step."""
    findings = [python_package("deepbet", "deepbet"), python_package("PyTorch", "torch")]
    return CheckReport("brain mask", "step", tuple(findings))


def check_registration(options: CheckOptions) -> CheckReport:
    """FLIRT (preferred) and ANTs: FLAIR and R1 need at least one."""
    from thalamus_bidsapp.tools import flirt

    ants = python_package("ANTs", "antspyx", required=False)
    installation = flirt.find_fsl()
    if installation is None:
        flirt_findings = [Finding("flirt", False, "not found: FLIRT strategies skipped, ANTs only", required=False)]
    else:
        flirt_findings = executable("flirt", installation.flirt,
                                    f"FSL {installation.version}" if installation.version else None,
                                    required=False, version_call=VERSION_CALLS["flirt"])
    either = ants.ok or all(f.ok for f in flirt_findings)
    summary = Finding("FLIRT or ANTs", either, "available" if either else "neither FLIRT nor antspyx is available")
    return CheckReport("registration", "step", (*flirt_findings, ants, summary))


def check_caches(options: CheckOptions) -> CheckReport:
    """The folders a run writes outside its output: temporary files, the work folder, user caches."""
    env = os.environ
    findings = [writable_dir("temporary folder", Path(tempfile.gettempdir()))]
    if options.work_dir is not None:
        findings.append(writable_dir("work folder (-w)", options.work_dir))
    home = Path(env.get("HOME") or Path.home())
    cache_root = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    findings.append(writable_dir("user cache", cache_root, required=False))
    mpl = Path(env["MPLCONFIGDIR"]) if env.get("MPLCONFIGDIR") else home / ".config" / "matplotlib"
    findings.append(writable_dir("matplotlib config (reports)", mpl, required=False))
    return CheckReport("caches", "step", tuple(findings))


def check_template(options: CheckOptions) -> CheckReport:
    """The TemplateFlow files of ``--template`` in TEMPLATEFLOW_HOME (read only, never downloaded)."""
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.tools.templateflow import (
        content_problem,
        required_files,
        template_settings,
        templateflow_home,
        usable_file,
    )

    if options.template is None:
        return CheckReport("template space", "step",
                           (Finding("--template", True, "none: no template space, no thalamus prior"),))
    try:
        home = options.templateflow_home or templateflow_home()
    except ThalamusError as err:
        return CheckReport("template space", "step", (Finding("TEMPLATEFLOW_HOME", False, str(err)),))
    findings = [python_package("ANTs", "antspyx")]
    volumes = max(template_settings()["prior"]["volumes"].values()) + 1
    for dimensions, item in zip((3, 4), required_files(options.template)):
        path = item.path(home)
        if not usable_file(path):
            findings.append(Finding(item.describe(), False, f"missing: put it at {path}"))
            continue
        problem = content_problem(path, dimensions, volumes)  # truncated, unreadable, or of the wrong shape
        findings.append(Finding(item.describe(), not problem, f"{path}: {problem}" if problem else str(path)))
    return CheckReport("template space", "step", tuple(findings))


# --- the whole check ------------------------------------------------------------


def all_ok(reports: Sequence[CheckReport]) -> bool:
    """True when every step and every method checked can run."""
    return all(report.ok for report in reports)
