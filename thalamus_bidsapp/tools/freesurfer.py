"""FreeSurfer: find subjects and the license, read aseg and eTIV.

The thalamus is aseg labels 10 and 49 (``data/freesurfer_labels.json``),
brought from FreeSurfer's conformed space onto the native T1w grid by nearest
neighbour through both images' vox2ras matrices. The session's ICV is
``EstimatedTotalIntraCranialVol`` (eTIV) from ``stats/aseg.stats``.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import shutil
from pathlib import Path

import nibabel as nib

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.masks import mask_from_labels
from thalamus_bidsapp.image.resample import labels_to_grid
from thalamus_bidsapp.tools.check import VERSION_CALLS, CheckOptions, CheckReport, Finding, executable

LOGGER = logging.getLogger(__name__)

_ETIV = re.compile(r"^#\s*Measure\s+EstimatedTotalIntraCranialVol,\s*eTIV,[^,]*,\s*([0-9.eE+-]+),\s*mm\^3")
_VERSION = re.compile(r"^#\s*cvs_version\s+(\S+)")


def thalamus_labels() -> dict[int, str]:
    """aseg label value -> structure name for the left and right thalamus."""
    text = importlib.resources.files("thalamus_bidsapp.data").joinpath("freesurfer_labels.json").read_text()
    table = json.loads(text)
    return {int(k): v for k, v in table["thalamus"].items()}


def find_license(cli_path: Path | None, freesurfer_home: Path | None = None) -> Path | None:
    """The FreeSurfer license: ``--fs-license-file`` (or ``$FS_LICENSE``, read with the configuration), then
    ``<freesurfer_home>/license.txt`` (``$FREESURFER_HOME``)."""
    candidates: list[Path | None] = [cli_path]
    if freesurfer_home is not None:
        candidates.append(Path(freesurfer_home) / "license.txt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def license_error() -> ThalamusError:
    return ThalamusError(
        "no FreeSurfer license found: give it with --fs-license-file, or set $FS_LICENSE, "
        "or put it at $FREESURFER_HOME/license.txt (free from "
        "https://surfer.nmr.mgh.harvard.edu/registration.html)",
        EXIT_NOINPUT,
    )


def find_subject(subjects_dir: Path, subject: str, session: str | None) -> Path | None:
    """A finished FreeSurfer subject for this session, or None.

    Looks for ``sub-<label>_ses-<label>`` first (one recon per session), then
    ``sub-<label>``; a subject counts as finished when it has
    ``mri/aseg.mgz`` and ``stats/aseg.stats``.
    """
    names = [f"sub-{subject}_ses-{session}"] if session else []
    names.append(f"sub-{subject}")
    for name in names:
        candidate = Path(subjects_dir) / name
        if (candidate / "mri" / "aseg.mgz").is_file() and (candidate / "stats" / "aseg.stats").is_file():
            return candidate
    return None


def read_etiv(stats_file: Path) -> float:
    """eTIV in mm3 from an ``aseg.stats`` file.

    Raises
    ------
    ThalamusError
        When the file has no ``EstimatedTotalIntraCranialVol`` measure (exit 65).
    """
    for line in Path(stats_file).read_text().splitlines():
        match = _ETIV.match(line)
        if match:
            return float(match.group(1))
    raise ThalamusError(f"{stats_file} has no EstimatedTotalIntraCranialVol (eTIV) measure", EXIT_DATAERR)


def freesurfer_version(subject_dir: Path) -> str:
    """The FreeSurfer version that made a subject, from its ``aseg.stats`` header or build stamp."""
    stats = Path(subject_dir) / "stats" / "aseg.stats"
    if stats.is_file():
        for line in stats.read_text().splitlines()[:20]:
            match = _VERSION.match(line)
            if match:
                return match.group(1)
    stamp = Path(subject_dir) / "scripts" / "build-stamp.txt"
    if stamp.is_file():
        return stamp.read_text().strip()
    return "unknown"


def aseg_on_grid(subject_dir: Path, t1w: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    """The subject's ``mri/aseg.mgz`` on the T1w grid (nearest neighbour through both vox2ras matrices)."""
    aseg_path = Path(subject_dir) / "mri" / "aseg.mgz"
    try:
        aseg = nib.load(str(aseg_path))
    except Exception as err:
        raise ThalamusError(f"cannot read {aseg_path}: {err}", EXIT_DATAERR) from err
    return labels_to_grid(aseg, t1w)


def thalamus_from_subject(
    subject_dir: Path, t1w: nib.spatialimages.SpatialImage, aseg: nib.spatialimages.SpatialImage | None = None
) -> tuple[nib.Nifti1Image, dict]:
    """Binary thalamus mask on the T1w grid and provenance, from a finished subject.

    The provenance holds the FreeSurfer version, the labels used and the eTIV
    (``icv_ml``) read from ``stats/aseg.stats``. ``aseg`` is the subject's
    aseg already on the T1w grid (:func:`aseg_on_grid`), when the caller has it.
    """
    labels = thalamus_labels()
    mask = mask_from_labels(aseg if aseg is not None else aseg_on_grid(subject_dir, t1w), labels)
    etiv_mm3 = read_etiv(Path(subject_dir) / "stats" / "aseg.stats")
    provenance = {
        "Tool": "FreeSurfer",
        "Version": freesurfer_version(subject_dir),
        "SubjectDir": str(subject_dir),
        "LabelsUsed": {str(k): v for k, v in labels.items()},
        "Resampling": "nearest neighbour from the conformed aseg onto the T1w grid through both vox2ras matrices",
        "ICV": {"source": "FreeSurfer eTIV (stats/aseg.stats EstimatedTotalIntraCranialVol)", "icv_ml": etiv_mm3 / 1000.0},
    }
    return mask, provenance


