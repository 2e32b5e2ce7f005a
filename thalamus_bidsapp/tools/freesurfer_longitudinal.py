"""FreeSurfer's longitudinal stream: ``recon-all -base`` and ``recon-all -long``, run or reused.

The timepoints are the cross-sectional subjects the ``freesurfer`` method
reads or makes (``sub-<label>_ses-<label>``). The base (within-subject
template) is ``sub-<label>_base``; each timepoint's longitudinal subject is
FreeSurfer's ``<timepoint>.long.<base>``.

A subject counts as finished when recon-all left ``scripts/recon-all.done``
and the files read here (``mri/aseg.mgz`` for a longitudinal subject, the
``base-tps`` list for the base). A finished base whose ``base-tps`` differs
from the timepoints now present is moved aside (``<name>.replaced-<time>``)
together with its longitudinal subjects, which depend on it, and rebuilt; an
unfinished subject (a run that stopped) is moved aside the same way, since
recon-all refuses an existing base and nipype cannot resume these streams.

The longitudinal subjects' volumes live in the base's space: the aseg is
brought back to the timepoint's scanner space through the inverse of
``<base>/mri/transforms/<timepoint>_to_<base>.lta``, the transform the base
made, and from there onto the T1w grid like the cross-sectional aseg.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.resample import labels_to_grid

LOGGER = logging.getLogger(__name__)

DONE_FILE = Path("scripts") / "recon-all.done"
BASE_TIMEPOINTS_FILE = "base-tps"


def base_id(subject: str) -> str:
    """The base (within-subject template) of ``subject`` (label without ``sub-``)."""
    return f"sub-{subject}_base"


def timepoint_id(subject: str, session: str) -> str:
    """The cross-sectional subject of a session, as the ``freesurfer`` method names it."""
    return f"sub-{subject}_ses-{session}"


def long_id(timepoint: str, base: str) -> str:
    """FreeSurfer's name for a timepoint's longitudinal subject."""
    return f"{timepoint}.long.{base}"


def base_command(base: str, timepoints: list[str], subjects_dir: Path, *, nthreads: int = 1) -> list[str]:
    """``recon-all -all -base <base> -tp <tp1> -tp <tp2> ... -sd <dir>``, built with nipype's ReconAll.

    nipype writes each timepoint as ``-base-tp``, an alias recon-all accepts; it is given here as ``-tp``,
    the form FreeSurfer documents.
    """
    from nipype.interfaces.freesurfer import ReconAll

    recon = ReconAll(directive="all", base_template_id=base, base_timepoint_ids=list(timepoints),
                     subjects_dir=str(subjects_dir))
    if nthreads > 1:
        recon.inputs.openmp = nthreads
    return ["-tp" if arg == "-base-tp" else arg for arg in recon.cmdline.split()]


def long_command(timepoint: str, base: str, subjects_dir: Path, *, nthreads: int = 1) -> list[str]:
    """``recon-all -all -long <timepoint> <base> -sd <dir>``, built with nipype's ReconAll."""
    from nipype.interfaces.freesurfer import ReconAll

    recon = ReconAll(directive="all", longitudinal_timepoint_id=timepoint, longitudinal_template_id=base,
                     subjects_dir=str(subjects_dir))
    if nthreads > 1:
        recon.inputs.openmp = nthreads
    return recon.cmdline.split()


def cross_sectional_finished(subjects_dir: Path, timepoint: str) -> bool:
    """A cross-sectional subject the longitudinal stream can start from (aseg and its stats written)."""
    folder = Path(subjects_dir) / timepoint
    return (folder / "mri" / "aseg.mgz").is_file() and (folder / "stats" / "aseg.stats").is_file()


def base_timepoints(subjects_dir: Path, base: str) -> list[str] | None:
    """The timepoints of a finished base (its ``base-tps``), or None when the base is absent or unfinished."""
    folder = Path(subjects_dir) / base
    listing = folder / BASE_TIMEPOINTS_FILE
    if not (folder / DONE_FILE).is_file() or not listing.is_file():
        return None
    return listing.read_text().split()


def long_finished(subjects_dir: Path, timepoint: str, base: str) -> bool:
    folder = Path(subjects_dir) / long_id(timepoint, base)
    return (folder / DONE_FILE).is_file() and (folder / "mri" / "aseg.mgz").is_file()


