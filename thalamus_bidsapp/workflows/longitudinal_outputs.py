"""Longitudinal mode of the participant level: per subject, measure (or reuse), then publish one set of outputs.

Published per subject (see README, Longitudinal):

- ``sub-<label>/anat/sub-<label>_desc-longitudinaltemplate_T1w.nii.gz`` and
  ``sub-<label>_seg-thalamus_desc-<method>LongTemplate_dseg.nii.gz``;
- per session ``*_space-T1w_label-thalamus_desc-<method>Long_mask.nii.gz`` and
  ``*_space-T1w_seg-thalamus_desc-<method>Long_dseg.nii.gz`` (the template's
  thalamus carried into the session), and the rigid transform
  ``*_from-T1w_to-longitudinal_mode-image_xfm.txt``;
- ``sub-<label>/anat/sub-<label>_label-thalamus_desc-longitudinal_volumes.tsv``:
  the change table, both modes, every consecutive pair.

Everything is written to a hidden staging folder first and then moved into
place together; the longitudinal files of sessions no longer in the set are
removed in the same step.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.acquisition_dates import session_dates
from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, json_text, read_tsv, save_nifti, write_tsv
from thalamus_bidsapp.stats.change import (
    CHANGE_COLUMN_DESCRIPTIONS,
    CHANGE_COLUMNS,
    change_rows,
    interval_years,
    order_sessions,
)
from thalamus_bidsapp.workflows.longitudinal import (
    CHANGE_METHOD,
    LONG_SUFFIX,
    LongSession,
    SubjectLongitudinal,
    TemplateSegmenter,
    cache_key,
    measure_subject,
    published_sessions,
    read_cache,
    session_labels_image,
    write_cache,
)

LOGGER = logging.getLogger(__name__)

TEMPLATE_DESC = "longitudinaltemplate"
TABLE_SUFFIX = "label-thalamus_desc-longitudinal_volumes.tsv"
def run_longitudinal(output_dir: Path, bids_dir: Path, work_dir: Path, subjects: list[str], *,
                     segmenter: TemplateSegmenter, threads: int = 1) -> dict[str, str]:
    """Longitudinal mode for each subject (labels without ``sub-``); returns subject -> outcome, for the log.

    A subject's failure is logged and leaves its earlier longitudinal outputs as they were.
    """
    outcomes = {}
    for subject in subjects:
        try:
            outcomes[subject] = _run_subject(Path(output_dir), Path(bids_dir), Path(work_dir), subject,
                                             segmenter=segmenter, threads=threads)
        except Exception as err:  # noqa: BLE001 - the cross-sectional outputs stand; the log says why
            LOGGER.error("sub-%s: longitudinal mode failed: %s", subject, err)
            outcomes[subject] = f"failed: {err}"
    return outcomes


def _run_subject(output_dir: Path, bids_dir: Path, work_dir: Path, subject: str, *,
                 segmenter: TemplateSegmenter, threads: int) -> str:
    sessions, notes = published_sessions(output_dir, subject)
    for note in notes:
        LOGGER.warning("sub-%s: longitudinal mode: %s", subject, note)
    if len(sessions) < 2:
        LOGGER.info("sub-%s: longitudinal mode skipped: %d session with a processed T1w (two are needed); "
                    "no change rows", subject, len(sessions))
        return "skipped: fewer than two sessions"
    raw_t1w = {s.label: _raw_t1w(bids_dir, subject, s.label) for s in sessions}
    dates = session_dates(bids_dir, subject, [s.label for s in sessions], raw_t1w)
    ordered, how = order_sessions({label: date.when for label, date in dates.items()})
    LOGGER.info("sub-%s: longitudinal mode, sessions %s (%s)", subject, ", ".join(ordered), how)
    for label, date in dates.items():
        if date.when is None:
            LOGGER.warning("sub-%s_ses-%s: %s: annualized change left empty", subject, label, date.source)
    by_label = {s.label: s for s in sessions}
    sessions = [by_label[label] for label in ordered]
    filled = [s.label for s in sessions if s.lesion_filled]
    if filled and len(filled) < len(sessions):
        LOGGER.info("sub-%s: lesion-filled T1w used for ses-%s only (the others have no lesion mask)",
                    subject, ", ses-".join(filled))
    result = _measure_or_reuse(work_dir, subject, sessions, segmenter, threads)
    previous = _previous_sessions(output_dir, subject)
    if previous is not None and previous != [s.label for s in sessions]:
        LOGGER.info("sub-%s: the within-subject template was redone: sessions %s, before %s", subject,
                    ", ".join(s.label for s in sessions), ", ".join(previous))
    table = change_table(output_dir, subject, result, ordered, dates)
    left_out = notes + [f"ses-{label}: registration to the template failed: {err}: left out of the longitudinal rows"
                        for label, err in result.failed.items()]
    _publish(output_dir, subject, result, table, dates, how, previous, left_out=left_out)
    return f"ok: {len(result.volumes)} sessions measured, {len(table)} change rows"


def _measure_or_reuse(work_dir: Path, subject: str, sessions: list[LongSession], segmenter: TemplateSegmenter,
                      threads: int) -> SubjectLongitudinal:
    folder = work_dir / "longitudinal" / f"sub-{subject}" / cache_key(sessions, segmenter.method)
    cached = read_cache(folder, subject, sessions)
    if cached is not None:
        LOGGER.info("sub-%s: longitudinal results reused from %s", subject, folder)
        return cached
    result = measure_subject(subject, sessions, segmenter=segmenter, threads=threads)
    LOGGER.info("sub-%s: longitudinal timings (s): %s", subject,
                ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    write_cache(folder, result)
    return result


def _raw_t1w(bids_dir: Path, subject: str, session: str) -> Path | None:
    found = sorted((bids_dir / f"sub-{subject}" / f"ses-{session}" / "anat").glob("*_T1w.nii*"))
    return found[0] if found else None


def _previous_sessions(output_dir: Path, subject: str) -> list[str] | None:
    import json

    sidecar = output_dir / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-{TEMPLATE_DESC}_T1w.json"
    try:
        return list(json.loads(sidecar.read_text())["Sessions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cross_sectional_volumes(output_dir: Path, subject: str, session: str) -> pd.DataFrame:
    """The session's published cross-sectional volumes: method, hemisphere, volume_ml (empty when unreadable)."""
    anat = output_dir / f"sub-{subject}" / f"ses-{session}" / "anat"
    files = sorted(anat.glob("*_label-thalamus_volumes.tsv"))
    if not files:
        return pd.DataFrame(columns=["method", "hemisphere", "volume_ml"])
    try:
        table = read_tsv(files[0])
    except TSV_READ_ERRORS as err:
        LOGGER.warning("%s: unreadable (%s): no cross-sectional change for this session", files[0], err)
        return pd.DataFrame(columns=["method", "hemisphere", "volume_ml"])
    return table[["method", "hemisphere", "volume_ml"]].drop_duplicates(["method", "hemisphere"])


