"""Where a participant run's time goes: ``logs/<run>/timings.tsv`` and one log line per session.

Rows come from two sources: the phases of the run that happen outside
nipype (start-up, indexing, tool checks, reports), timed here, and every
workflow node, timed by nipype itself (the interface's start and end, read
from the node's result through the plugin's ``status_callback``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

LOGGER = logging.getLogger(__name__)

#: The session column of rows that belong to the whole run, not one session.
RUN_LEVEL = "n/a"

#: Nodes whose work is a tool's own compute (a network, a registration, an external program);
#: everything else is the app's bookkeeping (reorienting, volumes, publishing).
#: (Each method's mask-making node is named ``<method>_thalamus`` by its ``methods/`` module.)
#: The template nodes are ANTs: the registration and applying its transforms to the prior and the masks.
TOOL_NODES = frozenset({"brain_mask", "recon_all", "register", "register_template", "masks_to_template"})
TOOL_NODE_SUFFIX = "_thalamus"

TIMING_COLUMNS: dict[str, str] = {
    "session": "Subject and session (sub-<label>[_ses-<label>]); n/a for the phases of the whole run",
    "step": "The workflow node, as <sub-workflow>.<node> inside the session (e.g. "
            "segmentation_wf.first_thalamus), or the run phase: startup (imports, options), index (BIDS "
            "indexing and validation), preflight, tool_check (tools and model checksums), setup (logs), "
            "workflow_setup, tool_libraries (the tools' shared libraries, e.g. PyTorch, loaded once before the "
            "worker processes start, so that no step loads them again), workers (starting the worker "
            "processes), workflow (all nodes), reports, total",
    "kind": "tool: a tool's own compute (brain extraction, segmentation network or program, registration, "
            "and loading the tools' shared libraries); "
            "step: the app's own node (reorientation, volumes, publishing); phase: run-level work outside the "
            "nodes; cached: a node whose result was reused from the work folder (seconds 0)",
    "seconds": {"Description": "Wall-clock time of the step (for nodes: the interface's own run, as nipype "
                               "measures it)", "Units": "s"},
    "threads": "CPUs the step booked: the threads of a multithreaded step, else 1",
    "start": {"Description": "When the step started, counted from the start of the run", "Units": "s"},
}


@dataclass(frozen=True)
class StepTiming:
    """One row of ``timings.tsv``."""

    session: str
    step: str
    kind: str
    seconds: float
    threads: int
    start: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


def process_start_time() -> float | None:
    """When this process started (``time.time()`` scale), from /proc on Linux; None elsewhere.

    The start-up row of ``timings.tsv`` then includes the interpreter and the
    imports that happen before :func:`thalamus_bidsapp.cli.run.main` runs.
    """
    try:
        import os

        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5)
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    age = uptime - started_after_boot
    return time.time() - age if 0 <= age < 3600 else None


def _epoch(iso_utc: str) -> float:
    """nipype's runtime stamps (UTC ISO 8601, naive or not) as seconds since the epoch."""
    stamp = datetime.fromisoformat(iso_utc)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


