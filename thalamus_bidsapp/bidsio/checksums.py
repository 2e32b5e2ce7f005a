"""Checksums of files on disk, and a memo so large files are hashed once, not on every run.

:func:`remembered_digest` keeps each file's sha256 under a key made of the
file's resolved path, device, inode, size, modification and change times,
so a file is hashed again exactly when it changed. Model weights (MeshNet,
DBSegment folds, MindGlide checkpoints) use :func:`remembered_model_digest`,
whose memo lives in the user cache (``$THALAMUS_CHECKSUM_MEMO`` overrides
it; ``off`` disables it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHUNK_BYTES", "MEMO_ENV", "default_memo_dir", "file_digest", "files_digest", "remembered_digest",
           "remembered_model_digest"]

#: Environment variable naming the memo folder of model checksums; ``off`` (or empty) disables it.
MEMO_ENV = "THALAMUS_CHECKSUM_MEMO"

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


def default_memo_dir() -> Path | None:
    """``$THALAMUS_CHECKSUM_MEMO``, else ``<user cache>/thalamus_bidsapp/checksums``; None when disabled."""
    value = os.environ.get(MEMO_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "no") else Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("thalamus_bidsapp")) / "checksums"


def remembered_model_digest(path: str | os.PathLike) -> str:
    """sha256 of a model file, computed once per version of the file (memo in :func:`default_memo_dir`)."""
    return remembered_digest(path, default_memo_dir())
