"""How many processes, threads and how much memory a participant run uses.

The rule (fMRIPrep's, adapted): ``--nprocs`` defaults to every CPU this
process may use. The threads of each multithreaded step (the networks, ANTs,
recon-all; ``--omp-nthreads``) default to

- every one of those CPUs when one session is to run: its steps mostly wait
  on each other, so the longest one should use the whole machine;
- ``min(nprocs - 1, 8)`` (at least 1) when several sessions run side by side.

nipype's MultiProc plugin then books each node's threads (``n_procs``) and
memory (``mem_gb``) against ``nprocs`` and ``--mem-gb``, so nodes running in
parallel never ask for more CPUs or memory than the run was given.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

#: Threads per step when several sessions share the machine (fMRIPrep's cap).
MAX_SHARED_THREADS = 8
#: Share of the memory handed to nipype by default, leaving room for the main process and the OS.
MEMORY_FRACTION = 0.9
#: Seconds between nipype's checks for finished nodes (its default, 2 s, adds up to seconds per session).
POLL_SECONDS = 0.1
RULE = ("threads per step default to all CPUs when one session runs, "
        f"else min(nprocs - 1, {MAX_SHARED_THREADS})")


@dataclass(frozen=True)
class ResourcePlan:
    """Processes, threads per step and memory of a participant run.

    Attributes
    ----------
    n_sessions
        Sessions to run.
    nprocs
        CPUs nipype may keep busy at once (MultiProc ``n_procs``).
    omp_nthreads
        Threads of each multithreaded step, and the CPUs its node books.
    mem_gb
        Memory nipype may hand out at once (MultiProc ``memory_gb``).
    """

    n_sessions: int
    nprocs: int
    omp_nthreads: int
    mem_gb: float

    @property
    def plugin(self) -> str:
        """``Linear`` (one process, no scheduling overhead) or ``MultiProc``."""
        return "Linear" if self.nprocs == 1 else "MultiProc"

    def plugin_args(self) -> dict[str, Any]:
        """Arguments of :meth:`nipype.pipeline.engine.Workflow.run` for :attr:`plugin`."""
        if self.plugin == "Linear":
            return {}
        # raise_insufficient=False: a node booking more than the run has runs alone, not not at all.
        return {"n_procs": self.nprocs, "memory_gb": self.mem_gb, "raise_insufficient": False}

    def describe(self) -> str:
        """One line for the log."""
        return (f"{self.n_sessions} session(s), {self.nprocs} process(es) ({self.plugin}), "
                f"{self.omp_nthreads} thread(s) per multithreaded step, {self.mem_gb:.1f} GB")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as set by taskset or a batch scheduler)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def available_memory_gb() -> float:
    """Physical memory, or the container's (cgroup v2 or v1) limit when lower, in GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3  # an unknown machine: assume a small one
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / 1024**3


def plan_resources(
    n_sessions: int,
    *,
    nprocs: int | None = None,
    omp_nthreads: int | None = None,
    mem_gb: float | None = None,
    cpus: int | None = None,
    memory_gb: float | None = None,
) -> ResourcePlan:
    """Apply the thread rule to the user's choices (None: not given).

    Parameters
    ----------
    n_sessions
        Sessions to run.
    nprocs, omp_nthreads, mem_gb
        ``--nprocs``, ``--omp-nthreads`` and ``--mem-gb``, or None for the default.
    cpus, memory_gb
        The machine: CPUs and GB available (default: measured).

    Returns
    -------
    ResourcePlan
        ``omp_nthreads`` never exceeds ``nprocs`` (a larger request is lowered, with a warning).
    """
    nprocs = nprocs or (cpus if cpus is not None else available_cpus())
    if omp_nthreads is None:
        omp_nthreads = nprocs if n_sessions <= 1 else max(1, min(nprocs - 1, MAX_SHARED_THREADS))
    elif omp_nthreads > nprocs:
        LOGGER.warning("--omp-nthreads %d is more than the %d process(es) of the run; using %d threads per step",
                       omp_nthreads, nprocs, nprocs)
        omp_nthreads = nprocs
    if mem_gb is None:
        mem_gb = MEMORY_FRACTION * (memory_gb if memory_gb is not None else available_memory_gb())
    return ResourcePlan(n_sessions=n_sessions, nprocs=nprocs, omp_nthreads=omp_nthreads, mem_gb=round(mem_gb, 2))
