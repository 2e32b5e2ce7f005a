"""What a thalamus segmentation method declares, in one place.

A method is one module of this package holding one :class:`SegmentationMethod`
subclass: its name and citation, its command-line options (with the
environment variables they fall back to), how to check that it can run and
why not, the nipype node(s) that make its mask(s) from a session's inputs,
its left and right labels, whether its mask can bound MindGlide's deep grey
matter label, and its sentence of the report's methods paragraph (the way
sMRIPrep keeps ``__desc__`` beside each step). The planner, the workflow, the
volumes table, the reports, the citations and ``--help`` loop over the
registry (:mod:`thalamus_bidsapp.methods.registry`) and name no method.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # only for type hints: planning must not import pybids or nipype
    from nipype.pipeline import engine as pe

    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.config import RunConfig


@dataclass(frozen=True)
class CliOption:
    """One command-line option of a method, collected by the parser.

    ``kind`` is ``dir`` or ``file`` (an existing path), ``choice`` (one of
    ``choices``, which may be a callable evaluated when the parser is built)
    or ``str``. ``default`` is the parser's default (None: not given) and
    ``metavar`` the placeholder of ``--help``. ``env`` names the environment
    variable that the method's tool adapter (``interfaces/``) falls back to
    when the option is not given; ``--help`` shows it.
    """

    flag: str
    help: str
    kind: str = "str"
    env: str | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    default: Any = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The ``RunConfig.method_options`` key (``--dbsegment-model`` -> ``dbsegment_model``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def choice_list(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)


@dataclass(frozen=True)
class SideLabels:
    """The labels of a method's output that make the left and the right thalamus."""

    left: tuple[Any, ...] = ()
    right: tuple[Any, ...] = ()
    source: str = ""  # what the labels index (e.g. "aseg", "firstseg", "model class names")

    @property
    def bilateral(self) -> tuple[Any, ...]:
        return self.left + self.right

    def to_json(self) -> dict[str, Any]:
        return {"Left": list(self.left), "Right": list(self.right), "Source": self.source}


@dataclass(frozen=True)
class ToolStatus:
    """Whether a method's tools are installed (session-independent): ``reason`` is None when it can run."""

    reason: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


class PublishedMask(Protocol):
    """What the methods paragraph knows of a published mask: its ``desc`` and its sidecar."""

    desc: str
    sidecar: dict[str, Any]


@dataclass
class NodeContext:
    """What a method's nodes are built from, inside the session's segmentation workflow.

    ``inputnode`` has the fields ``t1w`` (reoriented T1w, the reference grid),
    ``brain_mask``, ``flair`` and ``r1`` (registered onto the T1w grid;
    undefined when absent or excluded). ``envelope`` is the (node, field)
    giving the envelope method's mask record, for methods that need one.
    ``lesion_filled``: ``inputnode.t1w`` is the lesion-filled T1w (for a
    method that :attr:`~SegmentationMethod.consumes_t1w`).
    """

    workflow: pe.Workflow
    inputnode: pe.Node
    session: SessionInputs
    settings: Mapping[str, Any]
    omp_nthreads: int
    envelope: tuple[pe.Node, str] | None = None
    lesion_filled: bool = False


@dataclass
class MethodNodes:
    """The nodes a method added: where its mask records come out, and optional extras.

    ``records``: (node, field) pairs whose outputs are mask-record files (one
    or a list). ``envelope``: the (node, field) of the record that can bound
    MindGlide. ``icv``: the (node, field) of a provenance JSON holding an
    ``ICV`` record (FreeSurfer's eTIV).
    """

    records: list[tuple[pe.Node, str]]
    envelope: tuple[pe.Node, str] | None = None
    icv: tuple[pe.Node, str] | None = None


#: ``segment(image, threads) -> (labels, regions, provenance)``: see :meth:`SegmentationMethod.template_segmenter`.
TemplateSegment = Callable[[Any, int], tuple[Any, dict[str, tuple[int, ...]], dict]]


