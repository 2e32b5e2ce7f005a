"""Find each session's input images with pybids.

The queries (what counts as a T1w, FLAIR, R1 map or manual mask) live in
``data/bids_queries.json`` and can be overridden per key with
``--bids-filter-file``, as in fMRIPrep.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, EXIT_USAGE, ThalamusError

LOGGER = logging.getLogger(__name__)

#: Input roles that may come from a derivatives dataset as well as the raw one.
DERIVATIVE_ROLES = ("r1map", "manual")


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
    notes: tuple[str, ...] = field(default_factory=tuple)

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
    text = resources.files("thalamus_bidsapp.data").joinpath("bids_queries.json").read_text()
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
    unknown = set(custom) - set(queries)
    if unknown:
        raise ThalamusError(
            f"unknown keys {sorted(unknown)} in the BIDS filter file {filter_file}; "
            f"valid keys: {sorted(queries)}",
            EXIT_USAGE,
        )
    for role, query in custom.items():
        queries[role] = {**queries[role], **query}
    return queries


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` -> ``01``; ``01`` stays ``01``."""
    return label[len(prefix) + 1 :] if label.startswith(f"{prefix}-") else label


def open_layout(root: Path, *, validate: bool, database_dir: Path | None, derivatives: bool = False,
                subjects: list[str] | None = None):
    """A pybids layout of ``root``, its index cached under ``database_dir``.

    ``subjects`` (labels, with or without ``sub-``) limits indexing and
    validation to those subjects' folders (and the top-level files), so one
    participant of a large dataset is found as fast as in a small one.

    Raises
    ------
    ThalamusError
        When ``root`` is not a BIDS dataset (exit 65).
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    ignore = _other_subjects(subjects)
    database_path = None
    if database_dir is not None:
        scope = ",".join(sorted({strip_prefix(label, "sub") for label in subjects})) if subjects else "*"
        key = hashlib.sha1(f"{Path(root).resolve()}|{validate}|{scope}".encode()).hexdigest()[:12]
        database_path = Path(database_dir) / f"bids_db_{key}"
    config = ["bids", "derivatives"] if derivatives else ["bids"]
    try:
        return BIDSLayout(
            str(root),
            validate=validate,
            config=config,
            database_path=database_path,
            indexer=BIDSLayoutIndexer(validate=validate, **({"ignore": ignore} if ignore else {})),
            is_derivative=derivatives,
        )
    except Exception as err:  # pybids raises ValueError, BIDSValidationError and others
        raise ThalamusError(f"{root} is not a usable BIDS dataset: {err}", EXIT_DATAERR) from err


def _other_subjects(subjects: list[str] | None) -> list | None:
    """pybids ``ignore`` patterns: its defaults plus every ``sub-*`` folder not in ``subjects``."""
    if not subjects:
        return None
    import re

    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

    wanted = "|".join(re.escape(strip_prefix(label, "sub")) for label in sorted(set(subjects)))
    return [*DEFAULT_LOCATIONS_TO_IGNORE, re.compile(rf"^/sub-(?!(?:{wanted})(?:/|$))[^/]+")]


def _first(layout, query: dict[str, Any], entities: dict[str, Any], role: str, notes: list[str]) -> Path | None:
    files = sorted(layout.get(return_type="file", **{**query, **entities}))
    if len(files) > 1:
        notes.append(f"{len(files)} {role} images found; using the first, {Path(files[0]).name}")
    return Path(files[0]) if files else None


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
    if participant_labels:
        wanted = [strip_prefix(label, "sub") for label in participant_labels]
        missing = sorted(set(wanted) - set(available))
        if missing:
            # The index may hold only the requested subjects: list the others from the folder.
            on_disk = sorted({p.name[4:] for p in Path(layout.root).glob("sub-*") if p.is_dir()} | set(available))
            raise ThalamusError(
                f"participant label(s) {', '.join(missing)} not found in {layout.root}; "
                f"available: {', '.join(on_disk) or 'none'}",
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


def _session_inputs(layout, derivative_layouts, queries, subject: str, session: str | None) -> SessionInputs:
    from bids.layout import Query

    entities: dict[str, Any] = {"subject": subject, "session": session if session else Query.NONE}
    notes: list[str] = []
    found: dict[str, Path | None] = {}
    for role in ("t1w", "t2w", "flair", "r1map", "manual"):
        path = None
        if role != "manual":
            path = _first(layout, queries[role], entities, role, notes)
        if path is None and role in DERIVATIVE_ROLES:
            for deriv_layout in derivative_layouts.values():
                path = _first(deriv_layout, queries[role], entities, role, notes)
                if path is not None:
                    break
        found[role] = path
    return SessionInputs(subject=subject, session=session, notes=tuple(notes), **found)


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