@dataclass
class StreamPlan:
    """What the longitudinal stream of one subject must run (empty lists: everything is reused)."""

    base: str
    timepoints: list[str]
    run_base: bool
    run_long: list[str]
    set_aside: list[Path] = field(default_factory=list)
    reason: str = ""

    @property
    def needs_recon_all(self) -> bool:
        return self.run_base or bool(self.run_long)


def plan_stream(subjects_dir: Path, subject: str, timepoints: list[str]) -> StreamPlan:
    """Which parts of the stream are reused and which run; what must be moved aside first."""
    subjects_dir = Path(subjects_dir)
    base = base_id(subject)
    found = base_timepoints(subjects_dir, base)
    old_long = sorted(p for p in subjects_dir.glob(f"*.long.{base}") if p.is_dir())
    if found is not None and sorted(found) == sorted(timepoints):
        stale_long = [subjects_dir / long_id(tp, base) for tp in timepoints
                      if (subjects_dir / long_id(tp, base)).exists() and not long_finished(subjects_dir, tp, base)]
        run_long = [tp for tp in timepoints if not long_finished(subjects_dir, tp, base)]
        return StreamPlan(base, timepoints, False, run_long, stale_long, "base reused")
    if found is not None:
        reason = f"base {base} was made from {', '.join(found)}; the timepoints are now {', '.join(timepoints)}"
    elif (subjects_dir / base).exists():
        reason = f"base {base} is unfinished (no {DONE_FILE.as_posix()} or {BASE_TIMEPOINTS_FILE})"
    else:
        reason = f"no base {base} yet"
    aside = ([subjects_dir / base] if (subjects_dir / base).exists() else []) + old_long
    return StreamPlan(base, timepoints, True, list(timepoints), aside, reason)


