"""Checksums of files on disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHUNK_BYTES", "file_digest", "files_digest", "remembered_digest"]

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


def _memo_key(path: str | os.PathLike) -> str:
    """What identifies one version of a file's bytes without reading them.

    The change time (``st_ctime_ns``) is the part that makes this safe: the
    kernel sets it to "now" on every write and on every ``touch``, and no
    user call can set it back, so a file edited in place that keeps its size
    and modification time (``touch -r``) still gets a new key.
    """
    info = os.stat(path)
    parts = (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def remembered_digest(path: str | os.PathLike, memo_dir: str | os.PathLike | None) -> str:
    """sha256 of a file, remembered in ``memo_dir`` (one small file per file version) across runs.

    Several processes may share ``memo_dir``: entries are written under a
    temporary name and renamed, and a lost race only means hashing twice.
    """
    if memo_dir is None:
        return file_digest(path)
    entry = Path(memo_dir) / _memo_key(path)
    try:
        digest = entry.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = file_digest(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, entry)
    except OSError:  # the memo is only a speed-up
        pass
    return digest


def files_digest(paths: Iterable[str | os.PathLike | None], memo_dir: str | os.PathLike | None = None) -> str:
    """One sha256 over the contents of ``paths`` (None entries skipped), in the order given.

    Passed as a node input so that nipype, which otherwise keys cached results
    on a file's path, size and modification time, recomputes a node whose
    input file changed in place.
    """
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(f"{os.fspath(path)}\0{remembered_digest(path, memo_dir)}\n".encode())
    return digest.hexdigest()
