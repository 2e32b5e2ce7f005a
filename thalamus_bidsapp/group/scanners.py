"""Group level: scanner, site and scanner change of each session, in group/volumes.tsv.

The scanner fields come from the sidecars of the images each session used
(:mod:`thalamus_bidsapp.bidsio.scanners`). The ``scanner`` and ``site`` of
a session are the sessions table's value when it gives one (it wins over the
sidecars, and the log says so), else the sidecars' (the scanner label; the
T1w's ``InstitutionName``), else participants.tsv's: the per-session
sources before the per-subject one, the user's before the images'. ``scanner_change`` is 1 when a session's scanner differs
from the one of the subject's previous session (sessions ordered by
``acq_time``, else by label), 0 when it is the same, n/a for a first session
or an unknown scanner; a ``scanner_change`` column of the sessions tables
wins as well.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv
from thalamus_bidsapp.bidsio.scanners import SCANNER_FIELDS, session_scanners
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.stats.longitudinal import order_visits

LOGGER = logging.getLogger(__name__)

SESSION_KEYS = ["participant_id", "session_id"]

#: Descriptions of the columns this step adds to group/volumes.tsv.
SCANNER_COLUMNS = {
    "scanner": "Scanner of the session: Manufacturer, ManufacturersModelName, MagneticFieldStrength (T) and "
               "'SN DeviceSerialNumber' of the T1w's sidecar (else the FLAIR's or R1 map's), unless the dataset's "
               "sessions or participants table has a scanner column, which wins",
    "site": "Site of the session: the T1w sidecar's InstitutionName, unless the dataset's sessions or "
            "participants table has a site column, which wins",
    "scanner_change": {"Description": "1 when the session's scanner differs from that of the subject's previous "
                                      "session (ordered by acq_time, else by label), 0 when the same; n/a for a "
                                      "first session or an unknown scanner. A scanner_change column of the "
                                      "sessions tables wins", "Levels": {"0": "same scanner", "1": "changed"}},
    "manufacturer": "Manufacturer of the T1w's scanner (its sidecar)",
    "manufacturers_model_name": "ManufacturersModelName of the T1w's sidecar",
    "magnetic_field_strength": {"Description": "MagneticFieldStrength of the T1w's sidecar", "Units": "T"},
    "device_serial_number": "DeviceSerialNumber of the T1w's sidecar",
    "institution_name": "InstitutionName of the T1w's sidecar",
    "software_versions": "SoftwareVersions of the T1w's sidecar",
    "flair_scanner": "Scanner label of the FLAIR used (its sidecar), as in scanner",
    "r1map_scanner": "Scanner label of the R1 map used (its sidecar), as in scanner",
}


def add_scanner_columns(volumes: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """``volumes`` with the scanner columns of :data:`SCANNER_COLUMNS` that the data allow.

    ``scanner`` and ``site`` are resolved per session: the sessions tables'
    value, else the sidecars' (the scanner label, the T1w's InstitutionName),
    else participants.tsv's; the log says how many sessions each source gave
    and where a sessions-table value overrode a different sidecar value.
    """
    if volumes.empty:
        return volumes
    found = session_scanners(volumes, config.output_dir, config.bids_dir, config.derivatives)
    n_known = int(found["scanner"].notna().sum()) if "scanner" in found else 0
    LOGGER.info("scanner fields found in the image sidecars of %d of %d session(s)", n_known, len(found))
    if "institution_name" in found:
        found["site"] = found["institution_name"]
    keys = found[SESSION_KEYS].assign(session_id=found["session_id"].fillna(""))
    volumes = volumes.copy()
    volume_keys = list(zip(volumes["participant_id"], volumes["session_id"].fillna("")))
    from_participants = _participants_header(config.bids_dir)
    for column in dict.fromkeys([*LABELS, *(c for c in found.columns if c not in SESSION_KEYS)]):
        values = found[column] if column in found else pd.Series(None, index=found.index, dtype=object)
        lookup = dict(zip(zip(keys["participant_id"], keys["session_id"]), values))
        sidecar = pd.Series([lookup.get(key) for key in volume_keys], index=volumes.index, dtype=object)
        if column in LABELS:
            if sidecar.notna().any() or any(n in volumes for n in (column, f"{column}_sessions")):
                volumes = _resolve_label(volumes, column, sidecar, from_participants)
        elif column in volumes:
            LOGGER.info("%s: the dataset's column is used; the sidecars' values are not", column)
        else:
            volumes[column] = sidecar
    return add_scanner_change(volumes)


#: The labels resolved per session across the sessions tables, the sidecars and participants.tsv.
LABELS = ("scanner", "site")


def _participants_header(bids_dir: Path) -> set[str]:
    """Column names of the dataset's participants.tsv (empty when it has none or it cannot be read)."""
    try:
        return set(read_tsv(Path(bids_dir) / "participants.tsv").columns)
    except TSV_READ_ERRORS:
        return set()


