"""What only some segmentation methods can do, declared by inheriting a mixin.

A method's core is :class:`~thalamus_bidsapp.methods.base.SegmentationMethod`.
A capability is opted into explicitly, so that the planner, the workflow and
the parser ask ``isinstance`` rather than read a flag with a default::

    class MeshNet(EnvelopeSource, TemplateSegmenter, SegmentationMethod): ...

- :class:`EnvelopeSource`: the method's mask can bound MindGlide's deep grey
  matter label (its :class:`~thalamus_bidsapp.methods.base.MethodNodes`
  gives ``envelope``).
- :class:`EnvelopeUser`: the method needs such a mask (``NodeContext.envelope``).
- :class:`LesionSource`: the method can make a lesion mask, for
  ``--lesion-source <name>``.
- :class:`TemplateSegmenter`: the method segments one image in memory (the
  longitudinal within-subject template).
- :class:`LongitudinalStream`: the method has its own longitudinal stream
  (its ``desc-<method>Long`` masks and longitudinal change rows).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from nipype.pipeline import engine as pe

    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.methods.base import NodeContext

#: ``segment(image, threads) -> (labels, regions, provenance)``: see :meth:`TemplateSegmenter.template_segmenter`.
#: An :class:`EnvelopeUser` also takes ``envelope=`` (a :class:`TemplateEnvelope`).
TemplateSegment = Callable[..., tuple[Any, dict[str, tuple[int, ...]], dict]]
#: The regions of a side label map (1 left, 2 right).
SIDE_REGIONS: dict[str, tuple[int, ...]] = {"left": (1,), "right": (2,), "bilateral": (1, 2)}


@dataclass(frozen=True)
class TemplateEnvelope:
    """Another method's thalamus on the template, for a method bounded by it (an :class:`EnvelopeUser`)."""

    method: str
    labels: Any  # uint8 array on the template grid: 1 left, 2 right (1 only when the envelope has no sides)
    regions: Mapping[str, tuple[int, ...]]

    @property
    def has_sides(self) -> bool:
        return "left" in self.regions and "right" in self.regions


class EnvelopeSource(abc.ABC):
    """A method whose thalamus mask can bound MindGlide's deep grey matter label."""

    #: Preference among the envelope methods (lower first).
    envelope_rank: ClassVar[int]


class EnvelopeUser(abc.ABC):
    """A method that needs another method's mask as its envelope (``NodeContext.envelope``)."""

    def envelope_choice(self, config: RunConfig) -> str | None:
        """The envelope the user chose for this method (None: the first that runs)."""
        return None


class LesionSource(abc.ABC):
    """A method that can offer a lesion mask (``--lesion-source <name>``)."""

    @abc.abstractmethod
    def init_lesion_nodes(self, ctx: NodeContext) -> pe.Node:
        """Add a node making a lesion mask on the T1w grid (outputs ``out_file``, ``provenance_file``).

        ``ctx.inputnode`` has ``t1w`` (unfilled, reoriented) and ``flair``
        (registered; undefined when absent).
        """


class TemplateSegmenter(abc.ABC):
    """A method that segments one image in memory: the longitudinal within-subject template."""

    @property
    def template_mask_name(self) -> str:
        """The ``desc`` stem of its template masks and the ``method`` of its longitudinal rows (its T1w masks')."""
        return self.name  # type: ignore[attr-defined]

    @abc.abstractmethod
    def template_segmenter(self, settings: Mapping[str, Any]) -> TemplateSegment | None:
        """How the method segments one image with these planned settings, or None when it cannot here.

        The callable takes the image and a thread count (and, for an
        :class:`EnvelopeUser`, ``envelope=`` a :class:`TemplateEnvelope`) and
        returns the labels (uint8 array on the image's grid), the regions
        (``left``, ``right``, ``bilateral`` -> label values) and a provenance
        record. It runs the same tool and reads the same labels as the
        method's cross-sectional node; a tool failure raises.
        """


def needs_envelope(method: object) -> bool:
    return isinstance(method, EnvelopeUser)


def provides_lesions(method: object) -> bool:
    return isinstance(method, LesionSource)


class LongitudinalStream(abc.ABC):
    """A method with its own longitudinal stream (FreeSurfer's ``recon-all -base``/``-long``), run after the
    sessions of a subject with two or more sessions, beside the within-subject template."""

    @abc.abstractmethod
    def longitudinal_stream(self, config: RunConfig, subject: str, sessions: list[tuple[str, Any]],
                            threads: int) -> Any:
        """Run or reuse the stream for ``sessions`` (label, published T1w path; in time order).

        Returns an object with ``sides`` (session label -> uint8 image on that T1w grid, 1 left and 2 right),
        ``sidecars`` (session label -> provenance dict) and ``skipped`` (why nothing was measured, or None).
        """
