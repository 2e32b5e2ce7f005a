"""Group level: scanner, site and scanner change of each session, in group/volumes.tsv.

The scanner fields come from the sidecars of the images each session used
(:mod:`thalamus_bidsapp.bidsio.scanners`). A ``scanner`` or ``site`` column
the dataset's participants.tsv or sessions tables give wins over the
sidecars (the log says so); the ``site`` is otherwise the T1w's
``InstitutionName``. ``scanner_change`` is 1 when a session's scanner differs
from the one of the subject's previous session (sessions ordered by
``acq_time``, else by label), 0 when it is the same, n/a for a first session
or an unknown scanner; a ``scanner_change`` column of the sessions tables
wins as well.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

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
    """``volumes`` with the scanner columns of :data:`SCANNER_COLUMNS` that the data allow."""
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
    for column in [c for c in found.columns if c not in SESSION_KEYS]:
        given = _given_column(volumes, column)
        if given is not None:
            if found[column].notna().any() and column in ("scanner", "site"):
                LOGGER.info("%s: the dataset's %s column is used; the sidecars' values are not", column, given)
            continue
        lookup = dict(zip(zip(keys["participant_id"], keys["session_id"]), found[column]))
        volumes[column] = [lookup.get(key) for key in volume_keys]
    return add_scanner_change(volumes)


def _given_column(volumes: pd.DataFrame, column: str) -> str | None:
    """The participants/sessions column that gives ``column`` (``site`` or ``site_sessions``), if any."""
    if column in ("scanner", "site"):
        for name in (column, f"{column}_sessions", f"{column}_participants"):
            if name in volumes and volumes[name].notna().any():
                return name
    return column if column in volumes else None


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