def _resolve_label(volumes: pd.DataFrame, column: str, sidecar: pd.Series, participants: set[str]) -> pd.DataFrame:
    """``column`` per row: the sessions tables' value, else the sidecars', else participants.tsv's (logged)."""
    # join_clinical names a clash <column>_sessions; an unsuffixed column counts as the sessions tables' unless
    # participants.tsv has it (then it is the participant's, and a sessions-table copy is <column>_sessions)
    sessions_name = next((n for n in (f"{column}_sessions", column) if n in volumes and not (
        n == column and column in participants)), None)
    participants_name = next((n for n in (f"{column}_participants", column) if n in volumes and (
        n != column or column in participants)), None)
    empty = pd.Series(None, index=volumes.index, dtype=object)
    given = volumes[sessions_name].astype(object).where(volumes[sessions_name].notna()) if sessions_name else empty
    fallback = (volumes[participants_name].astype(object).where(volumes[participants_name].notna())
                if participants_name else empty)
    sidecar = sidecar.where(sidecar.notna())
    resolved = given.combine_first(sidecar).combine_first(fallback)
    by_session = pd.DataFrame({"participant_id": volumes["participant_id"],
                               "session_id": volumes["session_id"].fillna(""), "given": given.notna(),
                               "sidecar": sidecar.notna(), "participants": fallback.notna(),
                               "differ": given.notna() & sidecar.notna() & (given.astype(str) != sidecar.astype(str))}
                              ).groupby(SESSION_KEYS).any()
    n_given, n_sidecar = int(by_session["given"].sum()), int((by_session["sidecar"] & ~by_session["given"]).sum())
    n_participants = int((by_session["participants"] & ~by_session["given"] & ~by_session["sidecar"]).sum())
    if n_given:
        LOGGER.info("%s: the dataset's %s column gives %d session(s) and wins over the sidecars (%d of them have "
                    "another sidecar value)", column, sessions_name, n_given, int(by_session["differ"].sum()))
    if n_participants or (participants_name and n_sidecar):
        LOGGER.info("%s: participants.tsv's %s column fills %d session(s) without a sessions-table or sidecar "
                    "value; the sidecars give %d", column, participants_name, n_participants, n_sidecar)
    if participants_name == column and (resolved.astype(str) != fallback.astype(str)).any():
        volumes = volumes.rename(columns={column: f"{column}_participants"})
    volumes[column] = resolved
    return volumes


def add_scanner_change(volumes: pd.DataFrame) -> pd.DataFrame:
    """Add ``scanner_change`` (vs the subject's previous session) unless the dataset gives it."""
    if "scanner_change" in volumes:
        LOGGER.info("scanner_change: the dataset's column is used, not derived from the scanners")
        return volumes
    scanner = next((c for c in ("scanner", "scanner_sessions", "scanner_participants") if c in volumes), None)
    if scanner is None or volumes["session_id"].isna().all():
        return volumes
    sessions = volumes[[*SESSION_KEYS, scanner, *(["acq_time"] if "acq_time" in volumes else [])]]
    sessions = sessions[sessions["session_id"].notna()].drop_duplicates(SESSION_KEYS)
    ordered = order_visits(sessions, acq_time="acq_time" if "acq_time" in sessions else None)
    ordered = ordered.sort_values(["participant_id", "visit_rank"])
    previous = ordered.groupby("participant_id")[scanner].shift(1)
    current = ordered[scanner]
    known = previous.notna() & current.notna() & (ordered["visit_rank"] > 0)
    change = np.where(known, (previous.astype(str) != current.astype(str)).astype(float), np.nan)
    lookup = dict(zip(zip(ordered["participant_id"], ordered["session_id"]), change))
    volumes = volumes.assign(scanner_change=[lookup.get((p, s), np.nan) for p, s in
                                             zip(volumes["participant_id"], volumes["session_id"])])
    n_changes = int(np.nansum(change))
    if n_changes:
        LOGGER.info("scanner_change: %d session(s) on another scanner than the subject's previous session", n_changes)
    return volumes


__all__ = ["SCANNER_COLUMNS", "SCANNER_FIELDS", "add_scanner_change", "add_scanner_columns"]