def change_table(output_dir: Path, subject: str, result: SubjectLongitudinal, ordered: list[str],
                 dates) -> pd.DataFrame:
    """Both modes' rows for every consecutive pair of the sessions measured in each mode."""
    participant = f"sub-{subject}"
    frames = []
    measured = [label for label in ordered if label in result.volumes]
    long_rows = [(label, hemisphere, volume) for label in measured
                 for hemisphere, volume in result.volumes[label].items()]
    frames.append(_rows(participant, result.method, "longitudinal", pd.DataFrame(long_rows, columns=[
        "session", "hemisphere", "volume_ml"]), measured, dates))
    cross = []
    for label in ordered:
        table = cross_sectional_volumes(output_dir, subject, label)
        cross += [(label, row.method, row.hemisphere, row.volume_ml) for row in table.itertuples()]
    cross = pd.DataFrame(cross, columns=["session", "method", "hemisphere", "volume_ml"])
    for method in sorted(set(cross["method"])):
        rows = cross[cross["method"] == method]
        present = [label for label in ordered if label in set(rows["session"])]
        frames.append(_rows(participant, method, "cross-sectional", rows, present, dates))
    table = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(
        not f.empty for f in frames) else pd.DataFrame(columns=list(CHANGE_COLUMNS))
    return table[list(CHANGE_COLUMNS)]


def _rows(participant: str, method: str, mode: str, volumes: pd.DataFrame, sessions: list[str],
          dates) -> pd.DataFrame:
    intervals = [interval_years(dates[a].when, dates[b].when) for a, b in zip(sessions[:-1], sessions[1:])]
    table = change_rows(participant, method, mode, volumes, sessions, intervals)
    for column in ("session_from", "session_to"):
        table[column] = "ses-" + table[column].astype(str)
    return table


