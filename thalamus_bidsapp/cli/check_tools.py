"""``thalamus-bidsapp --check-tools``: print what can run here and exit 0, or 66 when something cannot.

The checks are in :mod:`thalamus_bidsapp.tools.check`; this module parses the
options and writes the report to standard output (it is the command's result,
like ``--help``, so it is written there rather than logged).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from thalamus_bidsapp import __version__
from thalamus_bidsapp.cli.parser import build_parser, method_options, option_sources
from thalamus_bidsapp.config import Environment
from thalamus_bidsapp.errors import EXIT_NOINPUT, EXIT_OK
from thalamus_bidsapp.methods import all_methods, envelope_names, get_method, method_names, needs_envelope
from thalamus_bidsapp.tools.check import (
    CheckOptions,
    CheckReport,
    Finding,
    all_ok,
    check_brain_mask,
    check_caches,
    check_registration,
    check_template,
)
from thalamus_bidsapp.tools.templateflow import NO_TEMPLATE

FLAG = "--check-tools"


def wants_check_tools(argv: Sequence[str]) -> bool:
    """True when the command line asks for the tool check (``--check-tools`` or ``--check-tools=...``)."""
    return any(arg == FLAG or arg.startswith(FLAG + "=") for arg in argv)


def render(reports: Sequence[CheckReport], methods: Sequence[str], stream: TextIO) -> None:
    """Write the report: one block per step and method, each finding on its own line, then a summary."""
    stream.write(f"thalamus-bidsapp {__version__}: what can run here (methods: {' '.join(methods)})\n")
    for report in reports:
        verdict = "can run" if report.ok else "CANNOT RUN"
        stream.write(f"\n[{'ok' if report.ok else 'FAIL'}] {report.kind} {report.name}: {verdict}\n")
        for finding in report.findings:
            mark = "ok" if finding.ok else ("FAIL" if finding.required else "warn")
            stream.write(f"    {mark:<5} {finding.label}: {finding.detail}\n")
    failed = [r for r in reports if not r.ok]
    runnable = [r.name for r in reports if r.kind == "method" and r.ok]
    stream.write(f"\nmethods that can run: {' '.join(runnable) or 'none'}\n")
    if failed:
        stream.write("cannot run:\n")
        for report in failed:
            stream.write(f"  {report.kind} {report.name}: {report.reason}\n")
    stream.write(f"exit {EXIT_OK if not failed else EXIT_NOINPUT}\n")


def check_installation(methods: Sequence[str] | None, options: CheckOptions) -> list[CheckReport]:
    """Reports for the steps every session runs, then for each registered method (default: all).

    A method that needs an envelope (MindGlide) also needs one of the envelope
    methods among those checked to run, as a run does.
    """
    wanted = list(methods) if methods else list(method_names())
    reports = [check_brain_mask(options), check_registration(options), check_template(options), check_caches(options)]
    by_method = {name: get_method(name).check_installation(options) for name in wanted}
    for method in all_methods():
        if needs_envelope(method) and method.name in by_method:
            envelopes = [m for m in envelope_names() if m in by_method and by_method[m].ok]
            report = by_method[method.name]
            envelope = Finding("envelope method", bool(envelopes),
                               f"{envelopes[0]} (bounds the deep grey matter label)" if envelopes else
                               f"none of {', '.join(envelope_names())} can run among the methods checked")
            by_method[method.name] = CheckReport(report.name, report.kind, (*report.findings, envelope))
    return reports + [by_method[name] for name in wanted]


def main(argv: Sequence[str]) -> int:
    """Parse the options the check honours, check, print; 0 when every step and method checked can run."""
    try:
        args = build_parser(require_positionals=False).parse_args(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s | %(name)s | %(message)s")
    environ = os.environ  # read here, once, like a run's configuration
    template = None if args.template == NO_TEMPLATE else args.template
    given_home = environ.get("TEMPLATEFLOW_HOME", "").strip()
    options = CheckOptions(
        method_options=method_options(args, environ),
        option_sources=option_sources(args, environ),
        environment=Environment.from_environ(environ),
        templateflow_home=Path(given_home).expanduser().resolve() if given_home and template else None,
        work_dir=args.work_dir.expanduser().resolve() if args.work_dir else None,
        require_license=args.check_tools != "installed",
        template=template,
    )
    methods = list(args.methods) if args.methods else None
    reports = check_installation(methods, options)
    render(reports, methods or [r.name for r in reports if r.kind == "method"], sys.stdout)
    sys.stdout.flush()
    return EXIT_OK if all_ok(reports) else EXIT_NOINPUT
