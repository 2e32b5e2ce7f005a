"""Checksums of files on disk."""

from __future__ import annotations

import hashlib
import os

__all__ = ["CHUNK_BYTES", "file_digest"]

#: Bytes read at a time, so large files (model weights, images) are never held whole in memory.
CHUNK_BYTES = 1 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks.

    Parameters
    ----------
    path
        The file.
    algorithm
        Any name :func:`hashlib.new` accepts (``"sha256"``, ``"sha1"``, ...).

    Returns
    -------
    str
        The lower-case hexadecimal digest.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
