"""The one user-facing error type, caught only in :func:`thalamus_bidsapp.cli.run.main`."""

from __future__ import annotations

# Exit codes follow BSD sysexits.h, as documented in the README.
EXIT_OK = 0
EXIT_SESSIONS_FAILED = 1
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_CANTCREAT = 73
EXIT_TEMPFAIL = 75


class ThalamusError(Exception):
    """An error the user can fix: bad arguments, bad or missing input data.

    Parameters
    ----------
    message
        What went wrong, naming the file and the reason.
    exit_code
        Process exit status: 64 usage, 65 bad input data, 66 missing input.
    """

    def __init__(self, message: str, exit_code: int = EXIT_DATAERR) -> None:
        super().__init__(message)
        self.exit_code = exit_code
