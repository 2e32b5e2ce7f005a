"""Group level, first step: every session's thalamus volumes in one long table."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.bidsio.tables import volumes_columns
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError

LOGGER = logging.getLogger(__name__)

_VOLUMES_NAME = re.compile(r"^(sub-[0-9a-zA-Z]+)(?:_(ses-[0-9a-zA-Z]+))?_label-thalamus_volumes\.tsv$")

GROUP_VOLUMES_COLUMNS = {
    "participant_id": "Participant label, sub-<label>",
    "session_id": "Session label, ses-<label> (n/a when the dataset has no sessions)",
    **volumes_columns(),
    "asymmetry_index": {"Description": "Thalamic asymmetry of the mask, (L - R) / ((L + R) / 2) of its left and "
                        "right volumes, on each of its rows (n/a for a mask without sides)"},
}


def gather_volumes(output_dir: Path) -> pd.DataFrame:
    """Concatenate all ``*_label-thalamus_volumes.tsv`` of the output dataset.

    Returns
    -------
    Long table: participant_id, session_id, method, contrast, hemisphere,
    n_voxels, volume_mm3, volume_ml, icv_ml, icv_source, asymmetry_index
    (``(L - R) / ((L + R) / 2)`` of the mask's left and right volumes, on
    each of its rows; n/a for a mask without sides). Tables written before
    sides existed have bilateral rows only.

    Raises
    ------
    ThalamusError
        When the output dataset holds no volumes table (run participant first; exit 66).
    """
    frames = []
    for path in sorted(Path(output_dir).glob("sub-*/**/anat/*_label-thalamus_volumes.tsv")):
        match = _VOLUMES_NAME.match(path.name)
        if not match:
            continue
        table = read_tsv(path)
        if "hemisphere" not in table:
            table.insert(table.columns.get_loc("contrast") + 1 if "contrast" in table else 0, "hemisphere",
                         "bilateral")
        table.insert(0, "session_id", match.group(2))
        table.insert(0, "participant_id", match.group(1))
        frames.append(table)
    if not frames:
        raise ThalamusError(
            f"no participant volumes found in {output_dir}: run the participant level first",
            EXIT_NOINPUT,
        )
    return add_asymmetry(pd.concat(frames, ignore_index=True))


def add_asymmetry(volumes: pd.DataFrame) -> pd.DataFrame:
    """Add ``asymmetry_index``, (L - R) / ((L + R) / 2) of each mask's left and right volumes, to all its rows."""
    from thalamus_bidsapp.image.sides import asymmetry_index

    keys = ["participant_id", "session_id", "method", "contrast"]

    def side_volume(hemisphere: str) -> pd.Series:
        side = volumes["volume_ml"].where(volumes["hemisphere"] == hemisphere)
        return side.groupby([volumes[k] for k in keys], dropna=False).transform("max")

    left, right = side_volume("left"), side_volume("right")
    return volumes.assign(asymmetry_index=[asymmetry_index(lv, rv) if pd.notna(lv) and pd.notna(rv) else float("nan")
                                           for lv, rv in zip(left, right)])


def join_clinical(volumes: pd.DataFrame, bids_dir: Path) -> pd.DataFrame:
    """Add the columns of ``participants.tsv`` and the sessions tables.

    Sessions tables are ``sub-<label>/sub-<label>_sessions.tsv``; their
    columns join on participant and session. Missing tables are fine.
    """
    bids_dir = Path(bids_dir)
    joined = volumes
    participants_file = bids_dir / "participants.tsv"
    if participants_file.is_file():
        participants = read_tsv(participants_file)
        if "participant_id" not in participants:
            raise ThalamusError(f"{participants_file} has no participant_id column")
        clash = [c for c in participants.columns if c in joined.columns and c != "participant_id"]
        participants = participants.rename(columns={c: f"{c}_participants" for c in clash})
        joined = joined.merge(participants, on="participant_id", how="left")
    else:
        LOGGER.warning("no participants.tsv in %s: volumes are not joined with demographics", bids_dir)
    session_tables = []
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        table = read_tsv(path)
        if "session_id" not in table:
            raise ThalamusError(f"{path} has no session_id column")
        table.insert(0, "participant_id", path.parent.name)
        session_tables.append(table)
    if session_tables:
        sessions = pd.concat(session_tables, ignore_index=True)
        clash = [c for c in sessions.columns if c in joined.columns and c not in ("participant_id", "session_id")]
        sessions = sessions.rename(columns={c: f"{c}_sessions" for c in clash})
        joined = joined.merge(sessions, on=["participant_id", "session_id"], how="left")
    return joined


def column_descriptions(table: pd.DataFrame, bids_dir: Path) -> dict:
    """Sidecar for group/volumes.tsv: our columns plus those of participants.json."""
    import json

    described = dict(GROUP_VOLUMES_COLUMNS)
    participants_json = Path(bids_dir) / "participants.json"
    if participants_json.is_file():
        try:
            described.update({k: v for k, v in json.loads(participants_json.read_text()).items() if k in table})
        except json.JSONDecodeError:
            LOGGER.warning("cannot parse %s; its column descriptions are not copied", participants_json)
    for column in table.columns:
        described.setdefault(column, "Copied from the input dataset's participants or sessions table")
    return described
