"""Participant level: find sessions, plan methods, run the workflow, report failures."""

from __future__ import annotations

import contextlib
import gc
import importlib.resources
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.bidsio.atomic import atomic_path, write_json, write_tsv
from thalamus_bidsapp.bidsio.derivatives import write_dataset_description
from thalamus_bidsapp.bidsio.runlog import PROCESS_FILE, RUNNING
from thalamus_bidsapp.bidsio.staging import Staging, is_write_error
from thalamus_bidsapp.session_tracking import SessionStatus, SessionTracker, no_broken_pool, session_statuses
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_CANTCREAT, EXIT_NOINPUT, EXIT_OK, EXIT_SESSIONS_FAILED, ThalamusError
from thalamus_bidsapp.interfaces.templateflow import find_template_files
from thalamus_bidsapp.interrupts import InterruptGuard, Interrupted, terminate_children
from thalamus_bidsapp.methods import MethodPlan, all_methods, check_tools, plan_methods, plan_summary
from thalamus_bidsapp.qc.thresholds import load_thresholds
from thalamus_bidsapp.preflight import PreflightFailure, PreparedSession, preflight_session
from thalamus_bidsapp.provenance import run_provenance
from thalamus_bidsapp.resources import POLL_SECONDS, ResourcePlan, plan_resources, thread_limits
from thalamus_bidsapp.timings import RunTimings

LOGGER = logging.getLogger(__name__)

#: What the reports import (matplotlib: about a second), loaded while the workflow runs.
REPORT_MODULES = ("thalamus_bidsapp.reports.participant", "matplotlib.figure", "matplotlib.backends.backend_svg")
#: The tools' libraries loaded once before the worker processes are forked, so each worker has them already:
#: PyTorch (about 1 s to load) is used by every session's brain mask and by the networks, which run in
#: different workers. It is only loaded; no thread pool exists before the fork.
WORKER_MODULES = ("torch",)


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


