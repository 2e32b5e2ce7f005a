"""Running the participant workflow with nipype: worker processes, thread limits, the session statuses."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import Iterator

from thalamus_bidsapp.bidsio.staging import Staging
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.methods import MethodPlan
from thalamus_bidsapp.participant.interrupts import (
    Interrupted,
    InterruptGuard,
    terminate_children,
)
from thalamus_bidsapp.participant.preflight import PreparedSession
from thalamus_bidsapp.participant.resources import POLL_SECONDS, ResourcePlan
from thalamus_bidsapp.participant.timings import RunTimings
from thalamus_bidsapp.participant.tracking import (
    SessionStatus,
    SessionTracker,
    no_broken_pool,
    session_statuses,
)
from thalamus_bidsapp.tools.threads import thread_limits
from thalamus_bidsapp.workflows.context import RunContext, SessionContext

LOGGER = logging.getLogger(__name__)

#: What the reports import (matplotlib: about a second), loaded while the workflow runs.
REPORT_MODULES = ("thalamus_bidsapp.reports.participant", "matplotlib.figure", "matplotlib.backends.backend_svg")
#: What the registration figures of a session with a FLAIR or R1 map add (about 2 s to load): niworkflows' plots.
REGISTRATION_FIGURE_MODULES = ("niworkflows.viz.utils", "nilearn.plotting", "svgutils.transform")
#: The tools' libraries loaded once before the worker processes are forked, so each worker has them already:
#: PyTorch (about 1 s to load) is used by every session's brain mask and by the networks, which run in
#: different workers. It is only loaded; no thread pool exists before the fork.
WORKER_MODULES = ("torch",)


def run_workflow(
    sessions: list[PreparedSession],
    plans: dict[str, MethodPlan],
    run: RunContext,
    config: RunConfig,
    resources: ResourcePlan,
    timings: RunTimings,
) -> tuple[dict[str, SessionStatus], Interrupted | None]:
    """Run the sessions' workflows; publish each session when all its steps have finished.

    ``run`` is what the workflows are built from; ``config`` says where the
    run publishes and how nipype stops on a crash.

    Returns the status of each session, and the interruption that stopped
    the run (None when it ran to the end).
    """
    from nipype.interfaces.utility import IdentityInterface

    from thalamus_bidsapp.workflows.participant import workflow_name

    staging = Staging(config.output_dir, config.run_id).open()
    names = [ready.session.name for ready in sessions]
    with timings.phase("workflow_setup"):
        workflow = _build_workflow(sessions, plans, run, config, staging)
    timings.sessions.update({workflow_name(ready.session): ready.session.name for ready in sessions})
    # nipype drops identity nodes when it flattens the graph: count the nodes that really run.
    node_counts = {}
    for ready in sessions:
        session_wf = workflow.get_node(workflow_name(ready.session))
        node_counts[workflow_name(ready.session)] = sum(
            not isinstance(session_wf.get_node(name).interface, IdentityInterface)
            for name in session_wf.list_node_names())
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
                prefetch = _prefetch_report_modules(sessions)
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
        statuses = session_statuses(names, run.crash_root, tracker, staging, config, interrupted)
    finally:
        for name in names:
            staging.discard(name)
        staging.close()
    return statuses, interrupted


def _build_workflow(sessions: list[PreparedSession], plans: dict[str, MethodPlan], run: RunContext,
                    config: RunConfig, staging: Staging):
    """The participant workflow, publishing each session into its staging folder."""
    from thalamus_bidsapp.workflows.participant import init_participant_wf

    contexts = {ready.session.name: SessionContext(publish_dir=staging.session_dir(ready.session.name),
                                                   input_record=ready.record) for ready in sessions}
    workflow = init_participant_wf([ready.session for ready in sessions], plans, run, session_contexts=contexts)
    workflow.config["execution"].update({
        "crashfile_format": "txt",
        "crashdump_dir": str(run.crash_root),
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


def _prefetch_report_modules(sessions: list[PreparedSession]) -> threading.Thread:
    """Load the report's plotting libraries in a thread of the main process, idle while the networks run.

    Started once the workers exist, so no fork follows; the registration figures' libraries only when a
    session has a FLAIR or R1 map to draw.
    """
    registered = any(ready.session.flair or ready.session.r1map for ready in sessions)
    modules = REPORT_MODULES + (REGISTRATION_FIGURE_MODULES if registered else ())
    prefetch = threading.Thread(target=_import_modules, args=(modules,), daemon=True)
    prefetch.start()
    return prefetch


def _import_modules(modules: tuple[str, ...]) -> None:
    """Import ``modules`` ahead of the code that needs them (a failure is left to that code to report)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            LOGGER.debug("could not import %s ahead of time: %s", name, err)


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
