"""Checksums of files on disk, and a memo so large model files are hashed once, not on every run.

:func:`remembered_digest` is the one place that decides whether a file's
checksum must be computed again: it keeps each digest with the file's
resolved path, size and modification time in a small JSON memo (by default
``<user cache>/thalamus_bidsapp/checksums.json``) and recomputes when any
of them changed. Callers that verify weights (MeshNet, DBSegment folds,
MindGlide checkpoints) use it instead of :func:`file_digest`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

__all__ = ["CHUNK_BYTES", "MEMO_ENV", "default_memo_file", "file_digest", "remembered_digest"]

LOGGER = logging.getLogger(__name__)

#: Bytes read at a time, so large files (model weights, images) are never held whole in memory.
CHUNK_BYTES = 1 << 20
#: Environment variable naming the memo file; empty or ``off`` disables the memo.
MEMO_ENV = "THALAMUS_CHECKSUM_MEMO"
#: A file modified less than this long ago may change again within the same mtime tick
#: (coarse file-system clocks), so its digest is not remembered (git's "racily clean" rule).
RACY_SECONDS = 2.0


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


def default_memo_file() -> Path | None:
    """``$THALAMUS_CHECKSUM_MEMO``, else ``<user cache>/thalamus_bidsapp/checksums.json``; None when disabled."""
    value = os.environ.get(MEMO_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "no") else Path(value).expanduser()
    try:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("thalamus_bidsapp"))
    except ImportError:  # platformdirs is optional; fall back to the XDG convention
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thalamus_bidsapp"
    return root / "checksums.json"


def remembered_digest(
    path: str | os.PathLike,
    algorithm: str = "sha256",
    *,
    memo_file: str | os.PathLike | None = None,
    use_memo: bool = True,
) -> str:
    """The digest of a file, computed only when the file changed since it was last computed.

    The memo entry of a file is keyed by its resolved path and the algorithm,
    and is trusted only while the file's size and modification time (ns)
    are those recorded; otherwise the file is hashed again and the entry
    replaced. A memo that cannot be read or written is ignored (the digest is
    then simply computed), so a read-only home never stops a run.

    Parameters
    ----------
    path
        The file.
    algorithm
        As for :func:`file_digest`.
    memo_file
        The JSON memo; default :func:`default_memo_file`.
    use_memo
        False: always compute (and do not record).

    Returns
    -------
    str
        The lower-case hexadecimal digest.
    """
    path = Path(path).resolve()
    memo_path = None
    if use_memo:
        memo_path = Path(memo_file) if memo_file is not None else default_memo_file()
    if memo_path is None:
        return file_digest(path, algorithm)
    key = f"{algorithm}:{path}"
    before = path.stat()
    entry = _read_memo(memo_path).get(key)
    if (isinstance(entry, dict) and entry.get("size") == before.st_size
            and entry.get("mtime_ns") == before.st_mtime_ns and isinstance(entry.get("digest"), str)):
        return entry["digest"]
    started = time.perf_counter()
    digest = file_digest(path, algorithm)
    after = path.stat()
    LOGGER.debug("%s of %s computed in %.2f s", algorithm, path, time.perf_counter() - started)
    unchanged = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if unchanged and time.time() - after.st_mtime > RACY_SECONDS:
        _remember(memo_path, key, {"size": after.st_size, "mtime_ns": after.st_mtime_ns, "digest": digest})
    return digest


def _read_memo(memo_path: Path) -> dict:
    try:
        memo = json.loads(memo_path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _remember(memo_path: Path, key: str, entry: dict) -> None:
    """Add ``entry`` to the memo: re-read, update, write to a temporary file and rename (atomic)."""
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        memo = _read_memo(memo_path)
        memo[key] = entry
        fd, tmp_name = tempfile.mkstemp(prefix=f".{memo_path.name}.", suffix=".tmp", dir=memo_path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(memo, handle, indent=1, sort_keys=True)
            os.replace(tmp_name, memo_path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except OSError as err:
        LOGGER.debug("checksum memo %s not updated: %s", memo_path, err)
