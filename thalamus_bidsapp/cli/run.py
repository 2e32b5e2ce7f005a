"""Entry point: ``thalamus-bidsapp bids_dir output_dir {participant,group}``."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from thalamus_bidsapp.cli.parser import build_parser, method_options, option_sources
from thalamus_bidsapp.config import Environment, RunConfig
from thalamus_bidsapp.errors import EXIT_CANTCREAT, EXIT_USAGE, ThalamusError
from thalamus_bidsapp.participant.interrupts import Interrupted, InterruptGuard
from thalamus_bidsapp.tools.templateflow import NO_TEMPLATE

LOGGER = logging.getLogger("thalamus_bidsapp")


def build_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> RunConfig:
    """Parse the command line into a :class:`RunConfig` (usage errors exit 64).

    The environment (``environ``, default ``os.environ``) is read here and
    nowhere else in a run: the method options not given take their
    variables' values, TemplateFlow's home is resolved, and the honoured
    variables are kept in ``RunConfig.environment``.
    """
    from thalamus_bidsapp.bidsio.inputs import parse_derivatives

    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    bids_dir = args.bids_dir.resolve()
    output_dir = args.output_dir.expanduser().resolve()
    if output_dir == bids_dir or bids_dir in output_dir.parents:
        raise ThalamusError(
            f"the output folder {output_dir} is inside the input dataset {bids_dir}; "
            "the input dataset is never written to: choose another output folder",
            EXIT_USAGE,
        )
    work_dir = (args.work_dir or default_work_dir(output_dir)).expanduser().resolve()
    if work_dir == bids_dir or bids_dir in work_dir.parents:
        raise ThalamusError(
            f"the work folder {work_dir} is inside the input dataset {bids_dir}; "
            "the input dataset is never written to: choose another work folder with -w",
            EXIT_USAGE,
        )
    if args.clinical_config is not None:
        from thalamus_bidsapp.group.clinical_config import load_clinical_config

        load_clinical_config(args.clinical_config)  # a bad file is a usage error now, not after hours
    if args.qc_thresholds is not None:
        from thalamus_bidsapp.qc.thresholds import load_thresholds

        load_thresholds(args.qc_thresholds)  # a bad key is a usage error now, naming it
    if args.bids_filter_file is not None:
        from thalamus_bidsapp.bidsio.inputs import default_queries, load_queries

        queries = load_queries(args.bids_filter_file)
        if queries["lesion"] != default_queries()["lesion"] and not args.derivatives:
            raise ThalamusError(f"the BIDS filter file {args.bids_filter_file} has a 'lesion' key, but lesion masks "
                                "are looked for only in --derivatives datasets and none is given", EXIT_USAGE)
    return RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        work_dir=work_dir,
        participant_labels=tuple(args.participant_label or ()),
        session_labels=tuple(args.session_label or ()),
        bids_filter_file=args.bids_filter_file,
        derivatives=parse_derivatives(args.derivatives),
        methods=tuple(args.methods) if args.methods else None,
        method_options=method_options(args, environ),
        option_sources=option_sources(args, environ),
        clinical_config=args.clinical_config,
        flirt_cutoff=args.flirt_cutoff,
        ants_cutoff=args.ants_cutoff,
        lesion_filling=args.lesion_filling,
        lesion_source=args.lesion_source,
        lesion_labels=tuple(args.lesion_labels or ()),
        longitudinal=args.longitudinal,
        template=None if args.template == NO_TEMPLATE else args.template,
        template_registration=_template_schedule(
            args.template_registration or environ.get("THALAMUS_TEMPLATE_REGISTRATION", "").strip() or "standard"),
        nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads,
        mem_gb=args.mem_gb,
        skip_bids_validation=args.skip_bids_validation,
        stop_on_first_crash=args.stop_on_first_crash,
        verbosity=args.verbose,
        reports_only=args.reports_only,
        skip_running_sessions=args.skip_running_sessions,
        qc_thresholds=args.qc_thresholds,
        qc_exclude=args.qc_exclude,
        harmonize=args.harmonize,
        harmonize_batch=args.harmonize_batch,
        harmonize_protect=tuple(dict.fromkeys(args.harmonize_protect)),
        harmonize_ref_batch=args.harmonize_ref_batch,
        run_id=f"{datetime.now():%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}",
        templateflow_home=_templateflow_home(args.template, environ),
        environment=Environment.from_environ(environ),
    )


def _templateflow_home(template: str, environ: Mapping[str, str]) -> Path | None:
    """TemplateFlow's home for ``--template`` (None for ``--template none``): $TEMPLATEFLOW_HOME, else
    the templateflow package's default."""
    if template == NO_TEMPLATE:
        return None
    from thalamus_bidsapp.tools.templateflow import templateflow_home

    given = environ.get("TEMPLATEFLOW_HOME", "").strip()
    return Path(given).expanduser().resolve() if given else templateflow_home()


