"""``thalamus-bidsapp --fetch-templates``: put the TemplateFlow files of ``--template`` in TEMPLATEFLOW_HOME.

Runs never download (a missing file is exit 66 before any tool runs); this
command is the one step that does, once per machine with network access,
like ``templateflow``'s own ``api.get``. The container images have the files.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from thalamus_bidsapp.cli.parser import build_parser
from thalamus_bidsapp.errors import EXIT_OK, EXIT_USAGE, ThalamusError
from thalamus_bidsapp.tools.templateflow import NO_TEMPLATE, fetch_template_files

FLAG = "--fetch-templates"


def wants_fetch_templates(argv: Sequence[str]) -> bool:
    """True when the command line asks to fetch the templates."""
    return FLAG in argv


def main(argv: Sequence[str]) -> int:
    """Fetch the files of ``--template``; print where they are; 0, or 66 naming what could not be fetched."""
    try:
        args = build_parser(require_positionals=False).parse_args(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s | %(name)s | %(message)s")
    if args.template == NO_TEMPLATE:
        print(f"thalamus-bidsapp: error: {FLAG} needs a template (--template {NO_TEMPLATE} uses none)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        files = fetch_template_files(args.template)
    except ThalamusError as err:
        print(f"thalamus-bidsapp: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"template {files.template} is ready:\n  {files.target}\n  {files.prior}")
    return EXIT_OK
