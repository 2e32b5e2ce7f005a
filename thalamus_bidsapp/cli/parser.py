"""Command-line parser, following the BIDS-Apps contract."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path

from thalamus_bidsapp import __version__
from thalamus_bidsapp.config import DEFAULT_ANTS_CUTOFF, DEFAULT_FLIRT_CUTOFF
from thalamus_bidsapp.errors import EXIT_USAGE
from thalamus_bidsapp.methods import CliOption, all_methods, method_names, provides_lesions

DESCRIPTION = """\
Thalamus segmentation benchmark for multiple sclerosis, as a BIDS App.

participant: per subject and session, reorient the images, make a T1w brain
mask (deepbet), segment the thalamus with each available method and write
BIDS-derivative masks, volumes and provenance into OUTPUT_DIR.
group: gather every session's volumes (joined with participants.tsv and the
sessions tables), measure agreement with manual masks and between methods,
run the clinical models, and write tables, figures and a report into
OUTPUT_DIR/group.
"""

EPILOG = """\
exit status: 0 success; 1 some sessions failed (after all were attempted);
64 usage error; 65 bad input data; 66 a required input is missing (with
--check-tools: a step or method cannot run here); 73 an output or work file
cannot be written; 75 participant jobs are still running or were killed
without recording a result (group level);
130/143 stopped by SIGINT/SIGTERM (the running sessions are recorded as
interrupted).

threads: with one session to run, each network, ANTs and recon-all step uses
every CPU (--nprocs); with several, min(nprocs - 1, 8) threads per step and
sessions run side by side. nipype books each step's threads and memory, so
steps running together never exceed --nprocs CPUs or --mem-gb.
logs/<run>/timings.tsv says where the time went.

example:
  thalamus-bidsapp /data/bids /data/out participant --participant-label 01 02 \\
      --fs-subjects-dir /data/freesurfer -w /scratch/work
  thalamus-bidsapp /data/bids /data/out group
"""


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 64 (EX_USAGE) on a usage error, as documented."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.print_usage()
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder not found: {value}")
    return path.resolve()


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path.resolve()


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return number


def _finite_float(value: str) -> float:
    """A finite number: ``nan``, ``inf`` and ``-inf``, which float() accepts, are usage errors."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number: {value}")
    return number


def _positive_float(value: str) -> float:
    number = _finite_float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {value}")
    return number


_OPTION_TYPES = {"dir": _existing_dir, "file": _existing_file, "str": str}


def _add_harmonize_options(group: argparse._ArgumentGroup) -> None:
    """``--harmonize`` and its batch and protected covariates (group level)."""
    group.add_argument(
        "--harmonize", choices=["none", "combat", "combat-gam"], default="none",
        help="remove site or scanner effects from the volumes before the group statistics: empirical Bayes "
        "ComBat, or ComBat-GAM with a non-linear age term; with repeated sessions a random subject intercept "
        "is added (longitudinal ComBat). Adds volume_ml_harmonized to group/volumes.tsv (default: none)",
    )
    group.add_argument(
        "--harmonize-batch", choices=["site", "scanner"], default="scanner",
        help="what one batch is for --harmonize: the session's scanner (from the image sidecars or the "
        "scanner column of sessions.tsv) or its site (InstitutionName, or the site column); default: scanner",
    )
    group.add_argument(
        "--harmonize-protect", nargs="+", default=["age", "sex"], metavar="COLUMN",
        help="columns of participants.tsv or sessions.tsv whose effects --harmonize keeps (e.g. age sex "
        "diagnosis edss); numbers enter linearly, text as categories; ICV is always kept "
        "(default: age sex)",
    )
    group.add_argument(
        "--harmonize-ref-batch", default=None, metavar="LABEL",
        help="harmonise to this batch (a site or scanner label as group/volumes.tsv writes it) instead of the "
        "pool of all batches: its volumes stay as measured and the others take its mean and variance "
        "(default: none, the pooled mean and variance)",
    )


