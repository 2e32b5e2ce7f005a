"""When each session was acquired, from the input dataset's own records.

In order of preference: ``sub-<label>_sessions.tsv`` ``acq_time``, the T1w
sidecar's ``AcquisitionDateTime`` (or ``AcquisitionDate``), the session's
``scans.tsv`` ``acq_time`` of the T1w. BIDS allows shifted (anonymised)
dates: only the differences are used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcquisitionDate:
    """A session's acquisition time (None when unknown) and where it came from, or why it is unknown."""

    when: datetime | None
    source: str


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 date or date-time (BIDS ``acq_time``), or None when it is empty or not a date."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    if not text or text.lower() == "n/a":
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Mixed naive and zone-aware times cannot be subtracted; BIDS times are local scanner times.
    return parsed.replace(tzinfo=None)


def session_dates(bids_dir: Path, subject: str, sessions: list[str],
                  t1w_files: dict[str, Path | None] | None = None) -> dict[str, AcquisitionDate]:
    """The acquisition date of each session of ``subject`` (labels without ``ses-``).

    ``t1w_files``: each session's input T1w (for its sidecar and its row of scans.tsv).
    """
    bids_dir = Path(bids_dir)
    table = _sessions_table(bids_dir, subject)
    found = {}
    for session in sessions:
        t1w = (t1w_files or {}).get(session)
        for source, when in (("sessions.tsv acq_time", table.get(f"ses-{session}")),
                             ("T1w sidecar AcquisitionDateTime", _sidecar_time(t1w)),
                             ("scans.tsv acq_time", _scans_time(bids_dir, subject, session, t1w))):
            if when is not None:
                found[session] = AcquisitionDate(when, source)
                break
        else:
            found[session] = AcquisitionDate(None, "no acq_time in sessions.tsv or scans.tsv and no "
                                                   "AcquisitionDateTime in the T1w sidecar")
    return found


def _sessions_table(bids_dir: Path, subject: str) -> dict[str, datetime | None]:
    path = bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        LOGGER.warning("cannot read %s: %s; session dates are taken from elsewhere", path, err)
        return {}
    if "session_id" not in table or "acq_time" not in table:
        return {}
    return {str(row.session_id): parse_time(row.acq_time) for row in table.itertuples()}


def _sidecar_time(t1w: Path | None) -> datetime | None:
    if t1w is None:
        return None
    name = Path(t1w).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            sidecar = Path(t1w).with_name(name[: -len(ext)] + ".json")
            break
    else:
        return None
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    when = parse_time(meta.get("AcquisitionDateTime"))
    if when is None and meta.get("AcquisitionDate"):
        when = parse_time(f"{meta['AcquisitionDate']}T{meta.get('AcquisitionTime', '00:00:00')}")
    return when


def _scans_time(bids_dir: Path, subject: str, session: str, t1w: Path | None) -> datetime | None:
    folder = bids_dir / f"sub-{subject}" / f"ses-{session}"
    path = folder / f"sub-{subject}_ses-{session}_scans.tsv"
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if "filename" not in table or "acq_time" not in table:
        return None
    rows = table[table["filename"].str.endswith("_T1w.nii.gz") | table["filename"].str.endswith("_T1w.nii")]
    if t1w is not None:
        named = rows[rows["filename"].map(lambda f: Path(f).name) == Path(t1w).name]
        rows = named if not named.empty else rows
    times = [t for t in (parse_time(v) for v in rows["acq_time"]) if t is not None]
    return min(times) if times else None