def _template_schedule(value: str) -> str:
    """The template registration schedule; a bad $THALAMUS_TEMPLATE_REGISTRATION is a usage error."""
    if value not in ("standard", "fast"):
        raise ThalamusError(f"--template-registration (or $THALAMUS_TEMPLATE_REGISTRATION) must be 'standard' "
                            f"or 'fast', not {value!r}", EXIT_USAGE)
    return value


def default_work_dir(output_dir: Path) -> Path:
    """``OUTPUT_DIR/sourcedata/work``: never inside the input (the output folder may not be), kept between
    runs so a re-run redoes nothing, and ignored by BIDS validators and indexers."""
    return output_dir / "sourcedata" / "work"


def check_work_dir(work_dir: Path) -> None:
    """Create the work folder and prove it writable, so a read-only one is exit 73 naming it (not a
    confusing failure later, e.g. while indexing the input dataset)."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=work_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ThalamusError(f"cannot write the work folder {work_dir}: {err.strerror or err} "
                            "(choose another with -w)", EXIT_CANTCREAT) from err


def setup_logging(verbosity: int) -> None:
    """Our format for everything; nipype's node-by-node progress at INFO, its internals from -vv."""
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    level = logging.DEBUG if verbosity else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s | %(levelname)-7s | %(name)s | %(message)s",
        datefmt="%y%m%d-%H:%M:%S",
    )
    nipype_level = "DEBUG" if verbosity > 1 else "INFO"
    nipype_config.update_config({"logging": {
        "workflow_level": nipype_level,
        "interface_level": "INFO" if verbosity else "WARNING",
        "utils_level": "INFO" if verbosity else "WARNING",
        "log_to_file": False,
    }})
    nipype_logging.update_logging(nipype_config)
    # nipype attaches its own handlers; drop them so each line is printed once, in our format.
    logging.getLogger("nipype").handlers.clear()
    logging.getLogger("nipype.workflow").addFilter(_shorten_tracebacks)


def _shorten_tracebacks(record: logging.LogRecord) -> bool:
    """Keep nipype's crash messages to their first and last lines; the crash file has the rest."""
    message = record.getMessage()
    if record.levelno >= logging.ERROR and "Traceback" in message:
        lines = [line for line in message.splitlines() if line.strip()]
        record.msg, record.args = f"{lines[0]} ... {lines[-1].strip()}", ()
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns the exit status documented in the README.

    As the command (``argv`` None: the ``thalamus-bidsapp`` script or
    ``python -m thalamus_bidsapp``) the process ends here, with that status.
    """
    from thalamus_bidsapp.participant.timings import process_start_time

    command_line = argv is None
    # As a command, the start-up in logs/<run>/timings.tsv counts from the process start (interpreter, imports).
    started = (process_start_time() if command_line else None) or time.time()
    code = _main(argv, started)
    if command_line:
        _leave(code)
    return code


def _leave(code: int) -> NoReturn:
    """End the process without the interpreter's teardown.

    Tearing down torch, pybids and nipype takes one to several seconds and
    does nothing useful: every output is already whole (written under a
    temporary name and renamed), the worker processes have ended, and the
    log handlers and standard streams are flushed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said anyway
            pass
    os._exit(code)


def _main(argv: list[str] | None, started: float) -> int:
    # No telemetry lookups: compute nodes often have no network.
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    args = sys.argv[1:] if argv is None else list(argv)
    from thalamus_bidsapp.cli import check_tools, fetch_templates

    if check_tools.wants_check_tools(args):
        return check_tools.main(args)
    if fetch_templates.wants_fetch_templates(args):
        return fetch_templates.main(args)
    try:
        config = build_config(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except ThalamusError as err:
        print(f"thalamus-bidsapp: error: {err}", file=sys.stderr)
        return err.exit_code
    setup_logging(config.verbosity)
    try:
        with InterruptGuard():
            config.output_dir.mkdir(parents=True, exist_ok=True)
            check_work_dir(config.work_dir)
            if config.analysis_level == "participant":
                from thalamus_bidsapp.participant.runner import run_participant

                return run_participant(config, started=started)
            from thalamus_bidsapp.group.runner import run_group

            return run_group(config)
    except Interrupted as stop:
        sessions_tsv = config.output_dir / "logs" / config.run_id / "sessions.tsv"
        where = (f"; the sessions that were running are recorded as interrupted in {sessions_tsv}"
                 if sessions_tsv.is_file() else "")
        LOGGER.error("%s: stopped%s", stop, where)
        return stop.exit_code
    except ThalamusError as err:
        LOGGER.error("%s", err)
        return err.exit_code
    except OSError as err:
        # Typically a read-only or full output or work folder: say which file, no traceback.
        LOGGER.error("cannot write %s: %s", err.filename or config.output_dir, err.strerror or err)
        return EXIT_CANTCREAT
    except KeyboardInterrupt:
        LOGGER.error("interrupted")
        return 130
