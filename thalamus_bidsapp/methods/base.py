"""What every thalamus segmentation method declares: the small core.

A method is one module of this package holding one :class:`SegmentationMethod`
subclass. Its core is three things: its ``name``, its ``citation`` and
:meth:`~SegmentationMethod.init_nodes` (the nipype node(s) that make its
mask(s) from a session's inputs). Everything else has a default: its
command-line options (with the environment variables they fall back to), its
tool check (:meth:`~SegmentationMethod.check_tools`, one protocol for a run and
for ``--check-tools``), its left and right labels, the colours of its masks and
its sentence of the report's methods paragraph (the way sMRIPrep keeps
``__desc__`` beside each step). What only some methods can do (bound
MindGlide's deep grey matter label, need such a bound, offer a lesion mask,
segment the longitudinal template in memory) is an explicit mixin of
:mod:`thalamus_bidsapp.methods.capabilities`. The planner, the workflow, the
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
    from thalamus_bidsapp.config import Environment, RunConfig
    from thalamus_bidsapp.tools.check import CheckReport


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


class ToolSettings(Protocol):
    """What a method's tool check reads: a run's :class:`~thalamus_bidsapp.config.RunConfig`, or the options
    of ``--check-tools`` (:class:`~thalamus_bidsapp.tools.check.CheckOptions`); both resolve the environment
    once, when they are built."""

    environment: Environment

    def option(self, name: str, default: Any = None) -> Any:
        """A method option (``--meshnet-model`` -> ``meshnet_model``) as given, else from its variable, else default."""


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
    #: Inputs whose absence skips part of this method, and what (logged per session).
    optional_inputs: ClassVar[Mapping[str, str]] = {}
    #: Whether the method segments the T1w: then it receives the lesion-filled T1w when a session's lesions
    #: are filled (``inputnode.t1w``); a method that does not gets the unfilled T1w as its reference grid.
    consumes_t1w: ClassVar[bool] = True
    #: Colour of each mask the method publishes in the reports' figures, by the mask's ``desc`` (hex). A mask
    #: without one gets a spare colour; the palette checks that two methods do not claim the same mask.
    colors: ClassVar[Mapping[str, str]] = {}

    def owns(self, desc: str) -> bool:
        """Whether a published mask with this ``desc`` entity comes from this method."""
        return desc == self.name

    def check_tools(self, config: ToolSettings) -> ToolStatus:
        """Look for the method's tools, models and licences once per run (or once per ``--check-tools``)."""
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

    def summary(self, settings: Mapping[str, Any]) -> Any:
        """What ``logs/<run>/methods.json`` records of the method's settings for a session (JSON-ready)."""
        return None

    def check_installation(self, options: ToolSettings) -> CheckReport:
        """``--check-tools``: everything the method needs here, one finding per item.

        ``options`` is a :class:`thalamus_bidsapp.tools.check.CheckOptions`. By
        default the method's :meth:`check_tools` verdict, without details; a
        method overrides this to list its tools, models and licences one by one.
        """
        from thalamus_bidsapp.tools.check import CheckReport, Finding

        reason = self.check_tools(options).reason
        return CheckReport(self.name, "method", (Finding(self.name, reason is None, reason or "can run"),))

    @abc.abstractmethod
    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        """Add the nodes that make the method's mask record(s) to ``ctx.workflow``."""

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        """The method's clause of the methods paragraph, for the masks it published.

        ``cite(key)`` returns the reference mark of a citation key (a method
        name or a key of ``data/citations.json``).
        """
        return f"{tool_label(masks, self.name)} {cite(self.name)}".strip()


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
