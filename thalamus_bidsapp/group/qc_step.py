"""Group level, QC step: ``group/qc.tsv``, ``qc_status`` in the volumes, and ``--qc-exclude``."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.qc.group import (
    EXCLUDED_BY_QC,
    GROUP_QC_COLUMNS,
    GROUP_QC_DESCRIPTIONS,
    KEYS,
    MEASUREMENT_SETTINGS,
    flag_reasons,
    flagged,
    group_checks,
    read_session_qc,
    rejudge_session_qc,
    with_group_status,
)
from thalamus_bidsapp.qc.thresholds import default_thresholds, load_thresholds
from thalamus_bidsapp.stats.qc import FAIL, WARN

LOGGER = logging.getLogger(__name__)


def run_qc_step(config: RunConfig, qc_files: pd.DataFrame, volumes: pd.DataFrame, mask_files: pd.DataFrame,
                group_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Write ``group/qc.tsv``; return the volumes with ``qc_status`` and the masks, less those ``--qc-exclude`` drops.

    Parameters
    ----------
    qc_files
        participant_id, session_id, path of the sessions' QC tables (those used).
    volumes
        The group volumes table with the clinical columns joined (for the visit times).
    mask_files
        participant_id, session_id, method, path of the masks for the agreement analyses.

    Returns
    -------
    volumes, mask_files, excluded
        ``excluded``: participant_id, session_id, reason of each mask left out by ``--qc-exclude``.
    """
    thresholds = load_thresholds(config.qc_thresholds)
    _note_measurement_settings(config, thresholds)
    acq_time, time_years = _time_columns(config, volumes)
    # The sessions' recorded values are judged by this run's thresholds (--qc-thresholds reaches every check).
    qc = pd.concat([rejudge_session_qc(read_session_qc(qc_files), thresholds),
                    group_checks(volumes, thresholds, acq_time=acq_time, time_years=time_years)], ignore_index=True)
    qc = qc.sort_values(["participant_id", "session_id", "method", "contrast"], na_position="first", kind="stable",
                        ignore_index=True)[GROUP_QC_COLUMNS]
    write_tsv(qc, group_dir / "qc.tsv", GROUP_QC_DESCRIPTIONS)
    volumes = with_group_status(volumes, qc)
    flags = flagged(volumes, WARN)
    n_masks = len(volumes.drop_duplicates(KEYS))
    LOGGER.info("QC (thresholds: %s, applied to the sessions' checks too): %d of %d masks flagged (%d fail, "
                "%d warn); every check is in group/qc.tsv", config.qc_thresholds or "the packaged defaults",
                len(flags), n_masks, int((flags["qc_status"] == FAIL).sum()), int((flags["qc_status"] == WARN).sum()))
    for row, line in zip(flags.itertuples(), flag_reasons(qc, flags)):
        LOGGER.warning("QC flag: %s %s: %s", row.participant_id, row.session_id or "", line)
    excluded = pd.DataFrame(columns=["participant_id", "session_id", "reason"])
    if config.qc_exclude is None:
        if not flags.empty:
            LOGGER.info("flagged masks are kept in the group statistics (leave them out with --qc-exclude fail or "
                        "--qc-exclude warn)")
        return volumes, mask_files, excluded
    drop = flagged(volumes, config.qc_exclude)
    excluded = pd.DataFrame([{"participant_id": r.participant_id, "session_id": r.session_id,
                              "reason": f"{EXCLUDED_BY_QC} {config.qc_exclude}: {line}"}
                             for r, line in zip(drop.itertuples(), flag_reasons(qc, drop))],
                            columns=["participant_id", "session_id", "reason"])
    LOGGER.warning("--qc-exclude %s: %d of %d masks (%d session(s)) left out of the group statistics",
                   config.qc_exclude, len(drop), n_masks, len(drop.drop_duplicates(["participant_id", "session_id"])))
    return _without_masks(volumes, drop), _without_masks(mask_files, drop, by_contrast=False), excluded


def _note_measurement_settings(config: RunConfig, thresholds: dict) -> None:
    """Say that the settings that change a session's measurements are not applied again at group level."""
    defaults = default_thresholds()
    changed = [key for key in MEASUREMENT_SETTINGS if thresholds[key] != defaults[key]]
    if config.qc_thresholds is not None and changed:
        LOGGER.warning("--qc-thresholds %s: %s change(s) what the participant level measures, not only how it is "
                       "judged; the group level judges the recorded values by the file's warn/fail levels but "
                       "cannot measure again: rerun the participant level with this file to apply %s",
                       config.qc_thresholds, ", ".join(changed), "them" if len(changed) > 1 else "it")


def _without_masks(table: pd.DataFrame, drop: pd.DataFrame, by_contrast: bool = True) -> pd.DataFrame:
    """``table`` less the rows of the masks in ``drop`` (by session, method and, where present, contrast)."""
    if drop.empty or table.empty:
        return table
    keys = ["participant_id", "session_id", "method", *(["contrast"] if by_contrast else [])]

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame[keys].astype(object).where(frame[keys].notna(), "").astype(str).agg("\t".join, axis=1)

    return table[~key(table).isin(set(key(drop)))].reset_index(drop=True)


def _time_columns(config: RunConfig, volumes: pd.DataFrame) -> tuple[str | None, str | None]:
    """The columns of the visit times (``acq_time``, ``time_years`` roles of the clinical config), if present."""
    from thalamus_bidsapp.group.clinical_config import load_clinical_config

    clinical = load_clinical_config(config.clinical_config)
    return clinical.resolve("acq_time", volumes), clinical.resolve("time_years", volumes)