def _publish(output_dir: Path, subject: str, result: SubjectLongitudinal, table: pd.DataFrame, dates, how: str,
             previous: list[str] | None, *, left_out: list[str] | None = None) -> None:
    """Stage every output of the subject, then move them into place together.

    ``left_out``: a note per session the longitudinal mode left out and why, kept in the template's sidecar.
    """
    staging = output_dir / ".thalamus_staging" / f"longitudinal-sub-{subject}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    subject_anat = Path(f"sub-{subject}") / "anat"
    template_rel = subject_anat / f"sub-{subject}_desc-{TEMPLATE_DESC}_T1w.nii.gz"
    labels_rel = subject_anat / f"sub-{subject}_seg-thalamus_desc-{result.method}{LONG_SUFFIX}Template_dseg.nii.gz"
    written: list[Path] = []
    try:
        written += _stage_image(staging, template_rel, result.template, {
            "Description": "Within-subject template: the mean of the sessions' brain-extracted T1w (lesion-filled "
                           "where a lesion mask exists), each rigidly resampled once into their halfway space",
            "Sessions": [s.label for s in result.sessions], "PreviousSessions": previous,
            "SessionOrder": how, "Sources": [_uri(s.t1w, output_dir) for s in result.sessions],
            "AcquisitionDates": {label: {"Date": date.when.isoformat() if date.when else None, "Source": date.source}
                                 for label, date in dates.items()},
            "SessionsLeftOut": list(left_out or []), "ChangeMethod": CHANGE_METHOD,
            **result.settings["Template"]})
        written += _stage_image(staging, labels_rel, nib.Nifti1Image(result.template_labels, result.template.affine),
                                {"Description": f"{result.method} thalamus on the within-subject template (1 left, 2 right)",
                                 "Sources": [f"bids::{template_rel.as_posix()}"], **result.settings["Segmentation"]})
        for session in result.sessions:
            if session.label in result.volumes:
                written += _stage_session(staging, output_dir, subject, session, result, template_rel)
        table_rel = subject_anat / f"sub-{subject}_{TABLE_SUFFIX}"
        write_tsv(table, _staged(staging, table_rel), CHANGE_COLUMN_DESCRIPTIONS)
        written += [table_rel, table_rel.with_suffix(".json")]
        stale = _stale_files(output_dir, subject, {s.label for s in result.sessions if s.label in result.volumes})
        for relative in written:
            final = output_dir / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, final)
        for path in stale:
            path.unlink(missing_ok=True)
            LOGGER.info("removed %s: its session is no longer in the longitudinal set", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOGGER.info("sub-%s: longitudinal change table: %s (%d rows)", subject, output_dir / table_rel, len(table))


def _stage_session(staging: Path, output_dir: Path, subject: str, session: LongSession,
                   result: SubjectLongitudinal, template_rel: Path) -> list[Path]:
    name = f"sub-{subject}_ses-{session.label}"
    anat = Path(f"sub-{subject}") / f"ses-{session.label}" / "anat"
    desc = f"{result.method}{LONG_SUFFIX}"
    labels = session_labels_image(result, session)
    xfm_rel = anat / f"{name}_from-T1w_to-longitudinal_mode-image_xfm.txt"
    _write_itk_text(result.to_session[session.label], _staged(staging, xfm_rel))
    sidecar = {"Method": result.method, "Mode": "longitudinal", "Template": f"bids::{template_rel.as_posix()}",
               "Transforms": {"Rigid": f"bids::{xfm_rel.as_posix()}",
                              "Deformation": "SyN displacement field inside the template box (work folder)"},
               "ChangeMethod": CHANGE_METHOD, "SpatialReference": _uri(session.t1w, output_dir),
               "Sources": [_uri(session.t1w, output_dir), f"bids::{template_rel.as_posix()}"],
               "LesionFilled": session.lesion_filled,
               "VolumesML": result.volumes[session.label], "Registration": result.settings["Registration"]}
    data = np.asarray(labels.dataobj)
    mask_rel = anat / f"{name}_space-T1w_label-thalamus_desc-{desc}_mask.nii.gz"
    dseg_rel = anat / f"{name}_space-T1w_seg-thalamus_desc-{desc}_dseg.nii.gz"
    out = [xfm_rel]
    out += _stage_image(staging, mask_rel, nib.Nifti1Image((data > 0).astype(np.uint8), labels.affine), sidecar)
    if data.max() > 1:
        out += _stage_image(staging, dseg_rel, labels, sidecar)
        lookup = pd.DataFrame({"index": [1, 2], "name": ["Left-Thalamus", "Right-Thalamus"],
                               "abbreviation": ["LTh", "RTh"]})
        tsv_rel = dseg_rel.with_name(dseg_rel.name.replace(".nii.gz", ".tsv"))
        write_tsv(lookup, _staged(staging, tsv_rel))
        out.append(tsv_rel)
    return out


def _stage_image(staging: Path, relative: Path, image: nib.Nifti1Image, sidecar: dict) -> list[Path]:
    save_nifti(image, _staged(staging, relative))
    json_rel = relative.with_name(relative.name.replace(".nii.gz", ".json"))
    _staged(staging, json_rel).write_text(json_text(sidecar))
    return [relative, json_rel]


def _staged(staging: Path, relative: Path) -> Path:
    path = staging / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _stale_files(output_dir: Path, subject: str, keep: set[str]) -> list[Path]:
    stale = []
    for session_dir in (output_dir / f"sub-{subject}").glob("ses-*"):
        if session_dir.name[len("ses-"):] in keep:
            continue
        anat = session_dir / "anat"
        stale += sorted(anat.glob(f"*_desc-*{LONG_SUFFIX}_*")) + sorted(anat.glob("*_to-longitudinal_*"))
    return stale


def _write_itk_text(matrix_ras: np.ndarray, path: Path) -> None:
    """An ITK text transform (template point -> session point; LPS) of a RAS 4x4 matrix."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(matrix_ras, float) @ flip
    params = " ".join(f"{v:.10g}" for v in [*lps[:3, :3].ravel(), *lps[:3, 3]])
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                    f"Parameters: {params}\nFixedParameters: 0 0 0\n")


def _uri(path: Path, output_dir: Path) -> str:
    try:
        return f"bids::{Path(path).resolve().relative_to(Path(output_dir).resolve()).as_posix()}"
    except ValueError:
        return str(path)


def longitudinal_step(config, sessions, tools, threads: int) -> dict[str, str]:
    """The participant level's longitudinal step (``--longitudinal auto``): subjects with two or more T1w sessions.

    ``sessions``: the run's :class:`~thalamus_bidsapp.bidsio.inputs.SessionInputs`; ``tools``: its tool check.
    The template is segmented by the first registered method that can run here and segments an image in
    memory (:meth:`~thalamus_bidsapp.methods.capabilities.TemplateSegmenter.template_segmenter`).
    """
    from thalamus_bidsapp.tools.threads import thread_limits

    counts: dict[str, int] = {}
    for session in sessions:
        if session.t1w is not None and session.session:
            counts[session.subject] = counts.get(session.subject, 0) + 1
    for subject in sorted({s.subject for s in sessions} - {k for k, n in counts.items() if n >= 2}):
        LOGGER.info("sub-%s: longitudinal mode not run: fewer than two sessions with a T1w", subject)
    subjects = sorted(k for k, n in counts.items() if n >= 2)
    if not subjects:
        return {}
    segmenter = template_segmenter(tools)
    if segmenter is None:
        LOGGER.error("longitudinal mode not run for %s: no method that segments the within-subject template "
                     "can run here (see --check-tools)", ", ".join(f"sub-{s}" for s in subjects))
        return {subject: "failed: no method segments the template" for subject in subjects}
    with thread_limits(threads):
        outcomes = run_longitudinal(config.output_dir, config.bids_dir, config.work_dir, subjects,
                                    segmenter=segmenter, threads=threads)
    for subject, outcome in outcomes.items():
        LOGGER.info("sub-%s: longitudinal mode %s", subject, outcome)
    return outcomes


def template_segmenter(tools) -> TemplateSegmenter | None:
    """The first registered method that the tool check let run and that segments an image in memory."""
    from thalamus_bidsapp.methods.capabilities import TemplateSegmenter as TemplateSegmentingMethod
    from thalamus_bidsapp.methods.registry import all_methods

    for method in all_methods():
        status = tools.status(method.name)
        if status.reason is not None or not isinstance(method, TemplateSegmentingMethod):
            continue
        segment = method.template_segmenter(status.settings)
        if segment is not None:
            return TemplateSegmenter(method.name, segment)
    return None
