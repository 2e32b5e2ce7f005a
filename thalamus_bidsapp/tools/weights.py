"""Model weights pinned by sha256: find, download on first use, verify. Shared by every method with weights.

A :class:`PinnedFiles` names a set of files and their sha256 (and, for
files that may be downloaded, the URL folder they come from). The folder
holding them is the one the user gave (an option, else an environment
variable, read when the configuration is built), else a user cache folder
filled on first use; the files are
checked byte for byte every time, and a download is kept only when its
checksum matches. :func:`checksums` records the sha256 of weights a tool
finds by itself (DBSegment's folds, the MindGlide checkpoint) for the
sidecars.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from thalamus_bidsapp.bidsio.checksums import CHUNK_BYTES, file_digest, remembered_model_digest
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError

logger = logging.getLogger(__name__)

_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class PinnedFiles:
    """Weight files and their sha256.

    ``label`` names them in messages (``"MeshNet model model30chan18cls"``);
    ``url_base`` is the URL folder they are downloaded from ("" when they are
    never downloaded); ``how_to_provide`` tells the user how to give them by
    hand; ``env_var`` is the environment variable that may name their folder.
    """

    label: str
    sha256: Mapping[str, str]
    url_base: str = ""
    how_to_provide: str = ""
    env_var: str | None = None


def user_cache_dir(*parts: str) -> Path:
    """``<user cache>/thalamus_bidsapp/<parts>`` (platformdirs: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("thalamus_bidsapp")).joinpath(*parts)


def checksums(paths: Mapping[str, Path]) -> dict[str, str]:
    """sha256 of each existing file, by name (missing files are left out)."""
    return {name: remembered_model_digest(Path(path)) for name, path in paths.items() if Path(path).is_file()}


def verify_files(folder: Path, pinned: PinnedFiles) -> dict[str, str]:
    """Check that ``folder`` holds the pinned files, byte for byte; ``{file name: sha256}``.

    Raises
    ------
    ThalamusError
        (exit code 66) naming the missing or corrupted file and the sha256 expected.
    """
    found: dict[str, str] = {}
    for fname, expected in pinned.sha256.items():
        path = Path(folder) / fname
        if not path.is_file():
            raise ThalamusError(f"{pinned.label} file missing: {path} (expected sha256 {expected}); "
                                f"{pinned.how_to_provide}", EXIT_NOINPUT)
        actual = remembered_model_digest(path)
        if actual != expected:
            raise ThalamusError(f"{pinned.label} file corrupted: {path} has sha256 {actual}, expected sha256 "
                                f"{expected}; {pinned.how_to_provide}", EXIT_NOINPUT)
        found[fname] = actual
    return found


def _urlopen(url: str, timeout: float):  # noqa: ANN202 - a seam that tests replace
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed https URL from package data


def download(url: str, dest: Path, expected_sha256: str, pinned: PinnedFiles) -> None:
    """Download ``url`` to ``dest`` atomically, keeping it only if its sha256 matches."""
    from thalamus_bidsapp.bidsio.atomic import atomic_path

    logger.info("downloading %s -> %s", url, dest)
    try:
        with _urlopen(url, _DOWNLOAD_TIMEOUT_S) as response, atomic_path(dest) as tmp:
            with open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle, CHUNK_BYTES)
            actual = file_digest(tmp)
            if actual != expected_sha256:
                # Raising inside atomic_path discards the temporary file.
                raise ThalamusError(f"downloaded {pinned.label} file {url} has sha256 {actual}, expected sha256 "
                                    f"{expected_sha256}; not saved to {dest}", EXIT_NOINPUT)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ThalamusError(f"could not download {pinned.label} file {url} to {dest} ({exc}); expected sha256 "
                            f"{expected_sha256}. Without network access: {pinned.how_to_provide}",
                            EXIT_NOINPUT) from exc


def fill_cache(cache_dir: Path, pinned: PinnedFiles) -> None:
    """Download the files of ``cache_dir`` that are missing or do not match their checksum."""
    for fname, expected in pinned.sha256.items():
        path = cache_dir / fname
        if path.is_file() and remembered_model_digest(path) == expected:
            continue
        if path.exists():
            logger.warning("cached %s file %s does not match sha256 %s; downloading it again",
                           pinned.label, path, expected)
        download(pinned.url_base + fname, path, expected, pinned)


def resolve_folder(given: Path | None, pinned: PinnedFiles, cache_dir: Path) -> tuple[Path, dict[str, str]]:
    """The verified folder of the pinned files and their sha256.

    Order: ``given`` (the option, or the folder in ``pinned.env_var`` read
    when the configuration was built), else ``cache_dir``, filled on first
    use from ``pinned.url_base``.
    """
    if given is not None:
        folder = Path(given).expanduser().resolve()
        if not folder.is_dir():
            expected = " and ".join(f"{name} sha256 {sha}" for name, sha in pinned.sha256.items())
            raise ThalamusError(f"{pinned.label} folder not found: {folder} (expected {expected}); "
                                f"{pinned.how_to_provide}", EXIT_NOINPUT)
    else:
        folder = cache_dir
        fill_cache(folder, pinned)
    return folder, verify_files(folder, pinned)
