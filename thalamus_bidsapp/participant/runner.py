"""Participant level: find the sessions, plan the methods, run the workflow, publish, report."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from thalamus_bidsapp.bidsio.atomic import write_json
from thalamus_bidsapp.bidsio.derivatives import write_dataset_description
from thalamus_bidsapp.bidsio.runlog import LONGITUDINAL_LOG, PROCESS_FILE, RUNNING
from thalamus_bidsapp.bidsio.staging import is_write_error
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import (
    EXIT_CANTCREAT,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_SESSIONS_FAILED,
    ThalamusError,
)
from thalamus_bidsapp.methods import check_tools, plan_methods
from thalamus_bidsapp.participant.engine import run_workflow
from thalamus_bidsapp.participant.logs import write_citations, write_statuses
from thalamus_bidsapp.participant.plan import (
    check_some_method_runs,
    find_sessions,
    preflight_sessions,
    session_plans,
)
from thalamus_bidsapp.participant.provenance import run_provenance
from thalamus_bidsapp.participant.resources import available_cpus, plan_resources
from thalamus_bidsapp.participant.timings import RunTimings
from thalamus_bidsapp.participant.tracking import SessionStatus
from thalamus_bidsapp.qc.thresholds import load_thresholds
from thalamus_bidsapp.tools.templateflow import find_template_files
from thalamus_bidsapp.workflows.context import RunContext

LOGGER = logging.getLogger(__name__)


def run_participant(config: RunConfig, started: float | None = None) -> int:
    """Run the participant level; returns the exit status.

    0 when every session succeeded; 1 when some failed; 73 when a session
    failed because an output could not be written (disk full, read-only
    folder). SIGINT/SIGTERM stop the run: the running sessions are recorded
    as interrupted and :class:`~thalamus_bidsapp.participant.interrupts.Interrupted` is
    raised again for the caller (exit 130/143).

    ``started`` (a ``time.time()`` value) is when the command started, so the
    timings include the start-up before this call.
    """
    if config.reports_only:
        return write_reports(config.output_dir, _report_subjects(config),
                             processes=config.nprocs or available_cpus())
    timings = RunTimings(started=started)
    if started is not None:
        timings.add("n/a", "startup", "phase", started, time.time())
    with timings.phase("index"):
        sessions = find_sessions(config)
        # Offline TemplateFlow: a missing file is exit 66 before any tool.
        template_files = find_template_files(config.template, config.templateflow_home) if config.template else None
    statuses: dict[str, SessionStatus] = {}
    with timings.phase("preflight"):
        prepared = preflight_sessions(sessions, config, statuses)
    if not prepared and all(s.t1w is None for s in sessions):
        raise ThalamusError(
            "no T1w image found for the requested participants: " + ", ".join(s.name for s in sessions),
            EXIT_NOINPUT,
        )
    log_dir = config.output_dir / "logs" / config.run_id
    with timings.phase("tool_check"):
        tools = check_tools(config)
        plans = {name: plan_methods(ready.session, config, tools) for name, ready in prepared.items()}
    check_some_method_runs(plans)
    for name, plan in plans.items():
        if not plan.run:
            reason = "no segmentation method can run: " + "; ".join(f"{m}: {r}" for m, r in plan.skipped.items())
            LOGGER.error("%s: skipped: %s", name, reason)
            statuses[name] = SessionStatus(name, "failed", reason)
    runnable = [ready for name, ready in prepared.items() if plans[name].run]
    resources = plan_resources(len(runnable), nprocs=config.nprocs, omp_nthreads=config.omp_nthreads,
                               mem_gb=config.mem_gb)
    with timings.phase("setup"):
        write_dataset_description(config.output_dir, config.bids_dir, config.derivatives,
                                  container=config.environment.container)
        write_json({**config.to_json(), "resources": vars(resources),
                    "provenance": run_provenance(config, tools.settings, template_files)}, log_dir / "config.json")
        write_citations(config.output_dir / "logs" / "CITATION.md", plans.values(),
                        extra=("templateflow", "ants") if config.template else ())
        write_json(session_plans([ready.session for ready in prepared.values()], plans, prepared),
                   log_dir / "methods.json")

    interrupted = None
    if runnable:
        # Recorded before the work starts, so a group level run meanwhile knows these sessions are not done.
        host, pid = socket.gethostname(), os.getpid()
        write_json({"host": host, "pid": pid, "run": config.run_id}, log_dir / PROCESS_FILE)
        running = f"in progress: process {pid} on {host}, run {config.run_id}"
        write_statuses({**statuses, **{s.session.name: SessionStatus(s.session.name, RUNNING, running)
                                        for s in runnable}}, log_dir)
        run = RunContext.from_config(
            config, omp_nthreads=resources.omp_nthreads, crash_root=log_dir / "crash", template=template_files,
            qc_thresholds=load_thresholds(config.qc_thresholds),
            original_files={copy: original for ready in runnable for copy, original in ready.originals.items()})
        outcome, interrupted = run_workflow(runnable, plans, run, config, resources, timings)
        statuses.update(outcome)
        for ready in runnable:
            LOGGER.info("timings: %s", timings.session_summary(ready.session.name))
    write_statuses(statuses, log_dir)
    if interrupted is not None:
        raise interrupted
    failed = [s for s in statuses.values() if s.status != "ok"]
    for status in failed:
        LOGGER.error("%s failed: %s", status.session, status.reason)
    LOGGER.info("participant level done: %d of %d sessions succeeded", len(statuses) - len(failed), len(statuses))
    _run_longitudinal(config, sessions, tools, resources.omp_nthreads, timings, log_dir)
    with timings.phase("reports"):
        write_reports(config.output_dir, sorted({f"sub-{s.subject}" for s in sessions}),
                      {name: dict(plan.skipped) for name, plan in plans.items()}, processes=resources.nprocs)
    timings.add("n/a", "total", "phase", timings.started, time.time())
    timings.write(log_dir / "timings.tsv")
    LOGGER.info("timings of this run: %s", log_dir / "timings.tsv")
    if any(s.exit_code == EXIT_CANTCREAT for s in failed):
        return EXIT_CANTCREAT
    return EXIT_SESSIONS_FAILED if failed else EXIT_OK


def _run_longitudinal(config: RunConfig, sessions, tools, threads: int, timings: RunTimings, log_dir: Path) -> None:
    """The longitudinal mode of the subjects with two or more T1w sessions (``--longitudinal auto``).

    Each subject's outcome goes to ``logs/<run>/longitudinal.json``, where the participant report reads it.
    """
    if config.longitudinal == "off":
        return
    from thalamus_bidsapp.workflows.longitudinal_outputs import longitudinal_step
    from thalamus_bidsapp.workflows.longitudinal_streams import longitudinal_streams_step

    with timings.phase("longitudinal"):
        outcomes = longitudinal_step(config, sessions, tools, threads)
        # After the template-based step, which rewrites the change table the streams' rows join.
        longitudinal_streams_step(config, sessions, tools, threads)
    if outcomes:
        write_json({f"sub-{subject}": outcome for subject, outcome in outcomes.items()}, log_dir / LONGITUDINAL_LOG)


def write_reports(output_dir: Path, subjects: list[str], skipped: dict[str, dict[str, str]] | None = None, *,
                  processes: int = 1) -> int:
    """``sub-<label>.html`` for each subject; a report that cannot be made is logged, not fatal.

    ``processes``: CPUs the figures may use (the run's ``--nprocs``).
    """
    from thalamus_bidsapp.reports.participant import write_participant_report

    for subject in subjects:
        if not (output_dir / subject).is_dir():
            # A subject none of whose sessions succeeded leaves nothing new; sessions.tsv says why.
            LOGGER.info("no report for %s: it has no outputs", subject)
            continue
        try:
            page = write_participant_report(output_dir, subject, skipped=skipped, processes=processes)
            LOGGER.info("report: %s", page)
        except OSError as err:
            if is_write_error(err, output_dir):
                raise
            LOGGER.error("could not write the report of %s: %s", subject, err)
        except Exception as err:  # a broken report must not hide finished derivatives
            LOGGER.error("could not write the report of %s: %s", subject, err)
    return EXIT_OK


def _report_subjects(config: RunConfig) -> list[str]:
    if config.participant_labels:
        # The same checks as the participant level: a label not in the input dataset is exit 66.
        return sorted({f"sub-{session.subject}" for session in find_sessions(config)})
    subjects = sorted(p.name for p in config.output_dir.glob("sub-*") if p.is_dir())
    if not subjects:
        raise ThalamusError(f"no participant derivatives in {config.output_dir}: nothing to report", EXIT_NOINPUT)
    return subjects
