"""The list of segmentation methods everything else loops over.

Like nibabel's ``imageclasses.all_image_classes`` that ``loadsave`` walks,
:data:`_REGISTRY` is the ordered list of method declarations (report order,
each method's ``order``). It is collected from the modules of this package
that define ``METHOD``, so a new method is one new module; a plug-in or a
test adds one with :func:`register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager

from thalamus_bidsapp.methods.base import SegmentationMethod
from thalamus_bidsapp.methods.capabilities import EnvelopeSource


def _collect() -> list[SegmentationMethod]:
    """The ``METHOD`` of every module of this package, in order."""
    import thalamus_bidsapp.methods as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if isinstance(getattr(module, "METHOD", None), SegmentationMethod):
            found.append(module.METHOD)
    return sorted(found, key=lambda m: (m.order, m.name))


_REGISTRY: list[SegmentationMethod] = _collect()


def all_methods() -> tuple[SegmentationMethod, ...]:
    """Every registered method, in report order."""
    return tuple(sorted(_REGISTRY, key=lambda m: (m.order, m.name)))


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in _REGISTRY)


def get_method(name: str) -> SegmentationMethod:
    for method in _REGISTRY:
        if method.name == name:
            return method
    raise KeyError(f"unknown method {name!r}; registered: {', '.join(method_names())}")


#: Appended to the ``desc`` of the masks made on the unfilled T1w when both are made (``--lesion-filling both``).
UNFILLED_SUFFIX = "Unfilled"


def method_of_mask(desc: str) -> SegmentationMethod | None:
    """The method that publishes masks with this ``desc`` entity (``desc-<mask>Unfilled`` too), if any."""
    base = desc[: -len(UNFILLED_SUFFIX)] if desc.endswith(UNFILLED_SUFFIX) and desc != UNFILLED_SUFFIX else desc
    return next((m for m in _REGISTRY if m.owns(base)), None)


def envelope_names() -> tuple[str, ...]:
    """Methods whose mask can bound MindGlide's deep grey matter label, in order of preference."""
    ranked = sorted((m for m in _REGISTRY if isinstance(m, EnvelopeSource)), key=lambda m: m.envelope_rank)
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
