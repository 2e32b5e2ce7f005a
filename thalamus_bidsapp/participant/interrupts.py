"""Stopping promptly on SIGINT (Ctrl-C) and SIGTERM (what SLURM sends at its time limit).

nipype runs each node inside a context that records *any* exception,
KeyboardInterrupt included, as a node failure and then goes on with the next
node. So the handler installed here raises :class:`Interrupted` (a
``BaseException``, which nipype's plugins do not catch) and also remembers the
signal, so that the participant level can raise it again from nipype's
status callback when a node swallowed the first one. After the workflow
stops, :func:`terminate_children` ends the worker processes and the tools
they started.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOGGER = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run received SIGINT or SIGTERM; ``exit_code`` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class InterruptGuard:
    """Context manager: SIGINT and SIGTERM raise :class:`Interrupted` in the main process.

    Forked worker processes inherit the handler; there it behaves like the
    default (KeyboardInterrupt for SIGINT, death for SIGTERM), so the main
    process alone decides how to stop.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold SIGINT and SIGTERM back while a step that must not be cut in half runs (publishing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def check(self) -> None:
        """Raise :class:`Interrupted` again if a signal arrived (nipype may have swallowed the first)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked worker
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.signum is not None:
            LOGGER.warning("received %s again: already stopping", signal.Signals(signum).name)
            return
        self.signum = signum
        LOGGER.warning("received %s: stopping the running sessions", signal.Signals(signum).name)
        raise Interrupted(signum)


def terminate_children(grace_s: float = 5.0) -> None:
    """End every process this one started (workers, and the tools they run): SIGTERM, then SIGKILL."""
    pids = set(_descendants(os.getpid())) | {p.pid for p in multiprocessing.active_children()}
    pids.discard(os.getpid())
    if not pids:
        return
    LOGGER.info("stopping %d child process(es)", len(pids))
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        multiprocessing.active_children()  # reaps finished workers
        if not any(_alive(pid) for pid in pids):
            return
        time.sleep(0.1)
    _signal_all({pid for pid in pids if _alive(pid)}, signal.SIGKILL)


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc; an empty list where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return text[text.rfind(")") + 2:][:1] not in ("Z", "X")
