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
already there. A stream that cannot run is logged by the method and gives no
rows; a failure is logged and leaves the other outputs as they were.
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
from thalamus_bidsapp.image.masks import voxel_volume_mm3
from thalamus_bidsapp.image.sides import LEFT, RIGHT
from thalamus_bidsapp.stats.change import (
    CHANGE_COLUMN_DESCRIPTIONS,
    CHANGE_COLUMNS,
    order_sessions,
)
from thalamus_bidsapp.workflows.longitudinal import LONG_SUFFIX, LongSession, published_sessions
from thalamus_bidsapp.workflows.longitudinal_outputs import (
    TABLE_SUFFIX,
    cross_sectional_rows,
    longitudinal_rows,
    output_uri,
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
    """Run or reuse ``method``'s stream for one subject, publish its masks and merge its rows into the table."""
    output_dir, bids_dir = Path(config.output_dir), Path(config.bids_dir)
    sessions, _ = published_sessions(output_dir, subject)
    if len(sessions) < 2:
        return "skipped: fewer than two sessions with a processed T1w"
    raw_t1w = {s.label: _raw_t1w(bids_dir, subject, s.label) for s in sessions}
    dates = session_dates(bids_dir, subject, [s.label for s in sessions], raw_t1w)
    ordered, _how = order_sessions({label: date.when for label, date in dates.items()})
    by_label = {s.label: s for s in sessions}
    sessions = [by_label[label] for label in ordered]
    result = method.longitudinal_stream(config, subject, [(s.label, s.t1w) for s in sessions], threads)
    if result.skipped is not None:
        return f"skipped: {result.skipped}; no {method.name} longitudinal rows"
    volumes = {}
    for session in sessions:
        if session.label in result.sides:
            volumes[session.label] = side_volumes(result.sides[session.label])
            publish_session(output_dir, subject, method.name, session, result.sides[session.label],
                            {**result.sidecars.get(session.label, {}), "VolumesML": volumes[session.label]})
    _remove_stale(output_dir, subject, method.name, set(volumes))
    measured = [label for label in ordered if label in volumes]
    rows = longitudinal_rows(subject, method.name, volumes, measured, dates)
    table_path = merge_rows(output_dir, subject, method.name, rows, ordered, dates)
    LOGGER.info("sub-%s: %s longitudinal rows written to %s (%d rows)", subject, method.name, table_path, len(rows))
    return f"ok: {len(volumes)} sessions measured, {len(rows)} change rows"


def side_volumes(labels: nib.spatialimages.SpatialImage) -> dict[str, float]:
    """Left, right and bilateral volume in mL of a side map (voxels counted on its grid, as the masks are)."""
    data = np.asanyarray(labels.dataobj)
    voxel_ml = voxel_volume_mm3(labels) / 1000.0
    left, right = int(np.count_nonzero(data == LEFT)) * voxel_ml, int(np.count_nonzero(data == RIGHT)) * voxel_ml
    return {"left": left, "right": right, "bilateral": left + right}


def publish_session(output_dir: Path, subject: str, method: str, session: LongSession, labels: nib.Nifti1Image,
                    provenance: dict) -> list[Path]:
    """The session's ``desc-<method>Long`` mask and dseg (with sidecars and the dseg's lookup table)."""
    name = f"sub-{subject}_ses-{session.label}"
    anat = Path(output_dir) / f"sub-{subject}" / f"ses-{session.label}" / "anat"
    desc = f"{method}{LONG_SUFFIX}"
    sidecar = {"Method": method, "Mode": "longitudinal", **provenance,
               "SpatialReference": output_uri(session.t1w, output_dir), "LesionFilled": session.lesion_filled}
    data = np.asanyarray(labels.dataobj)
    out = []
    mask = anat / f"{name}_space-T1w_label-thalamus_desc-{desc}_mask.nii.gz"
    dseg = anat / f"{name}_space-T1w_seg-thalamus_desc-{desc}_dseg.nii.gz"
    for path, image in ((mask, nib.Nifti1Image((data > 0).astype(np.uint8), labels.affine)), (dseg, labels)):
        save_nifti(image, path)
        sidecar_path = path.with_name(path.name.replace(".nii.gz", ".json"))
        sidecar_path.write_text(json_text(sidecar))
        out += [path, sidecar_path]
    lookup = pd.DataFrame({"index": [LEFT, RIGHT], "name": ["Left-Thalamus", "Right-Thalamus"],
                           "abbreviation": ["LTh", "RTh"]})
    tsv = dseg.with_name(dseg.name.replace(".nii.gz", ".tsv"))
    write_tsv(lookup, tsv)
    return out + [tsv]


def merge_rows(output_dir: Path, subject: str, method: str, rows: pd.DataFrame, ordered: list[str],
               dates: dict[str, AcquisitionDate]) -> Path:
    """Put ``method``'s longitudinal rows into the subject's change table, replacing its earlier ones.

    Without a table (the template-based step did not write one), the table is
    made here with the cross-sectional rows of every method beside them.
    """
    path = Path(output_dir) / f"sub-{subject}" / "anat" / f"sub-{subject}_{TABLE_SUFFIX}"
    existing = None
    if path.is_file():
        try:
            existing = read_tsv(path)
        except TSV_READ_ERRORS as err:
            LOGGER.warning("%s: unreadable (%s): written anew", path, err)
    if existing is None:
        existing = cross_sectional_rows(output_dir, subject, ordered, dates)
    else:
        existing = existing[~((existing["method"] == method) & (existing["mode"] == "longitudinal"))]
    frames = [f for f in (existing, rows) if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CHANGE_COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(table[list(CHANGE_COLUMNS)], path, CHANGE_COLUMN_DESCRIPTIONS)
    return path


def _remove_stale(output_dir: Path, subject: str, method: str, keep: set[str]) -> None:
    """The ``desc-<method>Long`` files of sessions not measured this time."""
    for session_dir in (Path(output_dir) / f"sub-{subject}").glob("ses-*"):
        if session_dir.name[len("ses-"):] in keep:
            continue
        for path in sorted((session_dir / "anat").glob(f"*_desc-{method}{LONG_SUFFIX}_*")):
            path.unlink(missing_ok=True)
            LOGGER.info("removed %s: its session is not in the %s longitudinal set", path, method)


def _raw_t1w(bids_dir: Path, subject: str, session: str) -> Path | None:
    found = sorted((bids_dir / f"sub-{subject}" / f"ses-{session}" / "anat").glob("*_T1w.nii*"))
    return found[0] if found else None

