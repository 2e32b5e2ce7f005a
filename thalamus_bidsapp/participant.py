"""Participant level: find sessions, plan methods, run the workflow, report failures."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import pandas as pd

from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.bidsio.atomic import atomic_path, write_json, write_tsv
from thalamus_bidsapp.bidsio.derivatives import write_dataset_description
from thalamus_bidsapp.bidsio.runlog import PROCESS_FILE, RUNNING
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_NOINPUT, EXIT_OK, EXIT_SESSIONS_FAILED, ThalamusError
from thalamus_bidsapp.methods import MethodPlan, all_methods, check_tools, plan_methods, plan_summary
from thalamus_bidsapp.resources import POLL_SECONDS, ResourcePlan, plan_resources, thread_limits
from thalamus_bidsapp.timings import RunTimings

LOGGER = logging.getLogger(__name__)

#: What the reports import (matplotlib: about a second), loaded while the workflow runs.
REPORT_MODULES = ("thalamus_bidsapp.reports.participant", "matplotlib.figure", "matplotlib.backends.backend_svg")


@dataclass(frozen=True)
class SessionStatus:
    session: str
    status: str  # "ok" or "failed"
    reason: str = ""


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


def preflight(session: inputs.SessionInputs) -> str | None:
    """Why a session cannot start (no T1w, an unreadable header), or None if it can."""
    if session.t1w is None:
        return f"no T1w image found for {session.name}"
    for role in ("t1w", "t2w", "flair", "r1map", "manual"):
        path = getattr(session, role)
        if path is None:
            continue
        try:
            img = nib.load(str(path))
            if len(img.shape) < 3:
                return f"{path} is not a 3D image (shape {img.shape})"
        except Exception as err:  # nibabel raises many types for a corrupt file
            return f"cannot read {path}: {err}"
    return None


def run_participant(config: RunConfig, started: float | None = None) -> int:
    """Run the participant level; returns the exit status (0, or 1 if some sessions failed).

    ``started`` (a ``time.time()`` value) is when the command started, so the
    timings include the start-up before this call.
    """
    if config.reports_only:
        return write_reports(config.output_dir, _report_subjects(config))
    timings = RunTimings(started=started)
    if started is not None:
        timings.add("n/a", "startup", "phase", started, time.time())
    with timings.phase("index"):
        sessions = find_sessions(config)
    statuses: dict[str, SessionStatus] = {}
    runnable: list[inputs.SessionInputs] = []
    with timings.phase("preflight"):
        for session in sessions:
            for note in session.notes:
                LOGGER.warning("%s: %s", session.name, note)
            problem = preflight(session)
            if problem:
                LOGGER.error("%s: skipped: %s", session.name, problem)
                statuses[session.name] = SessionStatus(session.name, "failed", problem)
            else:
                _log_missing_optional(session)
                runnable.append(session)
    if not runnable and all(s.t1w is None for s in sessions):
        raise ThalamusError(
            "no T1w image found for the requested participants: " + ", ".join(s.name for s in sessions),
            EXIT_NOINPUT,
        )
    resources = plan_resources(len(runnable), nprocs=config.nprocs, omp_nthreads=config.omp_nthreads,
                               mem_gb=config.mem_gb)
    log_dir = config.output_dir / "logs" / config.run_id
    with timings.phase("tool_check"):
        tools = check_tools(config)
        plans = {session.name: plan_methods(session, config, tools) for session in runnable}
    with timings.phase("setup"):
        write_dataset_description(config.output_dir, config.bids_dir, config.derivatives)
        write_json({**config.to_json(), "resources": vars(resources)}, log_dir / "config.json")
        write_citations(config.output_dir / "logs" / "CITATION.md", plans.values())
        write_json(session_plans(runnable, plans), log_dir / "methods.json")
    if runnable:
        # Recorded before the work starts, so a group level run meanwhile knows these sessions are not done.
        host, pid = socket.gethostname(), os.getpid()
        write_json({"host": host, "pid": pid, "run": config.run_id}, log_dir / PROCESS_FILE)
        running = f"in progress: process {pid} on {host}, run {config.run_id}"
        _write_statuses({**statuses, **{s.name: SessionStatus(s.name, RUNNING, running) for s in runnable}},
                        log_dir)
        statuses.update(_run_workflow(runnable, plans, config, resources, timings, crash_root=log_dir / "crash"))
        for session in runnable:
            LOGGER.info("timings: %s", timings.session_summary(session.name))

    _write_statuses(statuses, log_dir)
    failed = [s for s in statuses.values() if s.status != "ok"]
    for status in failed:
        LOGGER.error("%s failed: %s", status.session, status.reason)
    LOGGER.info("participant level done: %d of %d sessions succeeded", len(statuses) - len(failed), len(statuses))
    with timings.phase("reports"):
        write_reports(config.output_dir, sorted({f"sub-{s.subject}" for s in sessions}),
                      {name: dict(plan.skipped) for name, plan in plans.items()})
    timings.add("n/a", "total", "phase", timings.started, time.time())
    timings.write(log_dir / "timings.tsv")
    LOGGER.info("timings of this run: %s", log_dir / "timings.tsv")
    return EXIT_SESSIONS_FAILED if failed else EXIT_OK


def _write_statuses(statuses: dict[str, SessionStatus], log_dir: Path) -> None:
    table = pd.DataFrame([vars(s) for s in statuses.values()], columns=["session", "status", "reason"])
    write_tsv(table, log_dir / "sessions.tsv", {
        "session": "Subject and session",
        "status": "ok, failed, or running (while the run is in progress)",
        "reason": "Why the session failed; crash reports are in crash/<session>/",
    })


def write_reports(output_dir: Path, subjects: list[str], skipped: dict[str, dict[str, str]] | None = None) -> int:
    """``sub-<label>.html`` for each subject; a report that cannot be made is logged, not fatal."""
    from thalamus_bidsapp.reports.participant import write_participant_report

    for subject in subjects:
        try:
            page = write_participant_report(output_dir, subject, skipped=skipped)
            LOGGER.info("report: %s", page)
        except Exception as err:  # a broken report must not hide finished derivatives
            LOGGER.error("could not write the report of %s: %s", subject, err)
    return EXIT_OK


def _report_subjects(config: RunConfig) -> list[str]:
    if config.participant_labels:
        return sorted({f"sub-{inputs.strip_prefix(label, 'sub')}" for label in config.participant_labels})
    subjects = sorted(p.name for p in config.output_dir.glob("sub-*") if p.is_dir())
    if not subjects:
        raise ThalamusError(f"no participant derivatives in {config.output_dir}: nothing to report", EXIT_NOINPUT)
    return subjects


def session_plans(sessions: list[inputs.SessionInputs], plans: dict[str, MethodPlan]) -> dict:
    """Per session: the inputs found, the methods run, the skipped ones and why (for logs and reports)."""
    record = {}
    for session in sessions:
        plan = plans[session.name]
        record[session.name] = {
            "subject": session.subject,
            "session": session.session,
            "inputs": {role: str(getattr(session, role)) if getattr(session, role) else None
                       for role in ("t1w", "t2w", "flair", "r1map", "manual")},
            "notes": list(session.notes),
            "methods_run": list(plan.run),
            "methods_skipped": dict(plan.skipped),
            "envelope": plan.envelope,
            "method_settings": plan_summary(plan),
        }
    return record


def _log_missing_optional(session: inputs.SessionInputs) -> None:
    """Log each optional input the session lacks, with the steps it skips (registration, method parts)."""
    for role, registration in (("flair", "FLAIR registration"), ("r1map", "R1 registration"), ("t2w", None)):
        if getattr(session, role) is not None:
            continue
        steps = [registration] if registration else []
        steps += [m.optional_inputs[role] for m in all_methods() if role in m.optional_inputs]
        if steps:
            LOGGER.info("%s: no %s image; skipping %s", session.name, role, " and ".join(steps))


def _start_workers(resources: ResourcePlan, timings: RunTimings):
    """nipype's plugin for the run: a MultiProc plugin whose worker processes exist already, or ``"Linear"``.

    Starting the workers before the run (they are forked from this process,
    inheriting its thread limits and loaded modules) means no fork happens
    afterwards, so the main process may safely load modules in a thread
    while the workflow runs.
    """
    if resources.plugin != "MultiProc":
        return resources.plugin
    from nipype.pipeline.plugins import MultiProcPlugin

    runner = MultiProcPlugin(plugin_args={**resources.plugin_args(), "status_callback": timings.node_status})
    # With the fork start method every worker is created at the first submission.
    runner.pool.submit(os.getpid).result()
    return runner


def _import_modules(modules: tuple[str, ...]) -> None:
    """Import ``modules`` ahead of the code that needs them (a failure is left to that code to report)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            LOGGER.debug("could not import %s ahead of time: %s", name, err)