def _add_method_option(group: argparse._ArgumentGroup, option: CliOption) -> None:
    """Add a method's declared option; ``--help`` shows its environment variable and choices."""
    kwargs: dict = {"dest": option.dest, "default": option.default, "help": option.help}
    if option.kind == "choice":
        kwargs["choices"] = option.choice_list()
    else:
        kwargs["type"] = _OPTION_TYPES[option.kind]
        kwargs["metavar"] = option.metavar or option.kind.upper()
    if option.env and f"${option.env}" not in option.help:
        kwargs["help"] = f"{option.help} (environment variable: ${option.env})"
    group.add_argument(option.flag, **kwargs)


def method_options(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict:
    """The values of every method's declared options, by ``dest`` (for ``RunConfig.method_options``).

    An option not given takes the value of its environment variable in
    ``environ`` (``CliOption.env``; a path made absolute), so the methods read
    their options only, never the environment.
    """
    values = {}
    for method in all_methods():
        for option in method.options:
            value = getattr(args, option.dest, None)
            from_env = _env_value(option, environ) if value is None else None
            values[option.dest] = from_env if from_env is not None else value
    return values


def option_sources(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """``dest`` -> environment variable, for each method option that came from the environment."""
    return {option.dest: str(option.env) for method in all_methods() for option in method.options
            if getattr(args, option.dest, None) is None and _env_value(option, environ) is not None}


def _env_value(option: CliOption, environ: Mapping[str, str] | None) -> object:
    """The option's value from its environment variable, or None (not declared, unset or empty)."""
    raw = (environ or {}).get(option.env or "", "").strip() if option.env else ""
    if not raw:
        return None
    return Path(raw).expanduser().resolve() if option.kind in ("dir", "file") else raw


def _add_data_selection(parser: argparse.ArgumentParser) -> None:
    """The "selecting data" options: participants, sessions, pybids filters, derivatives, validation."""
    sel = parser.add_argument_group("selecting data")
    sel.add_argument(
        "--participant-label", "--participant_label", nargs="+", metavar="LABEL",
        help="participants to process (with or without 'sub-'); default: all",
    )
    sel.add_argument(
        "--session-label", nargs="+", metavar="LABEL",
        help="sessions to process (with or without 'ses-'); default: all",
    )
    sel.add_argument(
        "--bids-filter-file", type=_existing_file, metavar="FILE",
        help="JSON file overriding the pybids queries per input (keys: t1w, t2w, flair, r1map, manual, lesion)",
    )
    sel.add_argument(
        "--derivatives", nargs="+", metavar="NAME=PATH",
        help="extra derivatives datasets to search for R1 maps, manual thalamus masks and lesion masks "
        "(label-lesion or desc-lesion, suffix mask or dseg, on the T1w or the FLAIR grid)",
    )
    sel.add_argument("--skip-bids-validation", action="store_true", help="do not validate the input dataset")
    _add_lesion_options(parser)
    _add_longitudinal_option(parser)


def _add_longitudinal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--longitudinal", choices=["auto", "off"], default="auto",
        help="auto (default): a subject with two or more sessions with a T1w is also processed by the "
        "longitudinal mode after its cross-sectional sessions: a within-subject template, "
        "its thalamus (segmented once by each selected method that can: MeshNet, FIRST, DBSegment, MindGlide "
        "on T1w) carried into each session (desc-<method>Long) and the change between consecutive sessions by "
        "Jacobian integration (one registration per session, shared by the methods) "
        "(sub-<label>_label-thalamus_desc-longitudinal_volumes.tsv; see the README's Longitudinal mode). "
        "off: cross-sectional only",
    )


def _add_lesion_options(parser: argparse.ArgumentParser) -> None:
    """The "lesions" options: filling the T1w before the T1w methods, and where lesion masks come from."""
    les = parser.add_argument_group("lesions (multiple sclerosis)")
    les.add_argument(
        "--lesion-filling", choices=["auto", "off", "both"], default="auto",
        help="auto (default): when a session has a lesion mask, fill its lesions in the T1w (from the "
        "normal-appearing white matter near them; inside the thalamus prior from normal thalamus) before every "
        "method that segments the T1w, and publish desc-lesionfilled_T1w; off: never fill; both: also run those "
        "methods on the unfilled T1w, their masks published as desc-<mask>Unfilled (the filled ones keep desc-<mask>), "
        "to measure what filling changes in one run",
    )
    les.add_argument(
        "--lesion-labels", nargs="+", metavar="LABEL",
        help="the lesion labels of a lesion segmentation (dseg): names in its .tsv lookup table, matched whole "
        "(case ignored), or index values; default: the rows named 'lesion', 'lesions', 'WM lesion', 'white matter "
        "lesion(s)', 'MS lesion(s)', 'WMH' or 'white matter hyperintensity/ies' (never a name that only contains "
        "'lesion'), else index 1 of a label-lesion dseg",
    )
    providers = [m.name for m in all_methods() if provides_lesions(m)]
    les.add_argument(
        "--lesion-source", choices=["derivatives", *providers], default="derivatives",
        help="derivatives (default): lesion masks from --derivatives (or the 'lesion' key of --bids-filter-file); "
        f"{' or '.join(providers) or 'a method'}: when a session has no such mask and the method runs, its lesion "
        "class (read from the package's label table) segmented on the registered FLAIR (else the T1w), recorded "
        "in the sidecars",
    )


def _add_qc_options(parser: argparse.ArgumentParser) -> None:
    """The "quality control" options: thresholds of the QC checks, and leaving flagged masks out."""
    qc = parser.add_argument_group("quality control")
    qc.add_argument(
        "--qc-thresholds", type=_existing_file, metavar="FILE",
        help="YAML or JSON file of QC thresholds merged over the defaults "
        "(thalamus_bidsapp/data/qc_thresholds.yaml; the README says where each comes from); an unknown key "
        "is a usage error (exit 64) naming it",
    )
    qc.add_argument(
        "--qc-exclude", choices=["fail", "warn"], default=None,
        help="group level: leave the masks whose qc_status is this or worse ('warn' also leaves out 'fail') "
        "out of the group statistics, saying how many; default: every session is used and the flagged ones "
        "are listed",
    )


def _add_template_options(parser: argparse.ArgumentParser) -> None:
    """--template and --template-registration (template space through TemplateFlow, offline)."""
    from thalamus_bidsapp.tools.templateflow import DEFAULT_TEMPLATE, NO_TEMPLATE, supported_templates

    tpl = parser.add_argument_group("template space (TemplateFlow, never downloaded at run time)")
    tpl.add_argument(
        "--template", default=DEFAULT_TEMPLATE, choices=[*supported_templates(), NO_TEMPLATE], metavar="TEMPLATE",
        help=f"TemplateFlow template for the template-space masks, the transforms and the thalamus prior "
        f"({', '.join(supported_templates())}; default {DEFAULT_TEMPLATE}, like fMRIPrep); its files are read "
        f"from TEMPLATEFLOW_HOME (see the README); '{NO_TEMPLATE}' skips template space and the prior",
    )
    tpl.add_argument(
        "--fetch-templates", action="store_true",
        help="download the TemplateFlow files of --template into TEMPLATEFLOW_HOME (needs network access, "
        "once per machine; the image has them) and exit (no positional arguments needed); runs never download",
    )
    tpl.add_argument(
        "--template-registration", choices=["standard", "fast"],
        default=None,
        help="schedule of the affine + SyN registration to the template: 'standard' (antspyx's, about 30 s) or "
        "'fast' (fewer iterations, about 10 s; for tests and previews); default 'standard', or "
        "$THALAMUS_TEMPLATE_REGISTRATION",
    )


def _add_group_options(parser: argparse.ArgumentParser) -> None:
    """Group level: the clinical configuration, harmonisation, running participant jobs."""
    group = parser.add_argument_group("group level")
    group.add_argument(
        "--clinical-config", type=_existing_file, metavar="FILE",
        help="YAML or JSON mapping the dataset's clinical column names and units to the analysis roles "
        "(defaults: thalamus_bidsapp/data/clinical_defaults.yaml); with it, a missing column is an error, "
        "without it the clinical analyses are skipped when their columns are absent",
    )

    _add_harmonize_options(group)
    group.add_argument(
        "--skip-running-sessions", action="store_true",
        help="build the group tables while participant jobs are still running (or were killed without "
        "recording a result), leaving their sessions out; without it the group level refuses (exit 75)",
    )


def build_parser(*, require_positionals: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; ``require_positionals=False`` for ``--check-tools`` and ``--fetch-templates``."""
    optional = {} if require_positionals else {"nargs": "?"}
    parser = _Parser(
        prog="thalamus-bidsapp",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=_existing_dir, help="the input BIDS dataset (never written to)",
                        **optional)
    parser.add_argument("output_dir", type=Path, help="the output BIDS derivatives dataset", **optional)
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage", **optional)
    parser.add_argument("--version", action="version", version=f"thalamus-bidsapp {__version__}")
    parser.add_argument(
        "--check-tools", nargs="?", const="all", choices=["all", "installed"], metavar="installed",
        help="check what can run here and exit (no positional arguments needed): for every method (or those "
        "named with --methods) and step, the executables (path, version call), their libraries, the model files "
        "and checksums, the FreeSurfer licence and the writable caches; exit 0 when all can run, 66 otherwise. "
        "'--check-tools installed' does not require the licence (a run-time input), for checking an image",
    )

    _add_data_selection(parser)

    meth = parser.add_argument_group("methods")
    names = method_names()
    meth.add_argument(
        "--methods", nargs="+", choices=names, metavar="METHOD",
        help=f"methods to run ({', '.join(names)}); default: every method whose tool is found; "
        "a named method that cannot run is an error",
    )
    for method in all_methods():
        for option in method.options:
            _add_method_option(meth, option)

    reg = parser.add_argument_group("registration of FLAIR and R1 to T1w")
    reg.add_argument("--flirt-cutoff", type=_finite_float, default=DEFAULT_FLIRT_CUTOFF, metavar="MI",
                     help="mutual-information cut-off (nats, 32 bins, inside the brain) for FLIRT strategies "
                     "(default 0.25)")
    reg.add_argument("--ants-cutoff", type=_finite_float, default=DEFAULT_ANTS_CUTOFF, metavar="MI",
                     help="mutual-information cut-off for ANTs rigid (default 0.30)")

    _add_template_options(parser)

    _add_group_options(parser)
    _add_qc_options(parser)

    perf = parser.add_argument_group("performance and workflow")
    perf.add_argument(
        "-w", "--work-dir", type=Path, metavar="DIR",
        help="working directory, never inside the input dataset; a re-run with the same one redoes nothing "
        "that finished; jobs of a SLURM array may share it (default: OUTPUT_DIR/sourcedata/work)",
    )
    perf.add_argument("--nprocs", "--n-cpus", "--nthreads", type=_positive_int, default=None, metavar="N",
                      help="CPUs the run keeps busy at once (default: every CPU this process may use)")
    perf.add_argument("--omp-nthreads", type=_positive_int, default=None, metavar="N",
                      help="threads of each multithreaded step (the networks, ANTs, recon-all); default: all "
                      "of --nprocs when one session runs, else min(nprocs - 1, 8). Steps running side by side "
                      "never book more than --nprocs CPUs and --mem-gb memory together")
    perf.add_argument("--mem-gb", "--mem", type=_positive_float, default=None, metavar="GB",
                      help="memory the steps running side by side may use together (default: 90%% of the "
                      "machine's or the container's memory)")
    perf.add_argument("--stop-on-first-crash", action="store_true",
                      help="stop at the first failing step instead of finishing the other sessions")
    perf.add_argument("--reports-only", action="store_true",
                      help="only regenerate the HTML reports from the derivatives in OUTPUT_DIR")
    perf.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return parser
