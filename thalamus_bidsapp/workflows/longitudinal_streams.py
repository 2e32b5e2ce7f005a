"""Methods with their own longitudinal stream: ``desc-<method>Long`` masks and their change rows.

Runs after the template-based longitudinal step (which rewrites the change
table these rows join), for subjects with two or more sessions, once per
selected method that has a stream
(:class:`~thalamus_bidsapp.methods.capabilities.LongitudinalStream`:
FreeSurfer's ``recon-all -base``/``-long``). Each measured session's thalamus
(1 left, 2 right, on the session's T1w grid) is published as
``*_space-T1w_label-thalamus_desc-<method>Long_mask.nii.gz`` and ``_dseg``;
its volumes give the method's ``mode=longitudinal`` rows of
``sub-<label>_label-thalamus_desc-longitudinal_volumes.tsv``, beside the rows
already there. The method's files and the table are published together, as
the template-based step's are. A stream that cannot run is logged by the
method and gives no rows (its earlier files and rows are removed, logged); a
failure is logged and leaves the other outputs as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.acquisition_dates import AcquisitionDate, session_dates
from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, json_text, read_tsv, save_nifti, write_tsv
from thalamus_bidsapp.bidsio.staging import move_together, set_folder, staged_file
from thalamus_bidsapp.image.masks import voxel_volume_mm3
from thalamus_bidsapp.image.sides import LEFT, RIGHT
from thalamus_bidsapp.stats.change import (
    CHANGE_COLUMN_DESCRIPTIONS,
    CHANGE_COLUMNS,
    order_sessions,
)
from thalamus_bidsapp.workflows.longitudinal import LONG_SUFFIX, LongSession, published_sessions
from thalamus_bidsapp.workflows.longitudinal_outputs import (
    change_table_path,
    cross_sectional_rows,
    longitudinal_rows,
    output_uri,
    stage_side_lookup,
)

if TYPE_CHECKING:
    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.methods import ToolCheck
    from thalamus_bidsapp.methods.base import SegmentationMethod

LOGGER = logging.getLogger(__name__)


def longitudinal_streams_step(config: RunConfig, sessions: Iterable[SessionInputs], tools: ToolCheck,
                              threads: int = 1) -> dict[str, dict[str, str]]:
    """Every selected method's own longitudinal stream, per subject with two or more T1w sessions.

    ``sessions``: the run's :class:`~thalamus_bidsapp.bidsio.inputs.SessionInputs`; ``tools``: its tool
    check (its methods are the run's). Returns method -> subject -> outcome.
    """
    from thalamus_bidsapp.methods.capabilities import LongitudinalStream
    from thalamus_bidsapp.methods.registry import all_methods

    counts: dict[str, int] = {}
    for session in sessions:
        if session.t1w is not None and session.session:
            counts[session.subject] = counts.get(session.subject, 0) + 1
    subjects = sorted(k for k, n in counts.items() if n >= 2)
    outcomes: dict[str, dict[str, str]] = {}
    for method in all_methods():
        if not subjects or not isinstance(method, LongitudinalStream):
            continue
        if method.name not in tools.reasons:
            LOGGER.info("%s longitudinal stream not run: %s is not among the run's methods", method.name, method.name)
            continue
        if tools.status(method.name).reason is not None:
            LOGGER.warning("%s longitudinal stream not run: %s", method.name, tools.status(method.name).reason)
            continue
        outcomes[method.name] = {}
        for subject in subjects:
            try:
                outcome = run_subject(config, method, subject, threads=threads)
            except Exception as err:  # noqa: BLE001 - the other outputs stand; the log says why
                LOGGER.error("sub-%s: %s longitudinal stream failed: %s", subject, method.name, err)
                outcome = f"failed: {err}"
            LOGGER.info("sub-%s: %s longitudinal stream %s", subject, method.name, outcome)
            outcomes[method.name][subject] = outcome
    return outcomes


def run_subject(config: RunConfig, method: SegmentationMethod, subject: str, *, threads: int = 1) -> str:
    """Run or reuse ``method``'s stream for one subject and publish its set: masks, dsegs and change rows.

    The set is staged and moved into place together (the earlier set stays
    whole when a file cannot be written); files of the method's earlier set
    that the new one lacks are removed after the moves. A skipped stream
    withdraws the earlier set, so that nothing stale looks current.
    """
    output_dir, bids_dir = Path(config.output_dir), Path(config.bids_dir)
    sessions, _ = published_sessions(output_dir, subject)
    if len(sessions) < 2:
        why = "fewer than two sessions with a processed T1w"
        withdraw(output_dir, subject, method.name, why)
        return f"skipped: {why}"
    raw_t1w = {s.label: _raw_t1w(bids_dir, subject, s.label) for s in sessions}
    dates = session_dates(bids_dir, subject, [s.label for s in sessions], raw_t1w)
    ordered, _how = order_sessions({label: date.when for label, date in dates.items()})
    by_label = {s.label: s for s in sessions}
    sessions = [by_label[label] for label in ordered]
    result = method.longitudinal_stream(config, subject, [(s.label, s.t1w) for s in sessions], threads)
    if result.skipped is not None:
        withdraw(output_dir, subject, method.name, result.skipped)
        return f"skipped: {result.skipped}; no {method.name} longitudinal rows"
    volumes = {s.label: side_volumes(result.sides[s.label]) for s in sessions if s.label in result.sides}
    measured = [label for label in ordered if label in volumes]
    rows = longitudinal_rows(subject, method.name, volumes, measured, dates)
    table_rel = change_table_path(Path(), subject)
    with set_folder(output_dir, f"{method.name}{LONG_SUFFIX}-sub-{subject}") as staging:
        for session in sessions:
            if session.label in volumes:
                stage_session(staging, output_dir, subject, method.name, session, result.sides[session.label],
                              {**result.sidecars.get(session.label, {}), "VolumesML": volumes[session.label]})
        table = merged_table(output_dir, subject, method.name, rows, ordered, dates)
        write_tsv(table, staged_file(staging, table_rel), CHANGE_COLUMN_DESCRIPTIONS)
        _, removed = move_together(staging, output_dir, _long_files(output_dir, subject, method.name))
    for path in removed:
        LOGGER.info("removed %s: its session is not in the %s longitudinal set", path, method.name)
    LOGGER.info("sub-%s: %s longitudinal rows written to %s (%d rows)", subject, method.name, output_dir / table_rel,
                len(rows))
    return f"ok: {len(volumes)} sessions measured, {len(rows)} change rows"


def side_volumes(labels: nib.spatialimages.SpatialImage) -> dict[str, float]:
    """Left, right and bilateral volume in mL of a side map (voxels counted on its grid, as the masks are)."""
    data = np.asanyarray(labels.dataobj)
    voxel_ml = voxel_volume_mm3(labels) / 1000.0
    left, right = int(np.count_nonzero(data == LEFT)) * voxel_ml, int(np.count_nonzero(data == RIGHT)) * voxel_ml
    return {"left": left, "right": right, "bilateral": left + right}


def stage_session(staging: Path, output_dir: Path, subject: str, method: str, session: LongSession,
                  labels: nib.Nifti1Image, provenance: dict) -> list[Path]:
    """Write the session's ``desc-<method>Long`` mask and dseg (sidecars, the dseg's lookup table) below ``staging``.

    ``staging`` is laid out like ``output_dir``; returns the files' paths relative to it.
    """
    name = f"sub-{subject}_ses-{session.label}"
    anat = Path(f"sub-{subject}") / f"ses-{session.label}" / "anat"
    desc = f"{method}{LONG_SUFFIX}"
    sidecar = {"Method": method, "Mode": "longitudinal", **provenance,
               "SpatialReference": output_uri(session.t1w, output_dir), "LesionFilled": session.lesion_filled}
    data = np.asanyarray(labels.dataobj)
    out = []
    mask = anat / f"{name}_space-T1w_label-thalamus_desc-{desc}_mask.nii.gz"
    dseg = anat / f"{name}_space-T1w_seg-thalamus_desc-{desc}_dseg.nii.gz"
    for relative, image in ((mask, nib.Nifti1Image((data > 0).astype(np.uint8), labels.affine)), (dseg, labels)):
        save_nifti(image, staged_file(staging, relative))
        sidecar_rel = relative.with_name(relative.name.replace(".nii.gz", ".json"))
        staged_file(staging, sidecar_rel).write_text(json_text(sidecar))
        out += [relative, sidecar_rel]
    return out + [stage_side_lookup(staging, dseg)]


def merged_table(output_dir: Path, subject: str, method: str, rows: pd.DataFrame, ordered: list[str],
                 dates: dict[str, AcquisitionDate]) -> pd.DataFrame:
    """The subject's change table with ``method``'s longitudinal rows put in place of its earlier ones.

    Without a table (the template-based step did not write one), the table is
    made here with the cross-sectional rows of every method beside them.
    """
    existing = _read_table(change_table_path(output_dir, subject), "written anew")
    if existing is None:
        existing = cross_sectional_rows(output_dir, subject, ordered, dates)
    else:
        existing = existing[~_rows_of(existing, method)]
    frames = [f for f in (existing, rows) if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CHANGE_COLUMNS))
    return table[list(CHANGE_COLUMNS)]


def withdraw(output_dir: Path, subject: str, method: str, why: str) -> list[Path]:
    """Remove ``method``'s earlier longitudinal set of ``subject``: its ``desc-<method>Long`` files and change rows.

    For a stream that did not run this time (``why``): its earlier outputs are
    no longer current. The table without those rows and the removals are
    published together, as a set is; each removal is logged. Returns the
    files removed.
    """
    table_path = change_table_path(output_dir, subject)
    existing = _read_table(table_path, "its earlier rows are left as they are")
    table = None
    if existing is not None and _rows_of(existing, method).any():
        table = existing[~_rows_of(existing, method)]
    stale = _long_files(output_dir, subject, method)
    if table is None and not stale:
        return []
    with set_folder(output_dir, f"{method}{LONG_SUFFIX}-sub-{subject}") as staging:
        if table is not None:
            write_tsv(table, staged_file(staging, change_table_path(Path(), subject)), CHANGE_COLUMN_DESCRIPTIONS)
        _, removed = move_together(staging, output_dir, stale)
    for path in removed:
        LOGGER.warning("removed %s: the %s longitudinal stream did not run this time (%s)", path, method, why)
    if table is not None:
        LOGGER.warning("%s: %d earlier %s longitudinal rows removed: the stream did not run this time (%s)",
                       table_path, len(existing) - len(table), method, why)
    return removed


def _read_table(path: Path, otherwise: str) -> pd.DataFrame | None:
    """The change table at ``path``; None when there is none, or (logged with ``otherwise``) when unreadable."""
    if not path.is_file():
        return None
    try:
        table = read_tsv(path)
    except TSV_READ_ERRORS as err:
        LOGGER.warning("%s: unreadable (%s): %s", path, err, otherwise)
        return None
    missing = [c for c in CHANGE_COLUMNS if c not in table.columns]
    if missing:
        LOGGER.warning("%s: no column %s: %s", path, ", ".join(missing), otherwise)
        return None
    return table[list(CHANGE_COLUMNS)]


def _rows_of(table: pd.DataFrame, method: str) -> pd.Series:
    return (table["method"] == method) & (table["mode"] == "longitudinal")


def _long_files(output_dir: Path, subject: str, method: str) -> list[Path]:
    """Every published ``desc-<method>Long`` file of the subject's sessions."""
    found = []
    for session_dir in (Path(output_dir) / f"sub-{subject}").glob("ses-*"):
        found += [p for p in (session_dir / "anat").glob(f"*_desc-{method}{LONG_SUFFIX}_*")
                  if p.is_file() and not p.name.startswith(".")]
    return sorted(found)


def _raw_t1w(bids_dir: Path, subject: str, session: str) -> Path | None:
    found = sorted((bids_dir / f"sub-{subject}" / f"ses-{session}" / "anat").glob("*_T1w.nii*"))
    return found[0] if found else None

