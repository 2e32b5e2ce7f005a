"""The threads of the external tools a step runs.

ANTs (ITK) and the OpenMP/BLAS libraries read their thread counts from the
environment once per process; nipype's worker processes and the tools they
start inherit it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: Environment variables that bound the threads of the tools run inside a step.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: ITK (ANTs) threads, whatever --omp-nthreads says: multithreaded ITK sums its registration metric in an
#: order that depends on the threads and their scheduling, so two identical runs gave different transforms
#: (and masks); with one thread the same inputs give the same result, bit for bit.
ITK_THREADS = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Bound the threads of tools that read them from the environment, for the duration of the run.

    ANTs (ITK) and OpenMP/BLAS libraries read these variables once per
    process; nipype's worker processes and the tools they start inherit
    them. The previous values are restored afterwards.
    """
    previous = {name: os.environ.get(name) for name in (*THREAD_VARIABLES, *ITK_THREADS)}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    os.environ.update(ITK_THREADS)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
