"""FSL FIRST adapter: ``run_first_all -s L_Thal,R_Thal -b`` on the brain-masked T1w.

How FSL is found: ``$FSLDIR`` (or an explicit folder) must contain
``bin/run_first_all``; the version is read from ``$FSLDIR/etc/fslversion``.

The command is built by hand rather than with ``nipype.interfaces.fsl.FIRST``
because that interface always adds ``-m auto`` (its ``method`` input has
``usedefault=True``) and orders the flags differently; the command below is
the one in the paper (section 2.6.2), and ``-m auto`` is run_first_all's own
default anyway.

Outputs: ``<prefix>_all_<method>_firstseg.nii.gz`` on the grid of the input
(FIRST does not reorient or resample its input), with the CMA labels 10
(L_Thal) and 49 (R_Thal). With ``-s`` and the default ``-m auto``,
run_first_all names the file ``_all_none_firstseg`` (no boundary correction
for single-structure runs; nipype's FIRST interface encodes the same rule);
a full run names it ``_all_fast_firstseg``. Both are accepted.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.ensembles import binary, check_same_grid, mask_like
from thalamus_bidsapp.tools.check import VERSION_CALLS, CheckOptions, CheckReport, Finding, data_file, executable
from thalamus_bidsapp.tools.fslinstall import find_fsl_tool
from thalamus_bidsapp.tools.fslinstall import fsl_version as read_fsl_version

logger = logging.getLogger(__name__)

FIRST_STRUCTURES: tuple[str, ...] = ("L_Thal", "R_Thal")
STDERR_TAIL_LINES = 20


def _first_labels() -> dict[str, Any]:
    text = importlib.resources.files("thalamus_bidsapp").joinpath("data/first_labels.json").read_text()
    return json.loads(text)


#: CMA label values of the thalamus in FIRST's firstseg (10 = L_Thal, 49 = R_Thal).
FIRST_THALAMUS_LABELS: tuple[int, ...] = tuple(_first_labels()["Labels"][s] for s in FIRST_STRUCTURES)

_HOW_TO_PROVIDE = (
    "Install FSL (6.0.7 was used in the paper) and set FSLDIR to its folder "
    "(it must contain bin/run_first_all), or pass the FSL folder explicitly; "
    "or leave 'first' out of --methods."
)


def find_fsl(fsldir: str | os.PathLike | None = None) -> Path:
    """Return the FSL installation folder that holds ``bin/run_first_all``.

    Parameters
    ----------
    fsldir
        FSL folder; default ``$FSLDIR``.

    Raises
    ------
    ThalamusError
        Exit 66 when FSLDIR is unset or has no executable ``bin/run_first_all``.
    """
    found = find_fsl_tool("run_first_all", fsldir=fsldir, search_path=False)
    if found.fsldir is None:
        raise ThalamusError(f"FSL not found: FSLDIR is not set. {_HOW_TO_PROVIDE}", EXIT_NOINPUT)
    if found.executable is None:
        exe = found.fsldir / "bin" / "run_first_all"
        raise ThalamusError(
            f"FSL FIRST not found: {exe} (from {found.source}={found.fsldir}) is missing or not executable. "
            f"{_HOW_TO_PROVIDE}",
            EXIT_NOINPUT,
        )
    return found.fsldir


def run_first_all_path(fsldir: str | os.PathLike | None = None) -> Path:
    """Absolute path of ``run_first_all`` in the FSL found by :func:`find_fsl`."""
    return find_fsl(fsldir) / "bin" / "run_first_all"


def fsl_version(fsldir: str | os.PathLike | None = None) -> str | None:
    """FSL version of the FSL found by :func:`find_fsl` (e.g. ``6.0.7.9``), or None if unreadable."""
    version = read_fsl_version(find_fsl(fsldir))
    if version is None:
        logger.warning("FSL version file not readable in %s", find_fsl(fsldir))
    return version


def first_command(
    brain_t1w: str | os.PathLike,
    out_prefix: str | os.PathLike,
    fsldir: str | os.PathLike | None = None,
    structures: tuple[str, ...] = FIRST_STRUCTURES,
) -> list[str]:
    """The run_first_all command line as an argument list.

    ``[$FSLDIR/bin/run_first_all, -s, L_Thal,R_Thal, -b, -i, <brain T1w>, -o, <prefix>]``

    Parameters
    ----------
    brain_t1w
        Brain-masked (skull-stripped) T1w NIfTI; ``-b`` tells FIRST it is
        already brain-extracted.
    out_prefix
        Output prefix (folder and file stem) for all FIRST outputs.
    fsldir
        FSL folder; default ``$FSLDIR``.
    structures
        FIRST structure names for ``-s``.
    """
    return [
        str(run_first_all_path(fsldir)),
        "-s",
        ",".join(structures),
        "-b",
        "-i",
        str(brain_t1w),
        "-o",
        str(out_prefix),
    ]


def find_firstseg(out_prefix: str | os.PathLike) -> Path:
    """The ``<prefix>_all_<method>_firstseg.nii.gz`` FIRST wrote.

    ``_all_none_`` (single-structure runs with ``-m auto``) is preferred, then
    ``_all_fast_``, then any other method name.

    Raises
    ------
    ThalamusError
        Exit 66 when no firstseg exists for the prefix.
    """
    prefix = Path(out_prefix)
    candidates = [prefix.parent / f"{prefix.name}_all_{m}_firstseg.nii.gz" for m in ("none", "fast")]
    for path in candidates:
        if path.is_file():
            return path
    others = sorted(prefix.parent.glob(f"{prefix.name}_all_*_firstseg.nii*"))
    if others:
        return others[0]
    raise ThalamusError(
        f"FSL FIRST output not found: expected {candidates[0]} (or _all_fast_firstseg) after run_first_all",
        EXIT_NOINPUT,
    )


def run_first(
    brain_t1w: str | os.PathLike,
    out_prefix: str | os.PathLike,
    fsldir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> Path:
    """Run run_first_all on the brain-masked T1w; return the firstseg path.

    The subprocess gets ``FSLDIR``, ``$FSLDIR/bin`` first on ``PATH`` and
    ``FSLOUTPUTTYPE=NIFTI_GZ`` (so outputs are ``.nii.gz`` whatever the
    user's shell sets).

    Raises
    ------
    ThalamusError
        Exit 66 if FSL is missing; exit 65 if run_first_all fails, with the
        command and the last lines of its output.
    """
    root = find_fsl(fsldir)
    cmd = first_command(brain_t1w, out_prefix, root)
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["FSLDIR"] = str(root)
    env["FSLOUTPUTTYPE"] = "NIFTI_GZ"
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    logger.info("running FSL FIRST: %s", shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-STDERR_TAIL_LINES:])
        raise ThalamusError(
            f"FSL FIRST failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}", EXIT_DATAERR
        )
    return find_firstseg(out_prefix)


def brain_masked_t1w(
    t1w_img: nib.spatialimages.SpatialImage, brain_mask_img: nib.spatialimages.SpatialImage
) -> nib.Nifti1Image:
    """T1w x brain mask, the skull-stripped input FIRST gets (paper: T1w masked with the brain mask).

    Parameters
    ----------
    t1w_img
        Native T1w, shape (X, Y, Z), arbitrary intensity units.
    brain_mask_img
        Binary brain mask on the same grid (values > 0 are brain).

    Returns
    -------
    nibabel.Nifti1Image
        float32 image on the T1w grid, 0 outside the brain.
    """
    check_same_grid([t1w_img, brain_mask_img], ["T1w", "brain mask"])
    data = np.asanyarray(t1w_img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    out = nib.Nifti1Image(np.where(binary(brain_mask_img), data, 0).astype(np.float32), t1w_img.affine)
    ref = mask_like(np.zeros(t1w_img.shape[:3], bool), t1w_img)  # carries the T1w's qform/sform codes
    out.set_qform(ref.affine, code=int(ref.header["qform_code"]))
    out.set_sform(ref.affine, code=int(ref.header["sform_code"]))
    out.header.set_xyzt_units(*ref.header.get_xyzt_units())
    return out


def firstseg_labels(firstseg_path: str | os.PathLike, t1w_img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The integer labels of a FIRST firstseg, checked to lie on the T1w grid (see :func:`first_thalamus_mask`)."""
    seg = nib.load(str(firstseg_path))
    check_same_grid([t1w_img, seg], ["T1w", f"FIRST segmentation {firstseg_path}"])
    labels = np.asanyarray(seg.dataobj)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    return np.rint(labels).astype(np.int32)


def first_thalamus_mask(
    firstseg_path: str | os.PathLike, t1w_img: nib.spatialimages.SpatialImage
) -> nib.Nifti1Image:
    """Left and right thalamus (labels 10 and 49) of a FIRST firstseg, merged, on the T1w grid.

    FIRST writes its segmentation on the grid of its input, which is the
    brain-masked T1w made on the native T1w grid, so no resampling is done:
    a firstseg on another grid is an error rather than a silent resample.

    Parameters
    ----------
    firstseg_path
        ``<prefix>_all_<method>_firstseg.nii.gz``.
    t1w_img
        The native T1w (defines the output grid).

    Returns
    -------
    nibabel.Nifti1Image
        uint8 0/1 mask, shape and affine of ``t1w_img``.
    """
    labels = firstseg_labels(firstseg_path, t1w_img)
    mask = np.isin(labels, FIRST_THALAMUS_LABELS)
    if not mask.any():
        logger.warning("FIRST segmentation %s has no thalamus voxels (labels %s)", firstseg_path, FIRST_THALAMUS_LABELS)
    return mask_like(mask, t1w_img)


def provenance(
    cmd: list[str] | None = None, fsldir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Sidecar fields for a FIRST thalamus mask: tool, version, command, labels taken."""
    return {
        "Tool": "FSL FIRST (run_first_all)",
        "Version": fsl_version(fsldir),
        "Command": shlex.join(cmd) if cmd else None,
        "Structures": list(FIRST_STRUCTURES),
        "LabelsTaken": {str(v): s for s, v in zip(FIRST_STRUCTURES, FIRST_THALAMUS_LABELS)},
    }


# --- --check-tools ------------------------------------------------------------

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

_FSLDIR_REFERENCE = re.compile(r"\$\{?FSLDIR\}?/(bin|data/standard)/([A-Za-z0-9_.\-]*[A-Za-z0-9_])(?![\w${-])")


def check_installation(options: CheckOptions) -> CheckReport:
    """FSL's FIRST: its programs (and what its scripts call), version, models and templates."""
    try:
        fsldir = find_fsl()
    except ThalamusError as err:
        return CheckReport("first", "method", (Finding("FSL", False, str(err)),))
    version = fsl_version(fsldir)
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