class SegmentationMethod(abc.ABC):
    """Base class of every method module's declaration; subclasses set the class attributes.

    A subclass must define :meth:`init_nodes` (it cannot be instantiated otherwise).
    """

    #: The method's name: the ``--methods`` choice and the ``desc`` entity of its mask.
    name: ClassVar[str]
    #: Place in the report, the tables and ``--methods`` (lower first).
    order: ClassVar[int] = 100
    #: Full reference of the method, cited in ``logs/CITATION.md`` and the report.
    citation: ClassVar[str]
    #: Command-line options (the parser adds them to the "methods" group).
    options: ClassVar[tuple[CliOption, ...]] = ()
    #: Labels making the left and right thalamus in the method's own output.
    labels: ClassVar[SideLabels] = SideLabels()
    #: Preference as the envelope of MindGlide's deep grey matter label (lower first); None: cannot be one.
    envelope_rank: ClassVar[int | None] = None
    #: Whether this method needs another method's mask as its envelope.
    needs_envelope: ClassVar[bool] = False
    #: Inputs whose absence skips part of this method, and what (logged per session).
    optional_inputs: ClassVar[Mapping[str, str]] = {}
    #: Whether the method segments the T1w: then it receives the lesion-filled T1w when a session's lesions
    #: are filled (``inputnode.t1w``); a method that does not gets the unfilled T1w as its reference grid.
    consumes_t1w: ClassVar[bool] = True
    #: Whether the method can offer a lesion mask (``--lesion-source <name>``; see :meth:`init_lesion_nodes`).
    provides_lesions: ClassVar[bool] = False
    #: Colour of each mask the method publishes in the reports' figures, by the mask's ``desc`` (hex). A mask
    #: without one gets a spare colour; the palette checks that two methods do not claim the same mask.
    colors: ClassVar[Mapping[str, str]] = {}

    def owns(self, desc: str) -> bool:
        """Whether a published mask with this ``desc`` entity comes from this method."""
        return desc == self.name

    def check_tools(self, config: RunConfig) -> ToolStatus:
        """Look for the method's tools, models and licences once per run."""
        return ToolStatus()

    def plan(self, session: SessionInputs, config: RunConfig, tools: ToolStatus, *,
             required: bool) -> ToolStatus:
        """Whether the method runs for ``session`` (and with which settings); by default as the tools say."""
        return tools

    def segments_t1w(self, settings: Mapping[str, Any]) -> bool:
        """Whether, with these planned settings, the method segments this session's T1w here (so filling matters)."""
        return self.consumes_t1w

    def unfilled_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """Settings of the extra run on the unfilled T1w (``--lesion-filling both``); by default the same."""
        return settings

    def template_segmenter(self, settings: Mapping[str, Any]) -> TemplateSegment | None:
        """How the method segments one image in memory (the longitudinal within-subject template), or None.

        The callable takes the image and a thread count and returns the labels
        (uint8 array on the image's grid), the regions (``left``, ``right``,
        ``bilateral`` -> label values) and a provenance record.
        """
        return None

    def envelope_choice(self, config: RunConfig) -> str | None:
        """The envelope the user chose for this method (None: the first that runs)."""
        return None

    def summary(self, settings: Mapping[str, Any]) -> Any:
        """What ``logs/<run>/methods.json`` records of the method's settings for a session (JSON-ready)."""
        return None

    def check_installation(self, options: Any) -> Any:
        """``--check-tools``: a :class:`thalamus_bidsapp.tools.check.CheckReport` of everything the method needs here.

        ``options`` is a :class:`thalamus_bidsapp.tools.check.CheckOptions`. By
        default the method's :meth:`check_tools` verdict, without details.
        """
        from thalamus_bidsapp.tools.check import CheckReport, Finding

        reason = self.check_tools(_OptionsAsConfig(options)).reason
        return CheckReport(self.name, "method", (Finding(self.name, reason is None, reason or "can run"),))

    @abc.abstractmethod
    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        """Add the nodes that make the method's mask record(s) to ``ctx.workflow``."""

    def init_lesion_nodes(self, ctx: NodeContext) -> pe.Node:
        """Add a node making a lesion mask on the T1w grid (outputs ``out_file``, ``provenance_file``).

        ``ctx.inputnode`` has ``t1w`` (unfilled, reoriented) and ``flair``
        (registered; undefined when absent). Only for ``provides_lesions``.
        """
        raise TypeError(f"method {self.name!r} does not provide lesion masks (provides_lesions is False)")

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        """The method's clause of the methods paragraph, for the masks it published.

        ``cite(key)`` returns the reference mark of a citation key (a method
        name or a key of ``data/citations.json``).
        """
        return f"{tool_label(masks, self.name)} {cite(self.name)}".strip()


@dataclass(frozen=True)
class _OptionsAsConfig:
    """``--check-tools`` options seen as the part of a RunConfig that a tool check reads (``option``)."""

    options: Any

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.option(name)
        return default if value is None else value

    @property
    def environment(self) -> Any:
        """The environment the ``--check-tools`` command read (``CheckOptions.environment``)."""
        from thalamus_bidsapp.config import Environment

        return getattr(self.options, "environment", Environment())


def tool_label(masks: Sequence[PublishedMask], fallback: str) -> str:
    """The tools and versions recorded in the masks' sidecars, e.g. ``FSL FIRST 6.0.7``."""
    tools = sorted({_tool_text(m.sidecar) for m in masks if _tool_text(m.sidecar)
                    and not str(m.sidecar.get("Tool", "")).startswith("thalamus_bidsapp")})
    return ", ".join(tools) or fallback


def _tool_text(sidecar: Mapping[str, Any]) -> str:
    tool, version = sidecar.get("Tool"), sidecar.get("Version")
    return " ".join(str(v) for v in (tool, version) if v)


def sorted_unique(values: Sequence[Any]) -> list[str]:
    return sorted({str(v) for v in values if v})
