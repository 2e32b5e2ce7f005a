"""A session's outputs appear together, and only when the whole session succeeded.

The workflow publishes each session into a staging folder inside the output
dataset (``.thalamus_staging/<run id>/<session>/``, hidden from BIDS tools,
on the same file system so that publishing is a rename). When every step of
the session has finished, :meth:`Staging.commit` moves its files to their
final names; a file that cannot be written (read-only folder, disk full)
rolls back what the commit had already moved, so the session's earlier
outputs stay as they were. A failed or interrupted session's staging folder
is deleted: it leaves no new derivative files.

An output that is one folder (the group level's ``group/``) is built in
:meth:`Staging.folder` and put in place whole by :meth:`Staging.replace`.
A set of files written outside a run's sessions (a subject's longitudinal
outputs) is built in :func:`set_folder` and put in place by
:func:`move_together`, with the same roll back.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from thalamus_bidsapp.bidsio.atomic import atomic_path
from thalamus_bidsapp.bidsio.checksums import file_digest
from thalamus_bidsapp.errors import EXIT_CANTCREAT, ThalamusError

LOGGER = logging.getLogger(__name__)

STAGING_FOLDER = ".thalamus_staging"
_OWNER_FILE = "owner.json"
#: Staging folders of another machine are removed after this long (s): their owner is surely gone.
_STALE_AFTER_S = 7 * 24 * 3600


class Staging:
    """The staging folders of one run.

    Parameters
    ----------
    output_dir
        The output dataset.
    run_id
        This run's identifier (several runs may share the output dataset).
    """

    def __init__(self, output_dir: Path, run_id: str) -> None:
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / STAGING_FOLDER / run_id

    def open(self) -> Staging:
        """Create the run's staging folder (and remove those that dead runs left behind)."""
        remove_stale(self.output_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_owner(self.root)
        return self

    def session_dir(self, session: str) -> Path:
        """Where the workflow publishes ``session``: a tree laid out like the output dataset."""
        return self.root / session

    def folder(self, name: str) -> Path:
        """A new, empty folder ``name`` of this run's staging folder, for an output built as one folder."""
        path = self.root / name
        path.mkdir()
        return path

    def replace(self, staged: Path, final: Path) -> None:
        """Put the folder ``staged`` in place of ``final`` as a whole: readers see the earlier set or the new one.

        The earlier folder is set aside in the run's staging folder (deleted
        with it) and put back when the new one cannot be moved in. Another run
        may put its own folder in place meanwhile: this run's then replaces it.

        Raises
        ------
        ThalamusError
            73 when the folder cannot be put in place.
        """
        final = Path(final)
        for _attempt in range(3):
            earlier = None
            if final.exists():
                earlier = self.root / f".earlier-{final.name}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(final, earlier)
                except FileNotFoundError:  # another run moved it first
                    earlier = None
            try:
                os.rename(staged, final)
            except OSError:
                if earlier is not None and not final.exists():
                    os.rename(earlier, final)  # put the earlier set back rather than lose it
                    earlier = None
                continue  # another run may have put its set in place meanwhile: replace that one
            finally:
                if earlier is not None:
                    shutil.rmtree(earlier, ignore_errors=True)
            return
        raise ThalamusError(f"cannot put the {final.name} outputs in place at {final}", EXIT_CANTCREAT)

    def final_path(self, path: str | os.PathLike) -> Path:
        """The output-dataset path of a staged file (other paths are returned unchanged)."""
        path = Path(path)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return path
        return self.output_dir.joinpath(*relative.parts[1:]) if len(relative.parts) > 1 else path

    def commit(self, session: str) -> list[Path]:
        """Move the staged files of ``session`` into the output dataset; return the files that changed.

        A file whose content is already published is left alone (a rerun does
        not touch finished outputs). The session's published set is replaced
        as a whole: its files that this run did not stage (e.g. the
        ``desc-<mask>Unfilled`` masks of an earlier ``--lesion-filling both``)
        are removed, each logged, with the report figure drawn from them.

        Raises
        ------
        ThalamusError
            A file that cannot be written (exit 73), after the session's
            outputs were restored to what they were before.
        """
        staged_root = self.session_dir(session)
        if not staged_root.is_dir():
            return []
        moved, removed = move_together(staged_root, self.output_dir, published_files(self.output_dir, session))
        if removed:
            LOGGER.warning("%s: removed %d earlier output(s) this run did not produce (a session's outputs are "
                           "replaced as a whole): %s", session, len(removed),
                           ", ".join(str(target.relative_to(self.output_dir)) for target in removed))
        for target in removed:
            _remove_figure_of(target)
        shutil.rmtree(staged_root, ignore_errors=True)
        return moved

    def discard(self, session: str) -> None:
        """Delete what ``session`` staged (it failed or was interrupted)."""
        shutil.rmtree(self.session_dir(session), ignore_errors=True)

    def close(self) -> None:
        """Delete the run's staging folder, and the staging root when no other run uses it."""
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.parent.rmdir()
        except OSError:
            pass  # another run's staging folder, or already gone


@contextmanager
def set_folder(output_dir: Path, name: str) -> Iterator[Path]:
    """A new, empty folder for one set of outputs, laid out like the output dataset.

    It lies in ``.thalamus_staging/<name>-<unique>/`` (beside the file naming
    its owner) and is deleted on leaving, also on error; one left by a killed
    process is removed by the next run's :meth:`Staging.open`, as a run's
    folder is.
    """
    base = Path(output_dir) / STAGING_FOLDER
    base.mkdir(parents=True, exist_ok=True)
    folder = base / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        _write_owner(folder)
        (folder / "set").mkdir()
        yield folder / "set"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            base.rmdir()
        except OSError:
            pass  # another run's staging folder, or already gone


def staged_file(staging: Path, relative: str | os.PathLike) -> Path:
    """Where to write the output ``relative`` (to the output dataset) in the staging folder ``staging``."""
    path = Path(staging) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def move_together(staged_root: Path, output_dir: Path, stale: Iterable[Path] = ()) -> tuple[list[Path], list[Path]]:
    """Move every file below ``staged_root`` to the same place below ``output_dir``, then remove ``stale``.

    All or nothing: a file whose content is already published is left alone;
    a replaced file, and each stale one, is set aside until every move has
    succeeded, and a failure puts them back (and removes the files already
    moved in), so readers see the earlier set or the new one. Files staged
    here are never stale. Returns the files that changed and the stale files
    removed; the caller says why they went.

    Raises
    ------
    ThalamusError
        73 when a file cannot be written, after the earlier set was restored.
    """
    staged_root, output_dir = Path(staged_root), Path(output_dir)
    token = f"{os.getpid()}.{time.monotonic_ns()}"
    moved: list[tuple[Path, Path | None]] = []  # (final, backup of the file it replaced)
    created: list[Path] = []
    target = output_dir
    staged_files = sorted(p for p in staged_root.rglob("*") if p.is_file())
    finals = {output_dir / p.relative_to(staged_root) for p in staged_files}
    removed: list[tuple[Path, Path | None]] = []  # (stale file, where it was set aside)
    try:
        for staged in staged_files:
            relative = staged.relative_to(staged_root)
            target = output_dir / relative
            created.extend(_make_parents(output_dir, relative))
            if target.is_file() and _same_content(staged, target):
                continue
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.{token}.bak")
                os.replace(target, backup)
            moved.append((target, backup))
            _move(staged, target)
        for target in sorted(set(map(Path, stale)) - finals):  # set aside like a replaced file
            if not target.is_file():
                continue
            backup = target.with_name(f".{target.name}.{token}.bak")
            os.replace(target, backup)
            removed.append((target, backup))
    except OSError as err:
        _roll_back(moved + removed, created)
        raise ThalamusError(f"cannot write {target}: {err.strerror or err}", EXIT_CANTCREAT) from err
    for _, backup in moved + removed:
        if backup is not None:
            backup.unlink(missing_ok=True)
    return [final for final, _ in moved], [target for target, _ in removed]


def published_files(output_dir: Path, session: str) -> list[Path]:
    """The files the participant level published for ``session`` (``sub-01`` or ``sub-01_ses-1``).

    Those below the session's folder (``sub-01/`` or ``sub-01/ses-1/``) whose
    name starts with the session's name; the report figures (``figures/``,
    redrawn by every report) and, for a session-less name, the folders of
    sessions are not part of the set.
    """
    subject, _, rest = session.partition("_")
    root = Path(output_dir) / subject / rest.replace("_", "/") if rest else Path(output_dir) / subject
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob(f"{session}_*"):
        parts = path.relative_to(root).parts
        if "figures" in parts or (not rest and parts[0].startswith("ses-")) or path.name.startswith("."):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found)


