"""What the reports read from the run logs and QC tables: session statuses, skipped methods, exclusions."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.reports.html import is_true

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionStatus:
    """The latest recorded status of a session in ``logs/<run>/sessions.tsv``."""

    session: str
    status: str
    reason: str
    run: str
    sessions_tsv: Path
    crash_files: tuple[Path, ...] = ()


def read_session_statuses(output_dir: Path) -> dict[str, SessionStatus]:
    """Latest status of every session over all runs in ``logs/*/sessions.tsv``.

    Runs are taken in the order of their folder names, which start with the
    run's start time (``YYYYMMDD-HHMMSS_<id>``), so a later run's entry wins.
    """
    statuses: dict[str, SessionStatus] = {}
    for tsv in sorted(Path(output_dir).glob("logs/*/sessions.tsv")):
        try:
            table = read_tsv(tsv)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            LOGGER.warning("cannot read %s: %s", tsv, err)
            continue
        for row in table.to_dict("records"):
            name = str(row.get("session", ""))
            if not name:
                continue
            reason = row.get("reason")
            reason = "" if reason is None or (isinstance(reason, float) and np.isnan(reason)) else str(reason)
            crashes = tuple(sorted((tsv.parent / "crash" / name).glob("crash-*.txt")))
            statuses[name] = SessionStatus(name, str(row.get("status", "")), reason, tsv.parent.name, tsv, crashes)
    return statuses


def read_skipped_methods(output_dir: Path) -> dict[str, dict[str, str]]:
    """Skipped methods and reasons by session name, from the runs' ``logs/*/methods.json``.

    The participant level writes ``logs/<run>/methods.json`` as
    ``{"sub-01_ses-1": {"methods_run": [...], "methods_skipped": {method: reason}, ...}}``;
    runs are read in the order of their folder names (start time first), so a
    later run's plan of a session wins. Returns {} when no run recorded one.
    """
    out: dict[str, dict[str, str]] = {}
    for path in sorted(Path(output_dir).glob("logs/*/methods.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            LOGGER.warning("cannot read %s: %s", path, err)
            continue
        for session, entry in data.items() if isinstance(data, Mapping) else ():
            reasons = entry.get("methods_skipped") if isinstance(entry, Mapping) else None
            if isinstance(reasons, Mapping):
                out[str(session)] = {str(k): str(v) for k, v in reasons.items() if isinstance(v, str)}
    return out


def registration_exclusions(qc: pd.DataFrame) -> list[tuple[str, str]]:
    """Images of a registration QC table with no selected registration, with the reasons."""
    out = []
    if qc.empty or "image" not in qc:
        return out
    for image, rows in qc.groupby("image", sort=True):
        if not any(is_true(v) for v in rows.get("selected", [])):
            records = rows.to_dict("records")
            # The strategies that ran say why the image failed; "not run" rows only repeat the set-up.
            tried = [r for r in records if not pd.isna(r.get("mi"))] if "mi" in rows else []
            reasons = "; ".join(f"{r.get('strategy')}: {r.get('reason')}" for r in (tried or records)
                                if r.get("reason") and not pd.isna(r.get("reason")))
            out.append((str(image), reasons or "no registration passed its QC"))
    return out


def qc_row_classes(qc: pd.DataFrame) -> list[str]:
    """Row colours of a registration QC table: selected green, failed red."""
    classes = []
    for row in qc.to_dict("records"):
        if is_true(row.get("selected")):
            classes.append("good")
        elif str(row.get("passed")).strip().lower() in {"false", "0"}:
            classes.append("bad")
        else:
            classes.append("")
    return classes
