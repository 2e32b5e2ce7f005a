"""The run configuration: one explicit, immutable object passed down, never a global."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs to know, built once from the command line.

    Paths are absolute. ``methods`` is None when the user did not choose:
    then every method whose tool is found runs. ``method_options`` holds the
    options each method declares (see ``methods/``), by their ``dest`` name
    (``--fs-license-file`` -> ``fs_license_file``); an option not given is None.
    ``lesion_filling`` is ``auto`` (fill the T1w when a lesion mask exists), ``off`` or ``both`` (the
    T1w methods also run on the unfilled T1w, their masks named ``desc-<mask>Unfilled``); ``lesion_source``
    is ``derivatives`` (masks found with ``--derivatives``) or ``mindglide`` (MindGlide's lesion class when
    no mask is found).
    ``nprocs``, ``omp_nthreads`` and ``mem_gb`` are None when not given: the participant level applies the
    thread rule of :mod:`thalamus_bidsapp.resources` once it knows how many sessions run.
    ``qc_thresholds`` is the user's QC thresholds file (None: the packaged
    defaults); ``qc_exclude`` (``fail``, ``warn`` or None) leaves the masks with
    that QC status or worse out of the group statistics.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    bids_filter_file: Path | None = None
    derivatives: dict[str, Path] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    flirt_cutoff: float = 0.25
    ants_cutoff: float = 0.30
    lesion_filling: str = "auto"
    lesion_source: str = "derivatives"
    #: "auto": subjects with two or more sessions with a T1w also get the longitudinal mode; "off": never.
    longitudinal: str = "auto"
    #: TemplateFlow template of the template-space outputs and the thalamus prior; None: no template space.
    template: str | None = "MNI152NLin2009cAsym"
    #: Schedule of the registration to the template: "standard" or "fast" (tests, previews).
    template_registration: str = "standard"
    clinical_config: Path | None = None
    nprocs: int | None = None
    omp_nthreads: int | None = None
    mem_gb: float | None = None
    skip_bids_validation: bool = False
    stop_on_first_crash: bool = False
    verbosity: int = 0
    reports_only: bool = False
    skip_running_sessions: bool = False
    qc_thresholds: Path | None = None
    qc_exclude: str | None = None
    run_id: str = ""

    def option(self, name: str, default: Any = None) -> Any:
        """A method's option (``method_options[name]``), or ``default`` when not given."""
        value = self.method_options.get(name)
        return default if value is None else value

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings) for ``logs/``."""
        def convert(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            return value

        return {k: convert(v) for k, v in asdict(self).items()}
