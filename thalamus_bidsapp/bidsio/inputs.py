"""Find each session's input images with pybids.

The queries (what counts as a T1w, FLAIR, R1 map or manual mask) live in
``data/bids_queries.json`` and can be overridden per key with
``--bids-filter-file``, as in fMRIPrep.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thalamus_bidsapp.errors import EXIT_CANTCREAT, EXIT_DATAERR, EXIT_NOINPUT, EXIT_USAGE, ThalamusError

LOGGER = logging.getLogger(__name__)

#: Input roles that may come from a derivatives dataset as well as the raw one.
DERIVATIVE_ROLES = ("r1map", "manual", "lesion")
#: Roles looked up only in the derivatives datasets.
DERIVATIVE_ONLY_ROLES = ("manual", "lesion")
#: Names lesion-segmentation tools also write, tried in order when the default ``lesion`` query finds
#: nothing (``label-lesion`` first): ``desc-lesion_mask`` / ``desc-lesion_dseg``.
LESION_ALTERNATIVES = ({"label": None, "desc": "lesion"},)


@dataclass(frozen=True)
class SessionInputs:
    """The input files of one subject and session (``session`` is None without sessions)."""

    subject: str
    session: str | None
    t1w: Path | None
    t2w: Path | None = None
    flair: Path | None = None
    r1map: Path | None = None
    manual: Path | None = None
    lesion: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Why the session cannot run although it has a T1w (e.g. an explicit lesion filter that matched nothing).
    problems: tuple[str, ...] = field(default_factory=tuple)
    #: ``--lesion-labels``: the lesion labels of a lesion dseg (names or index values).
    lesion_labels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """``sub-01_ses-02`` or ``sub-01``: the session's name in logs and file names."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def entities(self) -> dict[str, str]:
        ents = {"subject": self.subject}
        if self.session:
            ents["session"] = self.session
        return ents


def default_queries() -> dict[str, dict[str, Any]]:
    """The packaged queries, one per input role."""
    text = importlib.resources.files("thalamus_bidsapp.data").joinpath("bids_queries.json").read_text()
    return json.loads(text)


