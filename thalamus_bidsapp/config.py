"""The run configuration: one explicit, immutable object passed down, never a global."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Every environment variable the app honours (besides the model folders and licence that the methods
#: declare beside their options), read once, when the configuration is built.
ENVIRONMENT_VARIABLES = (
    "TEMPLATEFLOW_HOME",          # where the TemplateFlow files are read (resolved into RunConfig.templateflow_home)
    "HF_HUB_OFFLINE",             # MindGlide: never download its checkpoint
    "THALAMUS_CONTAINER",         # the image a run happens in, for GeneratedBy
    "THALAMUS_CHECKSUM_MEMO",     # where the sha256 of model files are remembered ("off": never)
    "THALAMUS_TEMPLATE_REGISTRATION",  # default of --template-registration
    "FREESURFER_HOME",            # recon-all and its licence
    "FSLDIR",                     # FIRST and FLIRT
)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Environment:
    """The environment variables of :data:`ENVIRONMENT_VARIABLES` that were set when the run started.

    Read once (:meth:`from_environ`) when the configuration is built, so that
    ``logs/<run>/config.json`` shows them; the code reads these fields,
    never ``os.environ``.
    """

    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Environment:
        """The honoured variables of ``environ`` that are set (empty values count as unset)."""
        return cls({name: environ[name] for name in ENVIRONMENT_VARIABLES if environ.get(name, "").strip()})

    def get(self, name: str) -> str | None:
        return self.variables.get(name)

    @property
    def hf_hub_offline(self) -> bool:
        """Whether ``HF_HUB_OFFLINE`` forbids downloads."""
        return str(self.variables.get("HF_HUB_OFFLINE", "")).strip().lower() in _TRUE

    @property
    def container(self) -> str | None:
        """``THALAMUS_CONTAINER`` (``docker:<image>:<tag>``), set by the images."""
        return self.variables.get("THALAMUS_CONTAINER")

    @property
    def freesurfer_home(self) -> Path | None:
        value = self.variables.get("FREESURFER_HOME")
        return Path(value) if value else None


#: Mutual-information cut-offs (nats) of the registration QC rule: FLIRT's strategies, ANTs rigid.
DEFAULT_FLIRT_CUTOFF = 0.25
DEFAULT_ANTS_CUTOFF = 0.30


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
    thread rule of :mod:`thalamus_bidsapp.participant.resources` once it knows how many sessions run.
    A method option not given on the command line takes the value of its environment variable
    (``CliOption.env``), resolved when the configuration is built; ``option_sources`` says which.
    ``qc_thresholds`` is the user's QC thresholds file (None: the packaged
    defaults); ``qc_exclude`` (``fail``, ``warn`` or None) leaves the masks with
    that QC status or worse out of the group statistics. ``harmonize``,
    ``harmonize_batch``, ``harmonize_protect`` and ``harmonize_ref_batch`` set the group level's
    ComBat harmonisation (``none``: the volumes are used as measured).
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
    flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF
    ants_cutoff: float = DEFAULT_ANTS_CUTOFF
    lesion_filling: str = "auto"
    lesion_source: str = "derivatives"
    #: ``--lesion-labels``: the lesion labels of lesion dsegs (lookup names or index values); empty: the default rule.
    lesion_labels: tuple[str, ...] = ()
    #: "auto" (default): subjects with two or more sessions with a T1w also get the longitudinal mode after their
    #: cross-sectional sessions; "off": cross-sectional only.
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
    #: Group level: ComBat harmonisation ("none", "combat", "combat-gam"), its batch column and protected covariates.
    harmonize: str = "none"
    harmonize_batch: str = "scanner"
    harmonize_protect: tuple[str, ...] = ("age", "sex")
    #: The batch the others are harmonised to (None: the pooled mean and variance of all batches).
    harmonize_ref_batch: str | None = None
    run_id: str = ""
    #: TemplateFlow's home folder the template files are read from (None: no template space).
    templateflow_home: Path | None = None
    #: The honoured environment variables, as they were when the configuration was built.
    environment: Environment = field(default_factory=Environment)
    #: Where each method option given by an environment variable came from (``meshnet_model`` ->
    #: ``THALAMUS_MESHNET_MODEL``); options given on the command line are not listed.
    option_sources: dict[str, str] = field(default_factory=dict)

    def option(self, name: str, default: Any = None) -> Any:
        """A method's option (``method_options[name]``), or ``default`` when not given."""
        value = self.method_options.get(name)
        return default if value is None else value

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings; a non-finite number as null, so the file stays valid JSON)."""
        def convert(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            return value

        return {k: convert(v) for k, v in asdict(self).items()}
