"""Content keys of report figures, so that a rerun redraws only the figures whose inputs changed.

Drawing a figure (loading the T1w, plotting, writing the SVG) takes seconds;
comparing the finished SVG with the existing file, as ``write_if_changed``
does, comes after all that work. A figure instead carries, in an XML comment
right after its XML declaration, the SHA-256 of everything it is drawn from:
the bytes of its input files, the parameters that change its look (title,
colour, cuts) and the drawing code with the versions of the plotting
libraries. Before drawing, the report compares that key with the one it would
write and skips the figure when they agree. The key lives inside the figure,
so a copied output folder keeps it and nothing is added beside the figures.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

LOGGER = logging.getLogger(__name__)

_KEY_COMMENT = "<!-- thalamus_bidsapp figure key: {key} -->"
_KEY_RE = re.compile(rb"<!-- thalamus_bidsapp figure key: ([0-9a-f]{64}) -->")
#: The key sits near the top of the file: the XML declaration and the doctype come before it.
_HEAD_BYTES = 1024
_CHUNK = 1 << 20


@cache
def _code_key(modules: tuple[str, ...]) -> str:
    """SHA-256 of the source of ``modules`` and the versions of the plotting libraries."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for name in modules:
        source = getattr(import_module(name), "__file__", None)
        digest.update(name.encode())
        if source is not None:
            digest.update(Path(source).read_bytes())
    for package in ("matplotlib", "niworkflows", "nilearn", "numpy"):
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or ``"absent"`` when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return "absent"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def figure_key(files: Iterable[Path], parameters: Iterable[object] = (), *, code: Iterable[str] = ()) -> str:
    """The content key of a figure drawn from ``files`` with ``parameters`` by the modules named in ``code``.

    Input files are keyed by name and bytes (a missing file counts as such),
    so the key survives copying the output folder elsewhere.
    """
    digest = hashlib.sha256(_code_key(tuple(code)).encode())
    for path in files:
        digest.update(f"file {Path(path).name} {file_digest(path)}\n".encode())
    for value in parameters:
        digest.update(f"parameter {value!r}\n".encode())
    return digest.hexdigest()


def recorded_key(figure: Path) -> str | None:
    """The key written into ``figure`` when it was drawn, or None (no figure, or one without a key)."""
    try:
        with open(figure, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return None
    match = _KEY_RE.search(head)
    return match.group(1).decode() if match else None


def is_current(figure: Path, key: str) -> bool:
    """Whether ``figure`` exists and was drawn from the inputs that ``key`` stands for."""
    return recorded_key(figure) == key


def with_key(svg: str | bytes, key: str) -> bytes:
    """``svg`` with the key comment after its XML declaration (at the top when it has none)."""
    data = svg.encode("utf-8") if isinstance(svg, str) else svg
    comment = _KEY_COMMENT.format(key=key).encode()
    if data.startswith(b"<?xml"):
        end = data.index(b"?>") + 2
        return data[:end] + b"\n" + comment + data[end:]
    return comment + b"\n" + data