def _preflight_sessions(sessions: list, config: RunConfig,
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
            _log_missing_optional(session)
    return prepared


def run_participant(config: RunConfig, started: float | None = None) -> int:
    """Run the participant level; returns the exit status.

    0 when every session succeeded; 1 when some failed; 73 when a session
    failed because an output could not be written (disk full, read-only
    folder). SIGINT/SIGTERM stop the run: the running sessions are recorded
    as interrupted and :class:`~thalamus_bidsapp.interrupts.Interrupted` is
    raised again for the caller (exit 130/143).

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
        # Offline TemplateFlow: a missing file is exit 66 before any tool.
        template_files = find_template_files(config.template, config.templateflow_home) if config.template else None
    statuses: dict[str, SessionStatus] = {}
    with timings.phase("preflight"):
        prepared = _preflight_sessions(sessions, config, statuses)
    if not prepared and all(s.t1w is None for s in sessions):
        raise ThalamusError(
            "no T1w image found for the requested participants: " + ", ".join(s.name for s in sessions),
            EXIT_NOINPUT,
        )
    log_dir = config.output_dir / "logs" / config.run_id
    with timings.phase("tool_check"):
        tools = check_tools(config)
        plans = {name: plan_methods(ready.session, config, tools) for name, ready in prepared.items()}
    _check_some_method_runs(plans)
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
        _write_statuses({**statuses, **{s.session.name: SessionStatus(s.session.name, RUNNING, running)
                                        for s in runnable}}, log_dir)
        outcome, interrupted = _run_workflow(runnable, plans, config, resources, timings,
                                             crash_root=log_dir / "crash")
        statuses.update(outcome)
        for ready in runnable:
            LOGGER.info("timings: %s", timings.session_summary(ready.session.name))
    _write_statuses(statuses, log_dir)
    if interrupted is not None:
        raise interrupted
    failed = [s for s in statuses.values() if s.status != "ok"]
    for status in failed:
        LOGGER.error("%s failed: %s", status.session, status.reason)
    LOGGER.info("participant level done: %d of %d sessions succeeded", len(statuses) - len(failed), len(statuses))
    _run_longitudinal(config, sessions, tools, resources.omp_nthreads, timings)
    with timings.phase("reports"):
        write_reports(config.output_dir, sorted({f"sub-{s.subject}" for s in sessions}),
                      {name: dict(plan.skipped) for name, plan in plans.items()})
    timings.add("n/a", "total", "phase", timings.started, time.time())
    timings.write(log_dir / "timings.tsv")
    LOGGER.info("timings of this run: %s", log_dir / "timings.tsv")
    if any(s.exit_code == EXIT_CANTCREAT for s in failed):
        return EXIT_CANTCREAT
    return EXIT_SESSIONS_FAILED if failed else EXIT_OK


def _run_longitudinal(config: RunConfig, sessions, tools, threads: int, timings: RunTimings) -> None:
    """The longitudinal mode of the subjects with two or more T1w sessions (``--longitudinal auto``)."""
    if config.longitudinal == "off":
        return
    from thalamus_bidsapp.workflows.longitudinal_outputs import longitudinal_step

    with timings.phase("longitudinal"):
        longitudinal_step(config, sessions, tools, threads)


def _write_statuses(statuses: dict[str, SessionStatus], log_dir: Path) -> None:
    table = pd.DataFrame([vars(s) for s in statuses.values()], columns=["session", "status", "reason"])
    write_tsv(table, log_dir / "sessions.tsv", {
        "session": "Subject and session",
        "status": "ok; failed (no new outputs were published); interrupted (stopped by SIGINT or SIGTERM, "
                  "no new outputs were published); or running (while the run is in progress)",
        "reason": "Why the session failed; crash reports are in crash/<session>/",
    })


def _check_some_method_runs(plans: dict[str, MethodPlan]) -> None:
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


def write_reports(output_dir: Path, subjects: list[str], skipped: dict[str, dict[str, str]] | None = None) -> int:
    """``sub-<label>.html`` for each subject; a report that cannot be made is logged, not fatal."""
    from thalamus_bidsapp.reports.participant import write_participant_report

    for subject in subjects:
        if not (output_dir / subject).is_dir():
            # A subject none of whose sessions succeeded leaves nothing new; sessions.tsv says why.
            LOGGER.info("no report for %s: it has no outputs", subject)
            continue
        try:
            page = write_participant_report(output_dir, subject, skipped=skipped)
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


def _log_missing_optional(session: inputs.SessionInputs) -> None:
    """Log each optional input the session lacks, with the steps it skips (registration, method parts)."""
    for role, registration in (("flair", "FLAIR registration"), ("r1map", "R1 registration"), ("t2w", None)):
        if getattr(session, role) is not None:
            continue
        steps = [registration] if registration else []
        steps += [m.optional_inputs[role] for m in all_methods() if role in m.optional_inputs]
        if steps:
            LOGGER.info("%s: no %s image; skipping %s", session.name, role, " and ".join(steps))


def _start_workers(resources: ResourcePlan, status_callback):
    """nipype's plugin for the run: a MultiProc plugin whose worker processes exist already, or ``"Linear"``.

    Starting the workers before the run (they are forked from this process,
    inheriting its thread limits and loaded modules) means no fork happens
    afterwards, so the main process may safely load modules in a thread
    while the workflow runs.
    """
    if resources.plugin != "MultiProc":
        return resources.plugin
    from nipype.pipeline.plugins import MultiProcPlugin

    runner = MultiProcPlugin(plugin_args={**resources.plugin_args(), "status_callback": status_callback})
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


def _build_workflow(sessions: list[PreparedSession], plans: dict[str, MethodPlan], config: RunConfig,
                    resources: ResourcePlan, staging: Staging, crash_root: Path):
    """The participant workflow, publishing each session into its staging folder."""
    from thalamus_bidsapp.workflows.participant import init_participant_wf

    names = [ready.session.name for ready in sessions]
    originals = {copy: original for ready in sessions for copy, original in ready.originals.items()}
    workflow = init_participant_wf(
        [ready.session for ready in sessions],
        plans,
        dataset_roots={"raw": config.bids_dir, **config.derivatives},
        output_dir=config.output_dir,
        work_dir=config.work_dir,
        crash_root=crash_root,
        omp_nthreads=resources.omp_nthreads,
        flirt_cutoff=config.flirt_cutoff,
        ants_cutoff=config.ants_cutoff,
        publish_dirs={name: staging.session_dir(name) for name in names},
        input_records={ready.session.name: ready.record for ready in sessions},
        original_files=originals,
        lesion_filling=config.lesion_filling,
        lesion_source=config.lesion_source,
        template=find_template_files(config.template, config.templateflow_home) if config.template else None,
        template_schedule=config.template_registration,
        qc_thresholds=load_thresholds(config.qc_thresholds),
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
    return workflow


def _run_workflow(
    sessions: list[PreparedSession],
    plans: dict[str, MethodPlan],
    config: RunConfig,
    resources: ResourcePlan,
    timings: RunTimings,
    crash_root: Path,
) -> tuple[dict[str, SessionStatus], Interrupted | None]:
    """Run the sessions' workflows; publish each session when all its steps have finished.

    Returns the status of each session, and the interruption that stopped
    the run (None when it ran to the end).
    """
    from nipype.interfaces.utility import IdentityInterface

    from thalamus_bidsapp.workflows.participant import workflow_name

    staging = Staging(config.output_dir, config.run_id).open()
    names = [ready.session.name for ready in sessions]
    with timings.phase("workflow_setup"):
        workflow = _build_workflow(sessions, plans, config, resources, staging, crash_root)
    timings.sessions.update({workflow_name(ready.session): ready.session.name for ready in sessions})
    # nipype drops identity nodes when it flattens the graph: count the nodes that really run.
    node_counts = {}
    for ready in sessions:
        session_wf = workflow.get_node(workflow_name(ready.session))
        node_counts[workflow_name(ready.session)] = sum(
            not isinstance(node.interface, IdentityInterface) for node in session_wf._get_all_nodes())
    guard = InterruptGuard()
    tracker = SessionTracker(node_counts, {workflow_name(ready.session): ready.session.name for ready in sessions},
                              staging, guard)

    def node_status(node, status: str) -> None:
        timings.node_status(node, status)
        tracker(node, status)

    LOGGER.info("running %s; work dir %s", resources.describe(), config.work_dir)
    interrupted = None
    runner = None
    prefetch = None
    try:
        with guard:
            if resources.plugin == "MultiProc":
                with timings.phase("tool_libraries", kind="tool"), thread_limits(resources.omp_nthreads):
                    _import_modules(WORKER_MODULES)
            with timings.phase("workers"), thread_limits(resources.omp_nthreads):
                # Worker processes inherit the thread limits of the tools they run.
                runner = _start_workers(resources, node_status)
            if not isinstance(runner, str):
                # The workers exist already (no fork follows), so the main process, idle while the
                # networks run, can load the report's plotting library meanwhile.
                prefetch = threading.Thread(target=_import_modules, args=(REPORT_MODULES,), daemon=True)
                prefetch.start()
            try:
                with timings.phase("workflow"), thread_limits(resources.omp_nthreads), _frozen_heap():
                    if isinstance(runner, str):
                        workflow.run(plugin=runner, plugin_args={**resources.plugin_args(),
                                                                 "status_callback": node_status})
                    else:
                        workflow.run(plugin=runner)
            except RuntimeError as err:
                # nipype raises once at the end; the crash folders say which sessions failed.
                LOGGER.debug("nipype reported failures: %s", err)
    except Interrupted as stop:
        interrupted = stop
        pool = getattr(runner, "pool", None)
        if pool is not None:
            # The workers are about to be killed: their futures end with BrokenProcessPool, which
            # concurrent.futures would log with a traceback from nipype's callback.
            logging.getLogger("concurrent.futures").addFilter(no_broken_pool)
            pool.shutdown(wait=False, cancel_futures=True)
        terminate_children()
    finally:
        if prefetch is not None:
            prefetch.join()  # never leave an import half done when the next process is forked
        if runner is not None and not isinstance(runner, str) and interrupted is None:
            runner.pool.shutdown(wait=False)  # nipype does it after a normal run; this covers an early error
    try:
        statuses = session_statuses(names, crash_root, tracker, staging, config, interrupted)
    finally:
        for name in names:
            staging.discard(name)
        staging.close()
    return statuses, interrupted


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


def write_citations(path: Path, plans, extra: tuple[str, ...] = ()) -> Path:
    """``CITATION.md`` naming the tools and papers used by the methods that ran.

    ``extra``: keys of ``data/citations.json`` used besides the methods (e.g. template space's).
    """
    table = json.loads(importlib.resources.files("thalamus_bidsapp.data").joinpath("citations.json").read_text())
    used = {method for plan in plans for method in plan.run}
    lines = ["# Citations", "", "Please cite the tools that produced these derivatives:", ""]
    lines += [f"- **{key}**: {entry['text']}" for key, entry in table.items() if entry.get("always") or key in extra]
    lines += [f"- **{m.name}**: {m.citation}" for m in all_methods() if m.name in used]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
