"""Which thalamus segmentation methods run for a session, and why others do not.

By default every method whose tool is found runs and the others are listed
with the reason; a method named in ``--methods`` that cannot run is an error
that says how to provide it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.interfaces import freesurfer

LOGGER = logging.getLogger(__name__)

#: Methods this version can run, in report order.
AVAILABLE_METHODS = ("freesurfer",)


@dataclass(frozen=True)
class MethodPlan:
    """The methods a session runs (``run``) and the skipped ones with reasons."""

    run: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    fs_subject_dir: Path | None = None
    recon_all: ReconAllJob | None = None


@dataclass(frozen=True)
class ReconAllJob:
    """A recon-all run to do because no finished FreeSurfer subject exists."""

    subject_id: str
    subjects_dir: Path
    license_file: Path


def plan_methods(session: SessionInputs, config: RunConfig) -> MethodPlan:
    """Decide the methods of one session.

    Raises
    ------
    ThalamusError
        A method asked for with ``--methods`` whose tool or inputs are
        missing (exit 66).
    """
    wanted = config.methods if config.methods is not None else AVAILABLE_METHODS
    run: list[str] = []
    skipped: dict[str, str] = {}
    fs_subject_dir = None
    recon_all = None
    for method in wanted:
        reason = None
        if method == "freesurfer":
            fs_subject_dir, recon_all, reason = _plan_freesurfer(session, config, required=config.methods is not None)
        if reason is None:
            run.append(method)
        elif config.methods is not None:
            raise ThalamusError(f"{session.name}: method {method!r} cannot run: {reason}", EXIT_NOINPUT)
        else:
            skipped[method] = reason
            LOGGER.info("%s: method %s skipped: %s", session.name, method, reason)
    return MethodPlan(run=tuple(run), skipped=skipped, fs_subject_dir=fs_subject_dir, recon_all=recon_all)


def _plan_freesurfer(
    session: SessionInputs, config: RunConfig, *, required: bool
) -> tuple[Path | None, ReconAllJob | None, str | None]:
    """Reuse a finished subject, else plan recon-all, else say why FreeSurfer cannot run."""
    subjects_dir = config.fs_subjects_dir or config.output_dir / "sourcedata" / "freesurfer"
    existing = freesurfer.find_subject(subjects_dir, session.subject, session.session)
    if existing is not None:
        return existing, None, None
    if freesurfer.recon_all_executable() is None:
        return None, None, (
            f"no finished FreeSurfer subject {session.name} or sub-{session.subject} in {subjects_dir} "
            "and recon-all is not installed (set FREESURFER_HOME)"
        )
    license_file = freesurfer.find_license(config.fs_license_file)
    if license_file is None:
        if required:
            raise freesurfer.license_error()
        return None, None, str(freesurfer.license_error())
    return None, ReconAllJob(subject_id=session.name, subjects_dir=subjects_dir, license_file=license_file), None