def load_queries(filter_file: Path | None) -> dict[str, dict[str, Any]]:
    """Default queries updated, role by role, with a ``--bids-filter-file``."""
    queries = default_queries()
    if filter_file is None:
        return queries
    try:
        custom = json.loads(Path(filter_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ThalamusError(f"cannot read the BIDS filter file {filter_file}: {err}", EXIT_USAGE) from err
    if not isinstance(custom, dict):
        raise ThalamusError(f"the BIDS filter file {filter_file} must hold a JSON object "
                            f"with the keys {sorted(queries)}", EXIT_USAGE)
    unknown = set(custom) - set(queries)
    if unknown:
        raise ThalamusError(
            f"unknown keys {sorted(unknown)} in the BIDS filter file {filter_file}; "
            f"valid keys: {sorted(queries)}",
            EXIT_USAGE,
        )
    for role, query in custom.items():
        _check_query(role, query, filter_file)
        queries[role] = {**queries[role], **query}
    return queries


def _filter_entities() -> set[str]:
    """Entity names a query may use: pybids' BIDS and derivatives entities."""
    from bids.layout.models import Config

    return set(Config.load("bids").entities) | set(Config.load("derivatives").entities)


def _check_query(role: str, query: Any, filter_file: Path) -> None:
    """A filter is ``{entity: value}``; a value is text, a whole number, null, or a list of those."""
    if not isinstance(query, dict):
        raise ThalamusError(f"key {role!r} of the BIDS filter file {filter_file} must be an object "
                            f"{{entity: value}}, not {json.dumps(query)}", EXIT_USAGE)
    known = _filter_entities()
    for entity, value in query.items():
        if entity in ("subject", "session"):
            raise ThalamusError(f"key {role}.{entity} of the BIDS filter file {filter_file}: choose subjects and "
                                "sessions with --participant-label and --session-label", EXIT_USAGE)
        if entity not in known:
            raise ThalamusError(f"key {role}.{entity} of the BIDS filter file {filter_file} is not a BIDS entity; "
                                f"valid entities: {', '.join(sorted(known - {'subject', 'session'}))}", EXIT_USAGE)
        values = value if isinstance(value, list) else [value]
        if (isinstance(value, list) and not value) or not all(
                v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
            raise ThalamusError(f"key {role}.{entity} of the BIDS filter file {filter_file}: {json.dumps(value)} is not "
                                "a valid value (text, a whole number, null, or a list of those)", EXIT_USAGE)


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` -> ``01``; ``01`` stays ``01``."""
    return label[len(prefix) + 1 :] if label.startswith(f"{prefix}-") else label


#: A BIDS label: letters and digits only (pybids also accepts "+", and matches ``sub-01-02`` as ``01``).
LABEL = "[0-9a-zA-Z]+"
_VALID_LABEL = re.compile(rf"^{LABEL}$", re.ASCII)
#: Bumped whenever the entity rules below change, so indexes cached by an older version are not reused.
_INDEX_VERSION = "3"


def entity_config(root: Path, *, derivatives: bool = False) -> dict[str, Any]:
    """pybids entity rules that read entities only from the path below ``root``.

    pybids 0.22 matches its entity patterns against the absolute path, so a
    dataset stored under a folder named like a datatype (``/data/perf/ds``)
    gets ``datatype=perf`` on every file and no T1w is found (pybids issue
    1270). Anchoring every pattern at ``root`` keeps the parent folders out.
    Subject and session labels must be valid BIDS labels and come from the
    ``sub-``/``ses-`` folders. The same rules index the input datasets and read
    back the output dataset at group level.
    """
    import bids.layout

    config_dir = Path(bids.layout.__file__).parent / "config"
    names = ["bids", "derivatives"] if derivatives else ["bids"]
    anchor = "^" + re.escape(str(Path(root).absolute()).rstrip("/\\")) + r"(?=[/\\])"
    entities = []
    for name in names:
        for entity in json.loads((config_dir / f"{name}.json").read_text())["entities"]:
            entity = dict(entity)
            if entity["name"] == "subject":
                entity["pattern"] = anchor + rf"[/\\]sub-({LABEL})[/\\]"
            elif entity["name"] == "session":
                entity["pattern"] = anchor + rf"[/\\]sub-{LABEL}[/\\]ses-({LABEL})[/\\]"
            elif "pattern" in entity:
                entity["pattern"] = anchor + "(?:.*?)" + entity["pattern"]
            entities.append(entity)
    return {"name": "thalamus_bidsapp_" + "_".join(names), "entities": entities}


#: Top-level folders never indexed: pybids' defaults, the app's own non-BIDS output folders, and
#: ``derivatives`` (pybids indexes a nested derivatives dataset only when asked, which the app never does).
_UNINDEXED_FOLDERS = ("code", "models", "sourcedata", "stimuli", "logs", "group", "derivatives")


def _ignore_patterns(extra: tuple[str, ...] = ()) -> list:
    """pybids' default ignores, plus subject and session folders whose label is not a valid BIDS label."""
    return [
        *(re.compile(pattern) for pattern in extra),
        re.compile(rf"^/({'|'.join(_UNINDEXED_FOLDERS)})(/|$)"),
        re.compile(rf"^/sub-(?!{LABEL}(/|$))"),
        re.compile(rf"^/sub-[^/]*/ses-(?!{LABEL}(/|$))"),
    ]


def invalid_label_folders(root: Path) -> list[str]:
    """``sub-*`` and ``sub-*/ses-*`` folders of ``root`` whose label is not a valid BIDS label (ignored)."""
    root = Path(root)
    found = []
    for subject_dir in sorted(root.glob("sub-*")):
        if not subject_dir.is_dir():
            continue
        if not _VALID_LABEL.match(subject_dir.name[4:]):
            found.append(subject_dir.name)
            continue
        for session_dir in sorted(subject_dir.glob("ses-*")):
            if session_dir.is_dir() and not _VALID_LABEL.match(session_dir.name[4:]):
                found.append(f"{subject_dir.name}/{session_dir.name}")
    return found


def dataset_fingerprint(root: Path) -> str:
    """sha256 of the dataset's file list with each file's size and mtime (unindexed folders left out).

    This keys the cached pybids index: a file added, removed, renamed or
    rewritten gives a new index. The index holds only names and entities (no
    metadata), so names, sizes and times are all it depends on; the content
    of the images a session reads is hashed separately, into the workflow's
    node inputs (see :func:`thalamus_bidsapp.bidsio.checksums.files_digest`).
    """
    digest = hashlib.sha256()
    root = Path(root)
    for folder, dirs, files in os.walk(root, followlinks=True):
        top = Path(folder) == root
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top and d in _UNINDEXED_FOLDERS))
        relative = Path(folder).relative_to(root).as_posix()
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except OSError:  # a broken link (e.g. a git-annex file not fetched)
                info = os.lstat(path)
            digest.update(f"{relative}/{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def open_layout(root: Path, *, validate: bool, database_dir: Path | None, derivatives: bool = False,
                extra_ignore: tuple[str, ...] = ()):
    """A pybids layout of ``root``, its index cached under ``database_dir``.

    The cache is keyed by :func:`dataset_fingerprint`, so a subject added or a
    file changed since an earlier run is seen. Several processes may share
    ``database_dir`` (a SLURM array with one work folder): each index is built
    under a temporary name and renamed into place whole, so no process ever
    reads a half-built index. ``extra_ignore``: regular expressions of paths
    (``/`` + the path below ``root``) not to index.

    Raises
    ------
    ThalamusError
        When ``root`` is not a BIDS dataset (exit 65); when the index cannot
        be written into ``database_dir`` (exit 73, naming the folder).
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    root = Path(root).absolute()

    def build(database_path: Path | None = None):
        return BIDSLayout(
            str(root),
            validate=validate,
            config=[entity_config(root, derivatives=derivatives)],
            database_path=None if database_path is None else str(database_path),
            indexer=BIDSLayoutIndexer(validate=validate and not derivatives, index_metadata=False,
                                      ignore=_ignore_patterns(extra_ignore)),
            is_derivative=derivatives,
        )

    try:
        if database_dir is None:
            return build()
        # <which dataset and rules>_<which content>: a later index of the same dataset replaces older ones.
        dataset_key = hashlib.sha256(
            f"{_INDEX_VERSION}|{root}|{validate}|{derivatives}|{extra_ignore}".encode()).hexdigest()[:12]
        content_key = dataset_fingerprint(root)[:16]
        database_path = Path(database_dir) / f"bids_db_{dataset_key}_{content_key}"
        if (database_path / "layout_index.sqlite").is_file():
            try:
                return build(database_path)
            except Exception as err:  # an index from elsewhere that cannot be read: build our own
                LOGGER.debug("cannot load the cached index %s (%s); indexing again", database_path, err)
        layout = build()
        _save_index(layout, database_path)
        _remove_stale_indexes(database_path)
        return layout
    except ThalamusError:
        raise
    except Exception as err:  # pybids raises ValueError, BIDSValidationError and others
        raise ThalamusError(f"{root} is not a usable BIDS dataset: {err}", EXIT_DATAERR) from err


def _save_index(layout, database_path: Path) -> None:
    """Save ``layout``'s index as ``database_path``, whole or not at all, racing other processes safely."""
    database_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{database_path.name}.", dir=database_path.parent))
    except OSError as err:
        raise ThalamusError(f"cannot write the work folder {database_path.parent}: {err.strerror or err}",
                            EXIT_CANTCREAT) from err
    try:
        # replace_connection=False: this process keeps its in-memory index; the folder is for the next run.
        layout.save(str(tmp), replace_connection=False)
        try:
            os.rename(tmp, database_path)
        except OSError:
            if not (database_path / "layout_index.sqlite").is_file():
                raise
            # Another process saved the same index first: theirs is as good as ours.
    except OSError as err:
        raise ThalamusError(f"cannot write the work folder {database_path.parent}: {err.strerror or err}",
                            EXIT_CANTCREAT) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: An index of an earlier content of the dataset is removed once it is this old (seconds): by then no
#: process that started with it is still opening it.
_STALE_INDEX_AGE = 3600


def _remove_stale_indexes(current: Path) -> None:
    """Remove the indexes of earlier contents of the same dataset, so the work folder does not grow."""
    prefix = current.name.rsplit("_", 1)[0] + "_"
    now = time.time()
    for old in current.parent.glob(prefix + "*"):
        try:
            if old != current and now - old.stat().st_mtime > _STALE_INDEX_AGE:
                shutil.rmtree(old)
                LOGGER.debug("removed the index of an earlier content of the dataset: %s", old)
        except OSError:  # another process removed it first, or it is not ours to remove
            pass


def _run_number(bids_file) -> int:
    run = bids_file.get_entities().get("run")
    try:
        return int(run)
    except (TypeError, ValueError):
        return -1


def _first(layout, query: dict[str, Any], entities: dict[str, Any], role: str, notes: list[str]) -> Path | None:
    """The image to use for ``role``: the lowest run number (numeric: run-2 before run-10), then by name."""
    files = sorted(layout.get(return_type="object", **{**query, **entities}),
                   key=lambda f: (_run_number(f), f.path))
    if len(files) > 1:
        runs = any(_run_number(f) >= 0 for f in files)
        notes.append(f"{len(files)} {role} images found ({', '.join(Path(f.path).name for f in files)}); "
                     f"using {Path(files[0].path).name}, "
                     + ("the lowest run number" if runs else "the first by file name (they have no run numbers)"))
    return Path(files[0].path) if files else None


def collect_sessions(
    layout,
    derivative_layouts: dict[str, Any],
    queries: dict[str, dict[str, Any]],
    *,
    participant_labels: list[str] | None,
    session_labels: list[str] | None,
) -> list[SessionInputs]:
    """One :class:`SessionInputs` per subject and session to process.

    R1 maps and manual masks are looked up in the raw dataset and then in each
    derivatives dataset. A session without a T1w is kept (``t1w=None``) so the
    caller can report it while the other sessions go on.

    Raises
    ------
    ThalamusError
        A requested participant or session label that is not in the dataset
        (exit 66).
    """
    available = layout.get_subjects()
    ignored = invalid_label_folders(Path(layout.root))
    if ignored:
        LOGGER.warning("%d folder(s) of %s ignored: not valid BIDS labels (letters and digits only): %s",
                       len(ignored), layout.root, ", ".join(ignored))
    if participant_labels:
        wanted = [strip_prefix(label, "sub") for label in participant_labels]
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ThalamusError(
                f"participant label(s) {', '.join(missing)} not found in {layout.root}; "
                f"available: {', '.join(sorted(available)) or 'none'}"
                + (f" (ignored, invalid labels: {', '.join(ignored)})" if ignored else ""),
                EXIT_NOINPUT,
            )
        subjects = sorted(set(wanted))
    else:
        subjects = sorted(available)
    if not subjects:
        raise ThalamusError(f"no subjects found in {layout.root}", EXIT_NOINPUT)

    wanted_sessions = [strip_prefix(s, "ses") for s in session_labels] if session_labels else None
    sessions: list[SessionInputs] = []
    for subject in subjects:
        subject_sessions = sorted(layout.get_sessions(subject=subject)) or [None]
        if subject_sessions != [None]:
            _warn_sessionless_images(layout, queries, subject)
        if wanted_sessions is not None:
            subject_sessions = [s for s in subject_sessions if s in wanted_sessions]
            if not subject_sessions:
                LOGGER.warning("sub-%s has none of the sessions %s; skipped", subject, ", ".join(wanted_sessions))
                continue
        for session in subject_sessions:
            sessions.append(_session_inputs(layout, derivative_layouts, queries, subject, session))
    if not sessions:
        raise ThalamusError("no session matches the requested participant and session labels", EXIT_NOINPUT)
    return sessions


def _warn_sessionless_images(layout, queries: dict[str, dict[str, Any]], subject: str) -> None:
    """A subject with sessions whose T1w (or other input) also sits outside any session: say it is ignored."""
    from bids.layout import Query

    for role in ("t1w", "t2w", "flair", "r1map"):
        files = layout.get(return_type="file", **{**queries[role], "subject": subject, "session": Query.NONE})
        if files:
            LOGGER.warning("sub-%s has sessions; its session-less %s image(s) %s are ignored (only images inside "
                           "ses-<label> folders are processed)", subject, role,
                           ", ".join(sorted(Path(f).name for f in files)))


def _session_inputs(layout, derivative_layouts, queries, subject: str, session: str | None) -> SessionInputs:
    from bids.layout import Query

    entities: dict[str, Any] = {"subject": subject, "session": session if session else Query.NONE}
    notes: list[str] = []
    problems: list[str] = []
    found: dict[str, Path | None] = {}
    for role in ("t1w", "t2w", "flair", "r1map", "manual"):
        path = None
        if role not in DERIVATIVE_ONLY_ROLES:
            path = _first(layout, queries[role], entities, role, notes)
        if path is None and role in DERIVATIVE_ROLES:
            path = _first_derivative(derivative_layouts, role_queries(queries, role), entities, role, notes)
        found[role] = path
    from thalamus_bidsapp.bidsio.lesion_inputs import lesion_input

    found["lesion"] = lesion_input(derivative_layouts, queries, entities, notes, problems)
    return SessionInputs(subject=subject, session=session, notes=tuple(notes), problems=tuple(problems), **found)


def role_queries(queries: dict[str, dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """The queries tried for ``role``, in order: its own, then (for an unchanged lesion query) the alternatives."""
    if role != "lesion" or queries[role] != default_queries()[role]:
        return [queries[role]]
    return [queries[role], *({k: v for k, v in {**queries[role], **alt}.items() if v is not None}
                             for alt in LESION_ALTERNATIVES)]


def _first_derivative(derivative_layouts, tried: list[dict[str, Any]], entities: dict[str, Any], role: str,
                      notes: list[str]) -> Path | None:
    """The first image any derivatives dataset holds for ``role``, trying each query in turn."""
    for query in tried:
        for deriv_layout in derivative_layouts.values():
            path = _first(deriv_layout, query, entities, role, notes)
            if path is not None:
                return path
    return None


def parse_derivatives(specs: list[str] | None) -> dict[str, Path]:
    """``["r1=/data/hmri", "manual=/data/masks"]`` -> ``{"r1": Path, ...}``.

    A spec without ``NAME=`` is named after its folder.
    """
    result: dict[str, Path] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        path_obj = Path(path).expanduser()
        if not path_obj.is_dir():
            raise ThalamusError(f"derivatives dataset {name!r} not found: {path_obj} is not a folder", EXIT_NOINPUT)
        result[name] = path_obj
    return result
