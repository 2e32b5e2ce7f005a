"""What can run here: every method and step, checked without running them (``--check-tools``).

For each method and step this finds the executables (path and version),
checks that compiled programs link (``ldd`` shows no "not found") and that
scripts' interpreters exist, checks model files (present, sha256 against the
pinned value where one is known), the FreeSurfer licence (found or not; its
content is never read), FIRST's models and templates, and that the caches
the run writes are writable by this user. Nothing is downloaded and no tool
is run beyond asking for its version.

It reuses the adapters' own discovery, so what it reports is what a run would
find. This module holds the building blocks and the checks of the steps every
session runs; a method's own check lives beside its tool in its adapter
(``tools/first.py``, ``tools/freesurfer.py``, ...: ``check_installation``),
its method module declares it (``SegmentationMethod.check_installation``), and
``cli/check_tools.py`` loops over the method registry.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from thalamus_bidsapp.bidsio.checksums import file_digest
from thalamus_bidsapp.config import Environment
from thalamus_bidsapp.errors import ThalamusError

LOGGER = logging.getLogger(__name__)

#: The version call of the tools that have one (exit 0 when the tool works); the others are only found and linked.
VERSION_CALLS: dict[str, tuple[str, ...]] = {"flirt": ("-version",), "recon-all": ("--version",)}
_LDD_TIMEOUT_S = 60
#: Seconds a tool's version call may take (FreeSurfer's scripts start a shell and read their build stamp).
_VERSION_TIMEOUT_S = 60


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

    def option(self, name: str, default: Any = None) -> Any:
        """A method's option as given (``--fs-license-file`` -> ``fs_license_file``), else ``default``.

        With :attr:`environment`, this is what a method's tool check reads of a
        run's configuration too (``methods.base.ToolSettings``), so one check
        serves both.
        """
        value = self.method_options.get(name)
        return default if value is None else value


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