def _run_workflow(
    sessions: list[inputs.SessionInputs],
    plans: dict[str, MethodPlan],
    config: RunConfig,
    resources: ResourcePlan,
    timings: RunTimings,
    crash_root: Path,
) -> dict[str, SessionStatus]:
    from thalamus_bidsapp.workflows.participant import init_participant_wf, workflow_name

    with timings.phase("workflow_setup"):
        workflow = init_participant_wf(
            sessions,
            plans,
            dataset_roots={"raw": config.bids_dir, **config.derivatives},
            output_dir=config.output_dir,
            work_dir=config.work_dir,
            crash_root=crash_root,
            omp_nthreads=resources.omp_nthreads,
            flirt_cutoff=config.flirt_cutoff,
            ants_cutoff=config.ants_cutoff,
        )
        workflow.config["execution"].update({
            "crashfile_format": "txt",
            "crashdump_dir": str(crash_root),
            "stop_on_first_crash": config.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "check_version": False,
            # nipype looks for finished nodes every 2 s by default: seconds lost between steps.
            "poll_sleep_duration": POLL_SECONDS,
            # nipype's graph report (index.html, graph.json) sits at the top of the work folder, where jobs
            # sharing it (a SLURM array) would write it at once; nothing reads it.
            "create_report": False,
        })
    timings.sessions.update({workflow_name(session): session.name for session in sessions})
    LOGGER.info("running %s; work dir %s", resources.describe(), config.work_dir)
    with timings.phase("workers"), thread_limits(resources.omp_nthreads):
        # Worker processes inherit the thread limits of the tools they run.
        runner = _start_workers(resources, timings)
    prefetch = None
    if not isinstance(runner, str):
        # The workers exist already (no fork follows), so the main process, idle while the
        # networks run, can load the report's plotting library meanwhile.
        prefetch = threading.Thread(target=_import_modules, args=(REPORT_MODULES,), daemon=True)
        prefetch.start()
    try:
        with timings.phase("workflow"), thread_limits(resources.omp_nthreads), _frozen_heap():
            if isinstance(runner, str):
                workflow.run(plugin=runner, plugin_args={**resources.plugin_args(),
                                                         "status_callback": timings.node_status})
            else:
                workflow.run(plugin=runner)
    except RuntimeError as err:
        # nipype raises once at the end; the crash folders say which sessions failed.
        LOGGER.debug("nipype reported failures: %s", err)
    finally:
        if prefetch is not None:
            prefetch.join()  # never leave an import half done when the next process is forked
        if not isinstance(runner, str):
            runner.pool.shutdown(wait=False)  # nipype does it after a normal run; this covers an early error
    statuses = {}
    for session in sessions:
        crashes = sorted((crash_root / session.name).glob("crash-*.txt"))
        if crashes:
            reason = f"{_crash_summary(crashes[0])} (crash report: {crashes[0]})"
            statuses[session.name] = SessionStatus(session.name, "failed", reason)
        else:
            statuses[session.name] = SessionStatus(session.name, "ok")
    return statuses


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Exempt the objects that exist before the run (torch, pybids, pandas) from garbage collection.

    nipype's scheduler calls ``gc.collect()`` around every node; with those
    libraries loaded each call walks some 300 000 objects (0.3 to 2 s), which
    adds seconds between the steps of a session. Frozen objects are never
    collected, so only what the run itself creates is scanned.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _crash_summary(crash_file: Path) -> str:
    """The last non-empty line of a nipype crash report: the exception message."""
    lines = [line.strip() for line in crash_file.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line]
    return errors[-1] if errors else (lines[-1] if lines else "unknown error")


def write_citations(path: Path, plans) -> Path:
    """``CITATION.md`` naming the tools and papers used by the methods that ran."""
    table = json.loads(resources.files("thalamus_bidsapp.data").joinpath("citations.json").read_text())
    used = {method for plan in plans for method in plan.run}
    lines = ["# Citations", "", "Please cite the tools that produced these derivatives:", ""]
    lines += [f"- **{key}**: {entry['text']}" for key, entry in table.items() if entry.get("always")]
    lines += [f"- **{m.name}**: {m.citation}" for m in all_methods() if m.name in used]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
