"""A participant run's sessions while nipype runs them: publish each one when complete, record how it ended.

:class:`SessionTracker` is nipype's status callback: it publishes a session's
staged outputs as soon as all its nodes have finished, and raises again an
interruption that a node swallowed. :func:`session_statuses` turns what it saw
(and the crash reports) into one :class:`SessionStatus` per session.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from thalamus_bidsapp.bidsio.staging import Staging, is_write_error
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_CANTCREAT, EXIT_SESSIONS_FAILED, ThalamusError
from thalamus_bidsapp.participant.interrupts import Interrupted, InterruptGuard

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionStatus:
    session: str
    status: str  # "ok", "failed" or "interrupted"
    reason: str = ""
    exit_code: int = EXIT_SESSIONS_FAILED  # EXIT_CANTCREAT when an output could not be written


def session_statuses(names: list[str], crash_root: Path, tracker: SessionTracker, staging: Staging,
                     config: RunConfig, interrupted: Interrupted | None) -> dict[str, SessionStatus]:
    """How each session ended: published (ok, or failed to publish), failed, interrupted or not finished."""
    statuses = {}
    for name in names:
        crashes = sorted((crash_root / name).glob("crash-*.txt"))
        if name in tracker.published:
            statuses[name] = tracker.published[name]
        elif name in tracker.failed_before_interrupt or (crashes and interrupted is None):
            statuses[name] = _failed_status(name, crashes, tracker.failures.get(name), staging, config)
        elif interrupted is not None:
            statuses[name] = SessionStatus(name, "interrupted", f"{interrupted}; no outputs were published")
        elif tracker.complete(name):
            statuses[name] = tracker.publish(name)
        else:
            statuses[name] = SessionStatus(
                name, "failed", "not finished: the run stopped at the first crash (--stop-on-first-crash)")
    return statuses


def no_broken_pool(record: logging.LogRecord) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    return not (record.exc_info and isinstance(record.exc_info[1], BrokenProcessPool))


class SessionTracker:
    """nipype status callback: publishes a session as soon as all its nodes have finished.

    It also re-raises an interruption that a node swallowed, so the run stops.
    """

    def __init__(self, node_counts: dict[str, int], session_names: dict[str, str], staging: Staging,
                 guard: InterruptGuard) -> None:
        self.remaining = dict(node_counts)
        self.session_names = session_names
        self.staging = staging
        self.guard = guard
        self.published: dict[str, SessionStatus] = {}  # sessions whose commit was attempted
        self.failures: dict[str, ThalamusError] = {}
        self.failed_before_interrupt: set[str] = set()

    def __call__(self, node, status: str) -> None:
        workflow = next((part for part in node.fullname.split(".") if part in self.remaining), None)
        if status == "exception" and workflow is not None and self.guard.signum is None:
            self.failed_before_interrupt.add(self.session_names[workflow])
        self.guard.check()
        if status != "end" or workflow is None:
            return
        self.remaining[workflow] -= 1
        name = self.session_names[workflow]
        if self.remaining[workflow] == 0 and name not in self.failed_before_interrupt:
            self.publish(name)

    def complete(self, name: str) -> bool:
        """Whether every node of session ``name`` has finished."""
        return all(count <= 0 for wf, count in self.remaining.items() if self.session_names[wf] == name)

    def publish(self, name: str) -> SessionStatus:
        """Commit the session's staged outputs; a signal waits until the commit (or its rollback) is done."""
        with self.guard.deferred():
            try:
                changed = self.staging.commit(name)
            except ThalamusError as err:
                LOGGER.error("%s: %s; the session's outputs are left as they were", name, err)
                self.failures[name] = err
                self.failed_before_interrupt.add(name)
                status = SessionStatus(name, "failed", str(err), err.exit_code)
            else:
                LOGGER.info("%s: published %d new or changed file(s)", name, len(changed))
                status = SessionStatus(name, "ok")
            self.published[name] = status
        return status


def _failed_status(name: str, crashes: list[Path], error: ThalamusError | None, staging: Staging,
                   config: RunConfig) -> SessionStatus:
    """The status of a failed session: exit 73 when the crash was a file that could not be written."""
    if error is not None:
        return SessionStatus(name, "failed", str(error), error.exit_code)
    if not crashes:
        return SessionStatus(name, "failed", "unknown error")
    summary = _crash_summary(crashes[0])
    write_error = _write_error(summary, staging, config, crashes[0])
    if write_error:
        return SessionStatus(name, "failed", f"{write_error} (crash report: {crashes[0]})", EXIT_CANTCREAT)
    return SessionStatus(name, "failed", f"{summary} (crash report: {crashes[0]})")


_ERRNO_MESSAGE = re.compile(r"\[Errno (?P<errno>\d+)\] (?P<strerror>[^:'\n]+?)(?::\s*'(?P<filename>[^']+)')?\s*$")


def _write_error(summary: str, staging: Staging, config: RunConfig, crash_file: Path | None = None) -> str | None:
    """``cannot write <file>: <reason>`` when a crash message is a write failure in the output or work folder.

    An error without a file name (a compressed stream that ran out of space) names the step's working
    folder, from the crash report.
    """
    match = _ERRNO_MESSAGE.search(summary)
    if not match:
        return None
    err = OSError(int(match["errno"]), match["strerror"], match["filename"])
    if not is_write_error(err, config.output_dir, config.work_dir):
        return None
    if match["filename"]:
        target = str(staging.final_path(match["filename"]))
    else:
        folder = _crash_working_dir(crash_file) if crash_file is not None else None
        target = f"a file in {folder}" if folder else f"a file in the work folder {config.work_dir}"
    return f"cannot write {target}: {match['strerror']}"


def _crash_working_dir(crash_file: Path) -> str | None:
    """The ``Working directory:`` line of a nipype crash report (the failed step's folder), or None."""
    for line in crash_file.read_text(errors="replace").splitlines():
        if line.strip().startswith("Working directory:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _crash_summary(crash_file: Path) -> str:
    """The last non-empty line of a nipype crash report: the exception message."""
    lines = [line.strip() for line in crash_file.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line]
    return errors[-1] if errors else (lines[-1] if lines else "unknown error")
