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
    for method in wanted:
        reason = None
        if method == "freesurfer":
            if config.fs_subjects_dir is None:
                reason = "no --fs-subjects-dir given (running recon-all is not available in this version)"
            else:
                fs_subject_dir = freesurfer.find_subject(config.fs_subjects_dir, session.subject, session.session)
                if fs_subject_dir is None:
                    reason = (
                        f"no finished FreeSurfer subject sub-{session.subject}"
                        + (f"_ses-{session.session} or sub-{session.subject}" if session.session else "")
                        + f" (with mri/aseg.mgz and stats/aseg.stats) in {config.fs_subjects_dir}"
                    )
        if reason is None:
            run.append(method)
        elif config.methods is not None:
            raise ThalamusError(f"{session.name}: method {method!r} cannot run: {reason}", EXIT_NOINPUT)
        else:
            skipped[method] = reason
            LOGGER.info("%s: method %s skipped: %s", session.name, method, reason)
    return MethodPlan(run=tuple(run), skipped=skipped, fs_subject_dir=fs_subject_dir)
