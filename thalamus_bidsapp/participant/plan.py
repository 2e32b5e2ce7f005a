"""What a participant run will do: the sessions found, their checked inputs and the methods each runs."""

from __future__ import annotations

import logging
from pathlib import Path

from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.methods import MethodPlan, all_methods, plan_summary
from thalamus_bidsapp.participant.preflight import (
    PreflightFailure,
    PreparedSession,
    preflight_session,
)
from thalamus_bidsapp.participant.tracking import SessionStatus

LOGGER = logging.getLogger(__name__)


def find_sessions(config: RunConfig) -> list[inputs.SessionInputs]:
    """Index the input (and derivatives) datasets and list the sessions to process."""
    database_dir = config.work_dir / "bids_index"
    # With --participant-label, only those subjects' folders are indexed and validated.
    others = other_subjects_pattern(config.bids_dir, config.participant_labels)
    layout = inputs.open_layout(config.bids_dir, validate=not config.skip_bids_validation, database_dir=database_dir,
                                extra_ignore=others)
    derivative_layouts = {
        name: inputs.open_layout(path, validate=False, database_dir=database_dir, derivatives=True,
                                 extra_ignore=others)
        for name, path in config.derivatives.items()
    }
    queries = inputs.load_queries(config.bids_filter_file)
    return inputs.collect_sessions(
        layout,
        derivative_layouts,
        queries,
        participant_labels=list(config.participant_labels) or None,
        session_labels=list(config.session_labels) or None,
    )


def other_subjects_pattern(bids_dir: Path, labels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """pybids ignore pattern for every ``sub-*`` folder but the requested ones (none without labels).

    When a requested subject has no folder, nothing is left out, so the
    error about the unknown label lists every subject of the dataset.
    """
    import re

    wanted = sorted({inputs.strip_prefix(label, "sub") for label in labels})
    if not wanted or not all((Path(bids_dir) / f"sub-{label}").is_dir() for label in wanted):
        return ()
    return (rf"^/sub-(?!(?:{'|'.join(re.escape(label) for label in wanted)})(?:/|$))[^/]+",)


def preflight_sessions(sessions: list, config: RunConfig,
                        statuses: dict[str, SessionStatus]) -> dict[str, PreparedSession]:
    """Each session's checked inputs; a session that fails its preflight is recorded in ``statuses``."""
    prepared: dict[str, PreparedSession] = {}
    for session in sessions:
        for note in session.notes:
            LOGGER.warning("%s: %s", session.name, note)
        try:
            prepared[session.name] = preflight_session(session, config.work_dir, lesion_labels=config.lesion_labels)
        except PreflightFailure as err:
            LOGGER.error("%s: skipped: %s", session.name, err)
            statuses[session.name] = SessionStatus(session.name, "failed", str(err))
        else:
            log_missing_optional(session)
    return prepared


def check_some_method_runs(plans: dict[str, MethodPlan]) -> None:
    """Exit 66 when no session can run any segmentation method, listing each method and why."""
    if not plans or any(plan.run for plan in plans.values()):
        return
    reasons: dict[str, str] = {}
    for plan in plans.values():
        for method, reason in plan.skipped.items():
            reasons.setdefault(method, reason)
    listing = "\n".join(f"  - {method}: {reason}" for method, reason in reasons.items())
    raise ThalamusError(f"no segmentation method can run:\n{listing}\n"
                        "install a tool or give a model (see --check-tools and the README)", EXIT_NOINPUT)


def session_plans(
    sessions: list[inputs.SessionInputs],
    plans: dict[str, MethodPlan],
    prepared: dict[str, PreparedSession] | None = None,
) -> dict:
    """Per session: the inputs found, the methods run, the skipped ones and why (for logs and reports)."""
    record = {}
    for session in sessions:
        plan = plans[session.name]
        ready = (prepared or {}).get(session.name)
        originals = ready.originals if ready else {}
        record[session.name] = {
            "subject": session.subject,
            "session": session.session,
            "inputs": {role: str(originals.get(getattr(session, role), getattr(session, role)))
                       if getattr(session, role) else None
                       for role in ("t1w", "t2w", "flair", "r1map", "manual", "lesion")},
            "input_checks": ready.record if ready else {},
            "lesion_input": ready.lesion if ready else {},
            "notes": list(session.notes),
            "methods_run": list(plan.run),
            "methods_skipped": dict(plan.skipped),
            "envelope": plan.envelope,
            "method_settings": plan_summary(plan),
        }
    return record


def log_missing_optional(session: inputs.SessionInputs) -> None:
    """Log each optional input the session lacks, with the steps it skips (registration, method parts)."""
    for role, registration in (("flair", "FLAIR registration"), ("r1map", "R1 registration"), ("t2w", None)):
        if getattr(session, role) is not None:
            continue
        steps = [registration] if registration else []
        steps += [m.optional_inputs[role] for m in all_methods() if role in m.optional_inputs]
        if steps:
            LOGGER.info("%s: no %s image; skipping %s", session.name, role, " and ".join(steps))
