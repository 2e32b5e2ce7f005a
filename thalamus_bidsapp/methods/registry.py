"""The list of segmentation methods everything else loops over.

Like nibabel's ``imageclasses.all_image_classes`` that ``loadsave`` walks,
:data:`_REGISTRY` is the ordered list of method declarations (report order);
a new method is one module in this package plus one line here, or, for a
plug-in or a test, a call to :func:`register`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from thalamus_bidsapp.methods.base import SegmentationMethod
from thalamus_bidsapp.methods.dbsegment import DBSegment
from thalamus_bidsapp.methods.first import First
from thalamus_bidsapp.methods.freesurfer import FreeSurfer
from thalamus_bidsapp.methods.meshnet import MeshNet
from thalamus_bidsapp.methods.mindglide import MindGlide

_REGISTRY: list[SegmentationMethod] = [FreeSurfer(), First(), DBSegment(), MeshNet(), MindGlide()]


def all_methods() -> tuple[SegmentationMethod, ...]:
    """Every registered method, in report order."""
    return tuple(_REGISTRY)


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in _REGISTRY)


def get_method(name: str) -> SegmentationMethod:
    for method in _REGISTRY:
        if method.name == name:
            return method
    raise KeyError(f"unknown method {name!r}; registered: {', '.join(method_names())}")


def method_of_mask(desc: str) -> SegmentationMethod | None:
    """The method that publishes masks with this ``desc`` entity, if any is registered."""
    return next((m for m in _REGISTRY if m.owns(desc)), None)


def envelope_names() -> tuple[str, ...]:
    """Methods whose mask can bound MindGlide's deep grey matter label, in order of preference."""
    ranked = sorted((m for m in _REGISTRY if m.envelope_rank is not None), key=lambda m: m.envelope_rank)
    return tuple(m.name for m in ranked)


@contextmanager
def register(method: SegmentationMethod) -> Iterator[SegmentationMethod]:
    """Add ``method`` to the registry for the duration of the ``with`` block (plug-ins, tests)."""
    if method.name in method_names():
        raise ValueError(f"a method named {method.name!r} is already registered")
    _REGISTRY.append(method)
    try:
        yield method
    finally:
        _REGISTRY.remove(method)