class RunTimings:
    """Collects the step timings of one participant run.

    Parameters
    ----------
    sessions
        nipype name of each session's workflow -> session name
        (``sub_01_ses_1_wf`` -> ``sub-01_ses-1``), to file nodes under their session.
    started
        When the run started (``time.time()``); default: now.
    """

    def __init__(self, sessions: Mapping[str, str] | None = None, started: float | None = None) -> None:
        self.started = time.time() if started is None else started
        self.sessions: dict[str, str] = dict(sessions or {})
        self.rows: list[StepTiming] = []
        self._submitted: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- recording ---------------------------------------------------------------------------

    def add(self, session: str, step: str, kind: str, start: float, end: float, threads: int = 1) -> None:
        """Record a step from its start and end (``time.time()`` values)."""
        with self._lock:
            self.rows.append(StepTiming(session, step, kind, round(max(end - start, 0.0), 3), int(threads),
                                        round(start - self.started, 3)))

    @contextlib.contextmanager
    def phase(self, step: str, session: str = RUN_LEVEL, threads: int = 1, kind: str = "phase") -> Iterator[None]:
        """Time a run-level phase (``with timings.phase("index"): ...``); ``kind="tool"`` for the tools' own work."""
        start = time.time()
        try:
            yield
        finally:
            self.add(session, step, kind, start, time.time(), threads)

    def node_status(self, node, status: str) -> None:
        """nipype ``status_callback``: record each node when it ends (or fails).

        Called in the main process by both the Linear and the MultiProc plugin.
        """
        if status == "start":
            self._submitted[node.fullname] = time.time()
            return
        session, step = self._locate(node)
        threads = int(getattr(node, "n_procs", 1) or 1)
        kind = "tool" if node.name in TOOL_NODES or node.name.endswith(TOOL_NODE_SUFFIX) else "step"
        start = end = None
        try:
            runtime = node.result.runtime
            start, end = _epoch(runtime.startTime), _epoch(runtime.endTime)
        except Exception:  # no result file (a crash, an old nipype): fall back to what the plugin saw
            LOGGER.debug("no runtime stamps for %s", node.fullname)
        if start is None or end is None:
            start = self._submitted.get(node.fullname, time.time())
            end = time.time()
        elif start < self.started:
            # A result from an earlier run, reused: nothing ran now.
            kind = "cached"
            start = end = time.time()
        self.add(session, step, kind, start, end, threads)

    def _locate(self, node) -> tuple[str, str]:
        """(session, step inside the session) of a node, from its place in the workflow."""
        parts = node.fullname.split(".")
        for index, part in enumerate(parts):
            if part in self.sessions:
                return self.sessions[part], ".".join(parts[index + 1:])
        return RUN_LEVEL, ".".join(parts[1:]) or node.name

    # -- reading -----------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The rows, in start order."""
        table = pd.DataFrame([asdict(row) for row in self.rows], columns=list(TIMING_COLUMNS))
        return table.sort_values(["start", "session", "step"], kind="stable").reset_index(drop=True)

    def write(self, path: Path) -> Path:
        """Write ``timings.tsv`` and its JSON sidecar (column descriptions), atomically."""
        from thalamus_bidsapp.bidsio.atomic import write_tsv

        return write_tsv(self.table(), path, TIMING_COLUMNS)

    def session_summary(self, session: str) -> str:
        """One line: the session's span, its tools' critical path and the largest steps."""
        rows = [row for row in self.rows if row.session == session]
        if not rows:
            return f"{session}: no steps ran"
        ran = [row for row in rows if row.kind != "cached"]
        tools = sorted((row for row in ran if row.kind == "tool"), key=lambda row: -row.seconds)
        others = [row for row in ran if row.kind == "step"]
        span = (max(row.end for row in ran) - min(row.start for row in ran)) if ran else 0.0
        parts = [f"{session}: {span:.1f} s from first to last step"]
        if tools:
            parts.append(f"tools {critical_path(rows):.1f} s ("
                         + ", ".join(f"{row.step.split('.')[-1]} {row.seconds:.1f} s x{row.threads}"
                                     for row in tools) + ")")
        if others:
            parts.append(f"{len(others)} other steps {sum(row.seconds for row in others):.1f} s")
        cached = len(rows) - len(ran)
        if cached:
            parts.append(f"{cached} reused from the work folder")
        return "; ".join(parts)


def critical_path(rows) -> float:
    """Seconds during which at least one tool ran: the tools' critical path as they were scheduled.

    For tools that ran one after the other (each with all the cores, as with
    one session) it is the sum of their times; for tools that overlapped, the
    stretch they covered together. Accepts :class:`StepTiming` rows or a
    ``timings.tsv`` table.
    """
    if isinstance(rows, pd.DataFrame):
        rows = [StepTiming(**record) for record in rows[list(TIMING_COLUMNS)].to_dict("records")]
    intervals = sorted((row.start, row.end) for row in rows if row.kind == "tool")
    total, reach = 0.0, None
    for start, end in intervals:
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def read_timings(path: Path) -> pd.DataFrame:
    """A ``timings.tsv`` back as a table (session ``n/a`` kept as text)."""
    return pd.read_csv(path, sep="\t", keep_default_na=False,
                       dtype={"session": str, "step": str, "kind": str, "seconds": float, "threads": int,
                              "start": float})
