"""Group level, first step: every session's thalamus volumes in one long table."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv, read_tsv_with_columns
from thalamus_bidsapp.bidsio.tables import volumes_columns
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError

LOGGER = logging.getLogger(__name__)

GROUP_VOLUMES_COLUMNS = {
    "participant_id": "Participant label, sub-<label>",
    "session_id": "Session label, ses-<label> (n/a when the dataset has no sessions)",
    **volumes_columns(),
    "asymmetry_index": {"Description": "Thalamic asymmetry of the mask, (L - R) / ((L + R) / 2) of its left and "
                        "right volumes, on each of its rows (n/a for a mask without sides)"},
}


def gather_volumes(volume_files: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate the sessions' ``*_label-thalamus_volumes.tsv`` tables.

    Parameters
    ----------
    volume_files
        participant_id, session_id, path (from
        :func:`thalamus_bidsapp.group.readback.read_participant_outputs`).

    Returns
    -------
    The long table (participant_id, session_id, method, contrast, hemisphere,
    n_voxels, volume_mm3, volume_ml, icv_ml, icv_source, asymmetry_index:
    ``(L - R) / ((L + R) / 2)`` of the mask's left and right volumes on each
    of its rows, n/a for a mask without sides; tables written before sides
    existed have bilateral rows only) and the sessions left out because their
    table cannot be read (participant_id, session_id, reason).
    """
    frames, excluded = [], []
    expected = [c for c in volumes_columns() if c in ("method", "contrast", "n_voxels", "volume_ml")]
    for row in volume_files.itertuples():
        try:
            table = read_tsv_with_columns(row.path, expected)
        except TSV_READ_ERRORS as err:
            reason = f"cannot read {row.path}: {err}"
            LOGGER.error("%s %s left out: %s", row.participant_id, row.session_id or "", reason)
            excluded.append({"participant_id": row.participant_id, "session_id": row.session_id, "reason": reason})
            continue
        if "hemisphere" not in table:
            table.insert(table.columns.get_loc("contrast") + 1, "hemisphere", "bilateral")
        table.insert(0, "session_id", row.session_id)
        table.insert(0, "participant_id", row.participant_id)
        frames.append(table)
    columns = ["participant_id", "session_id", *volumes_columns()]
    volumes = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return add_asymmetry(volumes), pd.DataFrame(excluded, columns=["participant_id", "session_id", "reason"])


def read_bids_table(path: Path, id_columns: tuple[str, ...]) -> pd.DataFrame:
    """A clinical BIDS table (``participants.tsv``, ``*_sessions.tsv``), checked before it is joined.

    Raises
    ------
    ThalamusError
        Exit 65, naming the file (and line or id), when it is empty, binary,
        not UTF-8, ragged (a row with more or fewer fields than the header),
        lacks an id column, or lists an id twice (that would duplicate the
        id's volumes and inflate n).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ThalamusError(f"cannot read {path}: {err.strerror or err}", EXIT_NOINPUT) from err
    if b"\0" in raw:
        raise ThalamusError(f"{path} is not a text table: it holds binary data")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ThalamusError(f"{path} is not UTF-8 text (byte {err.start})") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ThalamusError(f"{path} is empty: a BIDS table starts with a header line")
    header = lines[0].split("\t")
    duplicated_columns = sorted({c for c in header if header.count(c) > 1})
    if duplicated_columns:
        raise ThalamusError(f"{path}: column(s) {', '.join(duplicated_columns)} appear more than once in the header")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() and all(not rest.strip() for rest in lines[number - 1:]):
            break  # trailing blank lines
        fields = len(line.split("\t"))
        if fields != len(header):
            raise ThalamusError(f"{path} line {number}: {fields} tab-separated fields, the header has {len(header)}")
    for column in id_columns:
        if column not in header:
            raise ThalamusError(f"{path} has no {column} column")
    table = read_tsv(path)
    for column in id_columns:
        table[column] = table[column].astype("string").str.strip()
    duplicated = table[table.duplicated(list(id_columns), keep=False)]
    if not duplicated.empty:
        ids = sorted({" ".join(str(v) for v in key) for key in duplicated[list(id_columns)].itertuples(index=False)})
        raise ThalamusError(f"{path} lists {', '.join(ids)} more than once; each {id_columns[-1]} must appear once")
    return table.astype({column: object for column in id_columns})


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
    columns join on participant and session. Missing tables are fine; a
    participant missing from ``participants.tsv`` is a warning listing them.

    Raises
    ------
    ThalamusError
        Exit 65 for a table that cannot be joined (see :func:`read_bids_table`).
    """
    bids_dir = Path(bids_dir)
    joined = volumes
    participants_file = bids_dir / "participants.tsv"
    if participants_file.is_file():
        participants = read_bids_table(participants_file, ("participant_id",))
        absent = sorted(set(volumes["participant_id"]) - set(participants["participant_id"]))
        if absent:
            LOGGER.warning("%d participant(s) missing from %s (their demographic columns are n/a): %s",
                           len(absent), participants_file, ", ".join(absent))
        clash = [c for c in participants.columns if c in joined.columns and c != "participant_id"]
        participants = participants.rename(columns={c: f"{c}_participants" for c in clash})
        joined = joined.merge(participants, on="participant_id", how="left", validate="many_to_one")
    else:
        LOGGER.warning("no participants.tsv in %s: volumes are not joined with demographics", bids_dir)
    session_tables = []
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        table = read_bids_table(path, ("session_id",))
        table.insert(0, "participant_id", path.parent.name)
        session_tables.append(table)
    if session_tables:
        sessions = pd.concat(session_tables, ignore_index=True)
        clash = [c for c in sessions.columns if c in joined.columns and c not in ("participant_id", "session_id")]
        sessions = sessions.rename(columns={c: f"{c}_sessions" for c in clash})
        joined = joined.merge(sessions, on=["participant_id", "session_id"], how="left", validate="many_to_one")
    return joined


def column_descriptions(table: pd.DataFrame, bids_dir: Path) -> dict:
    """Sidecar for group/volumes.tsv: our columns plus those of participants.json."""
    import json

    from thalamus_bidsapp.group.harmonize import VOLUME_COLUMNS
    from thalamus_bidsapp.group.scanners import SCANNER_COLUMNS

    described = dict(GROUP_VOLUMES_COLUMNS)
    described.update({k: v for k, v in {**SCANNER_COLUMNS, **VOLUME_COLUMNS}.items() if k in table})
    participants_json = Path(bids_dir) / "participants.json"
    if participants_json.is_file():
        try:
            described.update({k: v for k, v in json.loads(participants_json.read_text()).items() if k in table})
        except json.JSONDecodeError:
            LOGGER.warning("cannot parse %s; its column descriptions are not copied", participants_json)
    for column in table.columns:
        described.setdefault(column, "Copied from the input dataset's participants or sessions table")
    return described
