"""``group/longitudinal_change.tsv``: every subject's change table, one after the other."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv_with_columns, write_tsv
from thalamus_bidsapp.stats.change import CHANGE_COLUMN_DESCRIPTIONS, CHANGE_COLUMNS

LOGGER = logging.getLogger(__name__)

TABLE_GLOB = "sub-*/anat/sub-*_label-thalamus_desc-longitudinal_volumes.tsv"


def gather_change_tables(output_dir: Path, participant_labels: tuple[str, ...] = ()) -> pd.DataFrame:
    """The per-subject change tables of ``output_dir`` (only the labelled subjects when labels are given)."""
    wanted = {label if label.startswith("sub-") else f"sub-{label}" for label in participant_labels}
    frames = []
    for path in sorted(Path(output_dir).glob(TABLE_GLOB)):
        subject = path.parts[-3]
        if wanted and subject not in wanted:
            continue
        try:
            frames.append(read_tsv_with_columns(path, CHANGE_COLUMNS)[list(CHANGE_COLUMNS)])
        except TSV_READ_ERRORS as err:
            LOGGER.error("%s: unreadable (%s): left out of group/longitudinal_change.tsv", path, err)
    if not frames:
        return pd.DataFrame(columns=list(CHANGE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def write_change_table(output_dir: Path, group_dir: Path, participant_labels: tuple[str, ...] = (),
                       table: pd.DataFrame | None = None) -> Path | None:
    """Write ``longitudinal_change.tsv`` into ``group_dir`` when any subject has a change table.

    ``table``: the tables already gathered by :func:`gather_change_tables` (read here when None).
    """
    if table is None:
        table = gather_change_tables(output_dir, participant_labels)
    if table.empty:
        LOGGER.info("no longitudinal change tables: group/longitudinal_change.tsv not written")
        return None
    path = write_tsv(table, Path(group_dir) / "longitudinal_change.tsv", CHANGE_COLUMN_DESCRIPTIONS)
    LOGGER.info("group/longitudinal_change.tsv: %d rows from %d subjects", len(table),
                table["participant_id"].nunique())
    return path