def _remove_figure_of(removed: Path) -> None:
    """The report figure drawn from a removed mask (``figures/<its name>.svg``) goes with it."""
    stem = removed.name.split(".")[0]
    for folder in removed.parents:
        figure = folder / "figures" / f"{stem}.svg"
        if figure.is_file():
            figure.unlink(missing_ok=True)
            return
        if folder.name.startswith("sub-"):
            return


def remove_stale(output_dir: Path) -> None:
    """Remove staging folders whose run is dead (killed before it could clean up)."""
    base = Path(output_dir) / STAGING_FOLDER
    if not base.is_dir():
        return
    host = socket.gethostname()
    for folder in base.iterdir():
        try:
            owner = json.loads((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        if owner.get("host") == host:
            stale = not _pid_alive(int(owner.get("pid", -1)))
        else:
            started = owner.get("started") or folder.stat().st_mtime
            stale = time.time() - float(started) > _STALE_AFTER_S
        if stale:
            LOGGER.info("removing the staging folder of a run that did not finish: %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def is_write_error(err: OSError, *writable_roots: Path) -> bool:
    """Whether ``err`` means that a file could not be written (disk full, read-only, no permission)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    if err.errno in (errno.EACCES, errno.EPERM) and err.filename:
        path = Path(os.fsdecode(err.filename)).absolute()
        return any(root == path or root in path.parents for root in writable_roots)
    return False


def _write_owner(folder: Path) -> None:
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    (folder / _OWNER_FILE).write_text(json.dumps(owner))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return file_digest(a, "sha1") == file_digest(b, "sha1")


def _make_parents(root: Path, relative: Path) -> list[Path]:
    """Create the folders of ``root / relative``; return the ones created (outermost first)."""
    created = []
    folder = root
    for part in relative.parts[:-1]:
        folder = folder / part
        if not folder.is_dir():
            folder.mkdir()
            created.append(folder)
    return created


def _move(staged: Path, final: Path) -> None:
    try:
        os.replace(staged, final)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        with atomic_path(final) as tmp:  # a sub-folder on another file system
            shutil.copyfile(staged, tmp)


def _roll_back(moved: list[tuple[Path, Path | None]], created: list[Path]) -> None:
    """Undo a partial commit: new files removed, replaced files restored, new folders removed."""
    for final, backup in reversed(moved):
        try:
            if backup is not None:
                os.replace(backup, final)
            else:
                final.unlink(missing_ok=True)
        except OSError as err:
            LOGGER.error("could not restore %s after a failed publish: %s", final, err)
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass
