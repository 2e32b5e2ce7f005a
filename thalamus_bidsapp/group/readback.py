"""Group level, input side: what the participant level wrote, read back with the same entity rules.

The output dataset is indexed with pybids and the app's own entity rules
(:func:`thalamus_bidsapp.bidsio.inputs.entity_config`), the rules that
indexed the input dataset, so the group level sees exactly the sessions the
participant level wrote, with no separate file-name regex. The run logs
(``logs/<run>/sessions.tsv``) say which of them finished well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.runlog import PROCESS_FILE, RUNNING
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticipantOutputs:
    """The per-session files of the output dataset.

    ``volumes``: participant_id, session_id (None without sessions), path.
    ``masks``: participant_id, session_id, method, path.
    ``qc``: participant_id, session_id, path of each session's QC table
    (``*_label-thalamus_desc-segmentation_qc.tsv``).
    """

    volumes: pd.DataFrame
    masks: pd.DataFrame
    qc: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["participant_id", "session_id", "path"]))


@dataclass(frozen=True)
class SessionState:
    """The latest recorded status of one session: ok, failed, interrupted or running.

    ``killed``: recorded as running, but its process ended on this machine without recording a result
    (status interrupted).
    """

    session: str
    status: str
    reason: str = ""
    run: str = ""
    killed: bool = False


def session_name(participant_id: str, session_id: str | None) -> str:
    """``sub-01_ses-1`` or ``sub-01``, the session names of the run logs."""
    return participant_id + (f"_{session_id}" if isinstance(session_id, str) and session_id else "")


def read_participant_outputs(output_dir: Path) -> ParticipantOutputs:
    """The volumes tables and thalamus masks of every session of ``output_dir``.

    Raises
    ------
    ThalamusError
        Exit 66 when ``output_dir`` holds no participant outputs.
    """
    from bids.layout import Query

    from thalamus_bidsapp.bidsio.inputs import open_layout

    output_dir = Path(output_dir)
    if not (output_dir / "dataset_description.json").is_file():
        raise ThalamusError(f"no participant outputs in {output_dir} (no dataset_description.json): "
                            "run the participant level first", EXIT_NOINPUT)
    layout = open_layout(output_dir, validate=False, database_dir=None, derivatives=True,
                         extra_ignore=(r"^/sub-[^/]+/figures(/|$)", r"^/[^/]*\.html$"))

    def rows(**query) -> list[dict]:
        found = []
        for bids_file in layout.get(return_type="object", datatype="anat", **query):
            ents = bids_file.get_entities()
            session = ents.get("session")
            found.append({"participant_id": f"sub-{ents['subject']}",
                          "session_id": f"ses-{session}" if session else None,
                          "method": ents.get("desc"), "path": Path(bids_file.path)})
        return found

    volumes = pd.DataFrame(rows(suffix="volumes", label="thalamus", extension=".tsv", desc=Query.NONE),
                           columns=["participant_id", "session_id", "method", "path"]).drop(columns="method")
    masks = pd.DataFrame(rows(suffix="mask", label="thalamus", space="T1w", desc=Query.ANY,
                              extension=[".nii.gz", ".nii"]),
                         columns=["participant_id", "session_id", "method", "path"])
    if volumes.empty and masks.empty:
        raise ThalamusError(f"no participant volumes or thalamus masks found in {output_dir}: "
                            "run the participant level first", EXIT_NOINPUT)
    qc = pd.DataFrame(rows(suffix="qc", label="thalamus", desc="segmentation", extension=".tsv"),
                      columns=["participant_id", "session_id", "method", "path"]).drop(columns="method")
    return ParticipantOutputs(_tidy(volumes), _tidy(masks), _tidy(qc))


def _tidy(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in path order; ``session_id`` None (not NaN) for a dataset without sessions."""
    table = table.sort_values("path", ignore_index=True)
    table["session_id"] = table["session_id"].astype(object).where(table["session_id"].notna(), None)
    return table


def latest_session_states(output_dir: Path) -> dict[str, SessionState]:
    """Each session's status in its latest participant run (``logs/<run>/sessions.tsv``).

    A session recorded as running whose process has ended on this machine
    without recording its result (killed) is reported as interrupted.
    """
    from thalamus_bidsapp.reports.participant import read_session_statuses

    states = {}
    for name, status in read_session_statuses(Path(output_dir)).items():
        state = SessionState(name, status.status, status.reason, status.run)
        if status.status == RUNNING:
            gone = _process_gone(status.sessions_tsv.parent / PROCESS_FILE)
            if gone:
                state = SessionState(name, "interrupted", gone, status.run, killed=True)
        states[name] = state
    return states


def _process_gone(process_file: Path) -> str:
    """Why the process that wrote ``process_file`` is known to have ended, or "" if it may still run."""
    try:
        record = json.loads(process_file.read_text())
        host, pid = str(record["host"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if host != socket.gethostname():
        return ""  # another node of the cluster: cannot tell, assume it still runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its participant process ({pid} on {host}) ended without recording a result (killed?)"
    except PermissionError:  # alive, another user's
        return ""
    return ""