def set_aside(paths: list[Path]) -> list[Path]:
    """Rename each folder to ``<name>.replaced-<UTC time>`` (kept, never deleted); the new names."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    moved = []
    for path in paths:
        target = path.with_name(f"{path.name}.replaced-{stamp}")
        path.rename(target)
        LOGGER.info("FreeSurfer longitudinal: moved %s aside to %s", path, target.name)
        moved.append(target)
    return moved


def run_recon_all_command(command: list[str], subjects_dir: Path, *, executable: str, license_file: Path,
                          subject_name: str) -> None:
    """Run one recon-all command of the stream.

    Raises
    ------
    ThalamusError
        recon-all fails or leaves no ``recon-all.done`` (exit 65, with the tail of its output).
    """
    command = [executable, *command[1:]]
    env = {**os.environ, "SUBJECTS_DIR": str(subjects_dir), "FS_LICENSE": str(license_file)}
    LOGGER.info("running FreeSurfer %s (hours): %s", subject_name, " ".join(command))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not (Path(subjects_dir) / subject_name / DONE_FILE).is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise ThalamusError(f"recon-all failed for {subject_name} (exit {result.returncode}); see "
                            f"{Path(subjects_dir) / subject_name / 'scripts' / 'recon-all.log'}. Last lines:\n{tail}",
                            EXIT_DATAERR)


def timepoint_to_base(subjects_dir: Path, timepoint: str, base: str) -> np.ndarray:
    """RAS-to-RAS matrix from the timepoint's scanner space to the base's (``<tp>_to_<base>.lta``)."""
    from nitransforms.io.lta import FSLinearTransformArray

    path = Path(subjects_dir) / base / "mri" / "transforms" / f"{timepoint}_to_{base}.lta"
    try:
        # nitransforms gives the mapping that pulls the source from the destination (base -> timepoint, RAS),
        # the inverse of the LTA's own source-to-destination matrix.
        pull = np.asarray(FSLinearTransformArray.from_filename(str(path)).to_ras(), float).reshape(-1, 4, 4)[0]
        return np.linalg.inv(pull)
    except Exception as err:
        raise ThalamusError(f"cannot read {path}: {err}", EXIT_DATAERR) from err


def long_aseg_on_grid(subjects_dir: Path, timepoint: str, base: str,
                      t1w: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """The longitudinal subject's ``mri/aseg.mgz`` on the session's T1w grid (nearest neighbour)."""
    aseg_path = Path(subjects_dir) / long_id(timepoint, base) / "mri" / "aseg.mgz"
    try:
        aseg = nib.load(str(aseg_path))
    except Exception as err:
        raise ThalamusError(f"cannot read {aseg_path}: {err}", EXIT_DATAERR) from err
    return labels_to_grid(aseg, t1w, world_map=timepoint_to_base(subjects_dir, timepoint, base))


@dataclass
class StreamResult:
    """Per session label: the thalamus side map on the T1w grid and its provenance; why nothing was measured."""

    sides: dict[str, nib.Nifti1Image] = field(default_factory=dict)
    sidecars: dict[str, dict] = field(default_factory=dict)
    skipped: str | None = None


def run_stream(subjects_dir: Path, subject: str, sessions: list[tuple[str, Path]], *, executable: str | None,
               license_file: Path | None, left: tuple[int, ...], right: tuple[int, ...],
               threads: int = 1) -> StreamResult:
    """Run or reuse the stream of one subject; each measured session's thalamus (``left``/``right`` aseg labels).

    ``sessions``: (label, published T1w) in time order. A session without a finished cross-sectional
    subject is left out; fewer than two timepoints, or parts to run without recon-all or a licence, skip the
    subject; a failed ``-long`` leaves that session out (all logged).
    """
    from thalamus_bidsapp.image.sides import sides_from_labels

    subjects_dir = Path(subjects_dir)
    present = []
    for label, t1w in sessions:
        if cross_sectional_finished(subjects_dir, timepoint_id(subject, label)):
            present.append((label, t1w))
        else:
            LOGGER.warning("sub-%s_ses-%s: no finished FreeSurfer subject %s in %s: left out of the FreeSurfer "
                           "longitudinal stream", subject, label, timepoint_id(subject, label), subjects_dir)
    if len(present) < 2:
        LOGGER.info("sub-%s: FreeSurfer longitudinal stream skipped: %d finished cross-sectional subject (two are "
                    "needed)", subject, len(present))
        return StreamResult(skipped="fewer than two finished timepoints")
    timepoints = [timepoint_id(subject, label) for label, _ in present]
    plan = plan_stream(subjects_dir, subject, timepoints)
    if plan.needs_recon_all and (executable is None or license_file is None):
        missing = "recon-all is not installed (set FREESURFER_HOME)" if executable is None else \
            "no FreeSurfer licence (--fs-license-file, $FS_LICENSE or $FREESURFER_HOME/license.txt)"
        unfinished = ([f"base {plan.base} ({plan.reason})"] if plan.run_base else []) + [
            long_id(tp, plan.base) for tp in plan.run_long]
        LOGGER.warning("sub-%s: FreeSurfer longitudinal stream skipped: %s, and these are not finished: %s",
                       subject, missing, ", ".join(unfinished))
        return StreamResult(skipped=missing)
    if plan.run_base:
        LOGGER.info("sub-%s: FreeSurfer base %s is built: %s", subject, plan.base, plan.reason)
    elif not plan.run_long:
        LOGGER.info("sub-%s: FreeSurfer base %s and every %s reused from %s", subject, plan.base,
                    long_id("<timepoint>", plan.base), subjects_dir)
    set_aside(plan.set_aside)
    if plan.run_base:
        run_recon_all_command(base_command(plan.base, timepoints, subjects_dir, nthreads=threads), subjects_dir,
                              executable=executable, license_file=license_file, subject_name=plan.base)
    failed = set()
    for timepoint in plan.run_long:
        try:
            run_recon_all_command(long_command(timepoint, plan.base, subjects_dir, nthreads=threads), subjects_dir,
                                  executable=executable, license_file=license_file,
                                  subject_name=long_id(timepoint, plan.base))
        except ThalamusError as err:  # one timepoint's failure must not cost the others their change
            LOGGER.error("sub-%s: %s", subject, err)
            failed.add(timepoint)
    result = StreamResult()
    for (label, t1w_path), timepoint in zip(present, timepoints):
        if timepoint in failed:
            continue
        t1w = nib.load(str(t1w_path))
        aseg = long_aseg_on_grid(subjects_dir, timepoint, plan.base, t1w)
        result.sides[label] = nib.Nifti1Image(sides_from_labels(np.asanyarray(aseg.dataobj), left, right), t1w.affine)
        long_dir = subjects_dir / long_id(timepoint, plan.base)
        result.sidecars[label] = {
            "Description": f"aseg labels {list(left)} (left) and {list(right)} (right) of FreeSurfer's longitudinal "
                           "stream, brought from the base's space back to the session through the inverse of the "
                           "timepoint's transform to the base, then onto the T1w grid by nearest neighbour",
            "Sources": [str(long_dir / "mri" / "aseg.mgz"),
                        str(subjects_dir / plan.base / "mri" / "transforms" / f"{timepoint}_to_{plan.base}.lta")],
            "FreeSurferBase": str(subjects_dir / plan.base), "FreeSurferTimepoints": timepoints}
    return result
