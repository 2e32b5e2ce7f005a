"""The run's records under ``logs/``: the session statuses and the citations."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import atomic_path, write_tsv
from thalamus_bidsapp.methods import all_methods
from thalamus_bidsapp.participant.tracking import SessionStatus


def write_statuses(statuses: dict[str, SessionStatus], log_dir: Path) -> None:
    """``logs/<run>/sessions.tsv``: each session's status and, for a failed one, why."""
    table = pd.DataFrame([vars(s) for s in statuses.values()], columns=["session", "status", "reason"])
    write_tsv(table, log_dir / "sessions.tsv", {
        "session": "Subject and session",
        "status": "ok; failed (no new outputs were published); interrupted (stopped by SIGINT or SIGTERM, "
                  "no new outputs were published); or running (while the run is in progress)",
        "reason": "Why the session failed; crash reports are in crash/<session>/",
    })


def write_citations(path: Path, plans, extra: tuple[str, ...] = ()) -> Path:
    """``CITATION.md`` naming the tools and papers used by the methods that ran.

    ``extra``: keys of ``data/citations.json`` used besides the methods (e.g. template space's).
    """
    table = json.loads(importlib.resources.files("thalamus_bidsapp.data").joinpath("citations.json").read_text())
    used = {method for plan in plans for method in plan.run}
    lines = ["# Citations", "", "Please cite the tools that produced these derivatives:", ""]
    lines += [f"- **{key}**: {entry['text']}" for key, entry in table.items() if entry.get("always") or key in extra]
    lines += [f"- **{m.name}**: {m.citation}" for m in all_methods() if m.name in used]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