# --- running recon-all when no finished subject exists -----------------------


def recon_all_executable(freesurfer_home: Path | None = None) -> str | None:
    """Path of ``recon-all`` (on PATH or in ``<freesurfer_home>/bin``, the configured ``FREESURFER_HOME``), or None."""
    import shutil

    found = shutil.which("recon-all")
    if found:
        return found
    home = freesurfer_home
    candidate = Path(home) / "bin" / "recon-all" if home else None
    return str(candidate) if candidate and candidate.is_file() and os.access(candidate, os.X_OK) else None


def recon_all_command(
    t1w: Path, subject_id: str, subjects_dir: Path, *, t2w: Path | None = None, nthreads: int = 1
) -> list[str]:
    """The ``recon-all -all`` command, built with nipype's ReconAll interface.

    With a T2w, FreeSurfer refines the pial surface with it (``-T2 -T2pial``).
    """
    from nipype.interfaces.freesurfer import ReconAll

    recon = ReconAll(subject_id=subject_id, directive="all", subjects_dir=str(subjects_dir), T1_files=[str(t1w)])
    if t2w is not None:
        recon.inputs.T2_file = str(t2w)
        recon.inputs.use_T2 = True
    if nthreads > 1:
        recon.inputs.openmp = nthreads
    return recon.cmdline.split()


def run_recon_all(
    t1w: Path,
    subject_id: str,
    subjects_dir: Path,
    *,
    license_file: Path,
    executable: str | None = None,
    t2w: Path | None = None,
    nthreads: int = 1,
    log_file: Path | None = None,
) -> Path:
    """Run ``recon-all -all`` and return the finished subject folder.

    Raises
    ------
    ThalamusError
        recon-all is missing (exit 66) or fails (exit 65, with the tail of its log).
    """
    import subprocess

    executable = executable or recon_all_executable()
    if executable is None:
        raise ThalamusError("recon-all not found: install FreeSurfer 7.4.1 and set FREESURFER_HOME, "
                            "or give finished subjects with --fs-subjects-dir", EXIT_NOINPUT)
    subjects_dir = Path(subjects_dir)
    subjects_dir.mkdir(parents=True, exist_ok=True)
    command = recon_all_command(t1w, subject_id, subjects_dir, t2w=t2w, nthreads=nthreads)
    command[0] = executable
    env = {**os.environ, "SUBJECTS_DIR": str(subjects_dir), "FS_LICENSE": str(license_file)}
    LOGGER.info("running FreeSurfer recon-all for %s (several hours): %s", subject_id, " ".join(command))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if log_file is not None:
        Path(log_file).write_text(result.stdout + result.stderr)
    subject_dir = find_subject(subjects_dir, *_split_subject_id(subject_id))
    if result.returncode != 0 or subject_dir is None:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise ThalamusError(
            f"recon-all failed for {subject_id} (exit {result.returncode}); see "
            f"{subjects_dir / subject_id / 'scripts' / 'recon-all.log'}. Last lines:\n{tail}",
            EXIT_DATAERR,
        )
    return subject_dir


def _split_subject_id(subject_id: str) -> tuple[str, str | None]:
    """``sub-01_ses-2`` -> ("01", "2"); ``sub-01`` -> ("01", None)."""
    subject, _, session = subject_id.partition("_ses-")
    return subject.removeprefix("sub-"), session or None


# --- --check-tools ------------------------------------------------------------

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
#: What ``recon-all -base`` and ``-long`` run beyond ``-all`` (the longitudinal mode; optional in the check).
FREESURFER_LONGITUDINAL_PROGRAMS: tuple[str, ...] = (
    "mri_robust_template", "mri_concatenate_lta", "mri_diff", "mri_fuse_segmentations",
)
#: Programs recon-all's scripts need on PATH; procps's uptime because fs_time aborts without it.
FREESURFER_HELPERS: tuple[str, ...] = ("tcsh", "bc", "perl", "uptime")


def check_installation(options: CheckOptions) -> CheckReport:
    """recon-all and what it runs (linkage), its helpers on PATH, and the licence."""
    findings: list[Finding] = []
    home = options.environment.freesurfer_home
    recon_all = recon_all_executable(home)
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
        for name in FREESURFER_LONGITUDINAL_PROGRAMS:
            findings += executable(f"{name} (longitudinal stream)", home / "bin" / name, required=False)
        for helper in FREESURFER_HELPERS:
            found = shutil.which(helper)
            findings.append(Finding(helper, found is not None, found or "not on PATH (recon-all's scripts need it)"))
    licence = find_license(options.option("fs_license_file"), options.environment.freesurfer_home)
    if licence is not None:
        findings.append(Finding("licence", True, f"found: {licence}"))
    else:
        findings.append(Finding(
            "licence", False,
            "not found: give --fs-license-file, or set FS_LICENSE, or put it at $FREESURFER_HOME/license.txt"
            + ("" if options.require_license else " (a run-time input, not required in this check)"),
            required=options.require_license))
    return CheckReport("freesurfer", "method", tuple(findings))
