"""Longitudinal mode of the participant level: per subject, measure (or reuse), then publish one set of outputs.

Published per subject (see README, Longitudinal):

- ``sub-<label>/anat/sub-<label>_desc-longitudinaltemplate_T1w.nii.gz`` and,
  per method that segmented it, ``sub-<label>_seg-thalamus_desc-<method>LongTemplate_dseg.nii.gz``;
- per session and method ``*_space-T1w_label-thalamus_desc-<method>Long_mask.nii.gz``
  and ``*_space-T1w_seg-thalamus_desc-<method>Long_dseg.nii.gz`` (the
  method's template thalamus carried into the session), and, once per
  session, the rigid transform ``*_from-T1w_to-longitudinal_mode-image_xfm.txt``;
- ``sub-<label>/anat/sub-<label>_label-thalamus_desc-longitudinal_volumes.tsv``:
  the change table, both modes, every method, every consecutive pair.

Everything is written to a hidden staging folder first and then moved into
place together (:func:`~thalamus_bidsapp.bidsio.staging.move_together`); the
longitudinal files of sessions no longer in the set are removed in the same
step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.acquisition_dates import session_dates
from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, json_text, read_tsv, save_nifti, write_tsv
from thalamus_bidsapp.bidsio.staging import move_together, set_folder, staged_file
from thalamus_bidsapp.image.sides import LEFT, RIGHT
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
    TemplateSegmentation,
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
                     segmentations: Sequence[TemplateSegmentation], not_run: Mapping[str, str] | None = None,
                     threads: int = 1) -> dict[str, str]:
    """Longitudinal mode for each subject (labels without ``sub-``); returns subject -> outcome, for the log.

    ``segmentations``: the methods that segment the template; ``not_run``:
    selected methods left out of the longitudinal mode, with the reason (the
    template's sidecar lists them). A subject's failure is logged and leaves
    its earlier longitudinal outputs as they were.
    """
    outcomes = {}
    for subject in subjects:
        try:
            outcomes[subject] = _run_subject(Path(output_dir), Path(bids_dir), Path(work_dir), subject,
                                             segmentations=segmentations, not_run=dict(not_run or {}),
                                             threads=threads)
        except Exception as err:  # noqa: BLE001 - the cross-sectional outputs stand; the log says why
            LOGGER.error("sub-%s: longitudinal mode failed: %s", subject, err)
            outcomes[subject] = f"failed: {err}"
    return outcomes


def _run_subject(output_dir: Path, bids_dir: Path, work_dir: Path, subject: str, *,
                 segmentations: Sequence[TemplateSegmentation], not_run: dict[str, str], threads: int) -> str:
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
    result = _measure_or_reuse(work_dir, subject, sessions, segmentations, threads)
    previous = _previous_sessions(output_dir, subject)
    if previous is not None and previous != [s.label for s in sessions]:
        LOGGER.info("sub-%s: the within-subject template was redone: sessions %s, before %s", subject,
                    ", ".join(s.label for s in sessions), ", ".join(previous))
    table = change_table(output_dir, subject, result, ordered, dates)
    left_out = notes + [f"ses-{label}: registration to the template failed: {err}: left out of the longitudinal rows"
                        for label, err in result.failed.items()]
    not_measured = {**not_run, **result.methods_failed}
    _publish(output_dir, subject, result, table, dates, how, previous, left_out=left_out, not_measured=not_measured,
             known_methods={s.method for s in segmentations} | set(not_run))
    outcome = (f"ok: {len(result.measured_sessions())} sessions measured by {', '.join(result.methods)}, "
               f"{len(table)} change rows")
    return outcome + (f"; not measured: {', '.join(sorted(not_measured))}" if not_measured else "")


def _measure_or_reuse(work_dir: Path, subject: str, sessions: list[LongSession],
                      segmentations: Sequence[TemplateSegmentation], threads: int) -> SubjectLongitudinal:
    folder = work_dir / "longitudinal" / f"sub-{subject}" / cache_key(sessions, [s.method for s in segmentations])
    cached = read_cache(folder, subject, sessions)
    if cached is not None:
        LOGGER.info("sub-%s: longitudinal results reused from %s", subject, folder)
        return cached
    result = measure_subject(subject, sessions, segmentations=segmentations, threads=threads)
    LOGGER.info("sub-%s: longitudinal timings (s): %s", subject,
                ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if result.methods_failed:
        # A method's failure may be transient (a tool crash): the next run tries every method again.
        LOGGER.warning("sub-%s: longitudinal results not cached: %s failed on the template and is tried again "
                       "next run", subject, ", ".join(sorted(result.methods_failed)))
    else:
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
    frames = [longitudinal_rows(subject, name, method.volumes, [label for label in ordered if label in method.volumes],
                                dates)
              for name, method in result.methods.items()]
    frames.append(cross_sectional_rows(output_dir, subject, ordered, dates))
    frames = [f for f in frames if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CHANGE_COLUMNS))
    return table[list(CHANGE_COLUMNS)]


def longitudinal_rows(subject: str, method: str, volumes: dict[str, dict[str, float]], measured: list[str],
                      dates) -> pd.DataFrame:
    """``mode=longitudinal`` rows of ``method`` from its volumes (session -> hemisphere -> mL), in ``measured`` order."""
    long_rows = [(label, hemisphere, volume) for label in measured for hemisphere, volume in volumes[label].items()]
    frame = pd.DataFrame(long_rows, columns=["session", "hemisphere", "volume_ml"])
    return _pair_rows(f"sub-{subject}", method, "longitudinal", frame, measured, dates)


def cross_sectional_rows(output_dir: Path, subject: str, ordered: list[str], dates) -> pd.DataFrame:
    """``mode=cross-sectional`` rows of every method: the differences of the sessions' published volumes."""
    cross = []
    for label in ordered:
        table = cross_sectional_volumes(output_dir, subject, label)
        cross += [(label, row.method, row.hemisphere, row.volume_ml) for row in table.itertuples()]
    cross = pd.DataFrame(cross, columns=["session", "method", "hemisphere", "volume_ml"])
    frames = []
    for method in sorted(set(cross["method"])):
        rows = cross[cross["method"] == method]
        present = [label for label in ordered if label in set(rows["session"])]
        frames.append(_pair_rows(f"sub-{subject}", method, "cross-sectional", rows, present, dates))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CHANGE_COLUMNS))


def _pair_rows(participant: str, method: str, mode: str, volumes: pd.DataFrame, sessions: list[str],
               dates) -> pd.DataFrame:
    intervals = [interval_years(dates[a].when, dates[b].when) for a, b in zip(sessions[:-1], sessions[1:])]
    table = change_rows(participant, method, mode, volumes, sessions, intervals)
    for column in ("session_from", "session_to"):
        table[column] = "ses-" + table[column].astype(str)
    return table


def _publish(output_dir: Path, subject: str, result: SubjectLongitudinal, table: pd.DataFrame, dates, how: str,
             previous: list[str] | None, *, left_out: list[str] | None = None,
             not_measured: Mapping[str, str] | None = None, known_methods: set[str] | None = None) -> None:
    """Stage every output of the subject, then move them into place together.

    ``left_out``: a note per session the longitudinal mode left out and why;
    ``not_measured``: methods without longitudinal volumes and why (both in
    the template's sidecar); ``known_methods``: the methods this step handles,
    whose longitudinal files are removed where the method was not measured
    this time (default: the measured ones).
    """
    not_measured = dict(not_measured or {})
    subject_anat = Path(f"sub-{subject}") / "anat"
    template_rel = subject_anat / f"sub-{subject}_desc-{TEMPLATE_DESC}_T1w.nii.gz"
    table_rel = change_table_path(Path(), subject)
    measured = result.measured_sessions()
    with set_folder(output_dir, f"longitudinal-sub-{subject}") as staging:
        _stage_image(staging, template_rel, result.template, {
            "Description": "Within-subject template: the mean of the sessions' brain-extracted T1w (lesion-filled "
                           "where a lesion mask exists), each rigidly resampled once into their halfway space",
            "Sessions": [s.label for s in result.sessions], "PreviousSessions": previous,
            "SessionOrder": how, "Sources": [output_uri(s.t1w, output_dir) for s in result.sessions],
            "AcquisitionDates": {label: {"Date": date.when.isoformat() if date.when else None, "Source": date.source}
                                 for label, date in dates.items()},
            "SessionsLeftOut": list(left_out or []), "ChangeMethod": CHANGE_METHOD,
            "Methods": list(result.methods), "MethodsNotMeasured": not_measured,
            "SessionsNotRegistered": dict(result.failed), **result.settings["Template"]})
        for name, method in result.methods.items():
            labels_rel = subject_anat / f"sub-{subject}_seg-thalamus_desc-{name}{LONG_SUFFIX}Template_dseg.nii.gz"
            _stage_image(staging, labels_rel, nib.Nifti1Image(method.labels, result.template.affine),
                         {"Description": f"{name} thalamus on the within-subject template "
                                         f"({_labels_text(method.regions)})",
                          "Sources": [f"bids::{template_rel.as_posix()}"],
                          "Regions": {k: list(v) for k, v in method.regions.items()},
                          **method.provenance})
        for session in result.sessions:
            if session.label in measured:
                _stage_session(staging, output_dir, subject, session, result, template_rel)
        write_tsv(table, staged_file(staging, table_rel), CHANGE_COLUMN_DESCRIPTIONS)
        known = set(result.methods) | set(known_methods or ())
        stale = _stale_files(output_dir, subject, set(measured), set(result.methods), known)
        _, removed = move_together(staging, output_dir, stale)
    for path in removed:
        LOGGER.info("removed %s: its session or method is no longer in the longitudinal set", path)
    LOGGER.info("sub-%s: longitudinal change table: %s (%d rows)", subject, output_dir / table_rel, len(table))


def _labels_text(regions: Mapping[str, tuple[int, ...]]) -> str:
    if "left" in regions and "right" in regions:
        return f"{', '.join(map(str, regions['left']))} left, {', '.join(map(str, regions['right']))} right"
    return "bilateral only"


def _stage_session(staging: Path, output_dir: Path, subject: str, session: LongSession,
                   result: SubjectLongitudinal, template_rel: Path) -> list[Path]:
    name = f"sub-{subject}_ses-{session.label}"
    anat = Path(f"sub-{subject}") / f"ses-{session.label}" / "anat"
    xfm_rel = anat / f"{name}_from-T1w_to-longitudinal_mode-image_xfm.txt"
    _write_itk_text(result.to_session[session.label], staged_file(staging, xfm_rel))
    out = [xfm_rel]
    for method_name, method in result.methods.items():
        desc = f"{method_name}{LONG_SUFFIX}"
        labels = session_labels_image(result, session, method_name)
        sidecar = {"Method": method_name, "Mode": "longitudinal", "Template": f"bids::{template_rel.as_posix()}",
                   "Transforms": {"Rigid": f"bids::{xfm_rel.as_posix()}",
                                  "Deformation": "SyN displacement from the mean of the other sessions, scaled "
                                                 "by (N - 1) / N, inside the template box (work folder)"},
                   "ChangeMethod": CHANGE_METHOD, "SpatialReference": output_uri(session.t1w, output_dir),
                   "Sources": [output_uri(session.t1w, output_dir), f"bids::{template_rel.as_posix()}"],
                   "LesionFilled": session.lesion_filled,
                   "VolumesML": method.volumes[session.label], "Registration": result.settings["Registration"]}
        data = np.asarray(labels.dataobj)
        mask_rel = anat / f"{name}_space-T1w_label-thalamus_desc-{desc}_mask.nii.gz"
        dseg_rel = anat / f"{name}_space-T1w_seg-thalamus_desc-{desc}_dseg.nii.gz"
        out += _stage_image(staging, mask_rel, nib.Nifti1Image((data > 0).astype(np.uint8), labels.affine), sidecar)
        if data.max() > 1:
            out += _stage_image(staging, dseg_rel, labels, sidecar)
            out.append(stage_side_lookup(staging, dseg_rel))
    return out


def change_table_path(output_dir: Path, subject: str) -> Path:
    """The subject's change table: ``sub-<label>/anat/sub-<label>_<TABLE_SUFFIX>`` below ``output_dir``."""
    return Path(output_dir) / f"sub-{subject}" / "anat" / f"sub-{subject}_{TABLE_SUFFIX}"


def stage_side_lookup(staging: Path, dseg_rel: Path) -> Path:
    """Write the lookup table (1 left, 2 right thalamus) beside the staged dseg ``dseg_rel``; return its path."""
    lookup = pd.DataFrame({"index": [LEFT, RIGHT], "name": ["Left-Thalamus", "Right-Thalamus"],
                           "abbreviation": ["LTh", "RTh"]})
    tsv_rel = dseg_rel.with_name(dseg_rel.name.replace(".nii.gz", ".tsv"))
    write_tsv(lookup, staged_file(staging, tsv_rel))
    return tsv_rel


def _stage_image(staging: Path, relative: Path, image: nib.Nifti1Image, sidecar: dict) -> list[Path]:
    save_nifti(image, staged_file(staging, relative))
    json_rel = relative.with_name(relative.name.replace(".nii.gz", ".json"))
    staged_file(staging, json_rel).write_text(json_text(sidecar))
    return [relative, json_rel]


def _stale_files(output_dir: Path, subject: str, keep: set[str], methods: set[str], known: set[str]) -> list[Path]:
    """Longitudinal files of sessions no longer in the set, and of the ``known`` methods not in ``methods``."""
    stale = []
    gone = sorted(known - methods)
    subject_dir = output_dir / f"sub-{subject}"
    for method in gone:
        stale += sorted((subject_dir / "anat").glob(f"*_desc-{method}{LONG_SUFFIX}Template_*"))
    for session_dir in subject_dir.glob("ses-*"):
        anat = session_dir / "anat"
        if session_dir.name[len("ses-"):] in keep:
            for method in gone:
                stale += sorted(anat.glob(f"*_desc-{method}{LONG_SUFFIX}_*"))
            continue
        stale += sorted(anat.glob(f"*_desc-*{LONG_SUFFIX}_*")) + sorted(anat.glob("*_to-longitudinal_*"))
    return stale


def _write_itk_text(matrix_ras: np.ndarray, path: Path) -> None:
    """An ITK text transform (template point -> session point; LPS) of a RAS 4x4 matrix."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(matrix_ras, float) @ flip
    params = " ".join(f"{v:.10g}" for v in [*lps[:3, :3].ravel(), *lps[:3, 3]])
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                    f"Parameters: {params}\nFixedParameters: 0 0 0\n")


def output_uri(path: Path, output_dir: Path) -> str:
    """``bids::<path relative to the output dataset>``, or the path itself when it lies outside it."""
    try:
        return f"bids::{Path(path).resolve().relative_to(Path(output_dir).resolve()).as_posix()}"
    except ValueError:
        return str(path)


def longitudinal_step(config, sessions, tools, threads: int) -> dict[str, str]:
    """The participant level's longitudinal step (``--longitudinal auto``): subjects with two or more T1w sessions.

    ``sessions``: the run's :class:`~thalamus_bidsapp.bidsio.inputs.SessionInputs`; ``tools``: its tool check.
    The template is segmented by every selected method that can run here and segments an image
    (:meth:`~thalamus_bidsapp.methods.capabilities.TemplateSegmenter.template_segmenter`).
    """
    from thalamus_bidsapp.tools.threads import thread_limits

    counts: dict[str, int] = {}
    for session in sessions:
        if session.t1w is not None and session.session:
            counts[session.subject] = counts.get(session.subject, 0) + 1
    subjects = sorted(k for k, n in counts.items() if n >= 2)
    for subject in sorted({s.subject for s in sessions} - set(subjects)):
        # A subject without session folders has one session, unlabelled.
        found = sum(1 for s in sessions if s.subject == subject and s.t1w is not None)
        LOGGER.info("sub-%s: longitudinal mode not run: %d session%s with a T1w (two or more are needed)",
                    subject, found, "" if found == 1 else "s")
    if not subjects:
        return {}
    segmentations, not_run = template_segmentations(config, tools)
    if not segmentations:
        LOGGER.error("longitudinal mode not run for %s: no method that segments the within-subject template "
                     "can run here (see --check-tools)%s", ", ".join(f"sub-{s}" for s in subjects),
                     "".join(f"; {k}: {v}" for k, v in not_run.items()))
        return {subject: "failed: no method segments the template" for subject in subjects}
    with thread_limits(threads):
        outcomes = run_longitudinal(config.output_dir, config.bids_dir, config.work_dir, subjects,
                                    segmentations=segmentations, not_run=not_run, threads=threads)
    for subject, outcome in outcomes.items():
        LOGGER.info("sub-%s: longitudinal mode %s", subject, outcome)
    return outcomes


def template_segmentations(config, tools) -> tuple[list[TemplateSegmentation], dict[str, str]]:
    """The selected methods that segment the template here, in report order; the others that could, with why not.

    A method bounded by another's mask (MindGlide) gets its envelope choices:
    ``--mindglide-envelope``, else every envelope method in order of preference.
    """
    from thalamus_bidsapp.methods.capabilities import EnvelopeUser, TemplateSegmenter
    from thalamus_bidsapp.methods.registry import all_methods, envelope_names

    wanted = set(config.methods) if config.methods is not None else None
    segmentations, not_run = [], {}
    for method in all_methods():
        if wanted is not None and method.name not in wanted:
            continue
        if not isinstance(method, TemplateSegmenter):
            LOGGER.debug("%s does not segment the within-subject template", method.name)
            continue
        name = method.template_mask_name
        status = tools.status(method.name)
        segment = method.template_segmenter(status.settings) if status.reason is None else None
        if segment is None:
            not_run[name] = f"its tool cannot run here: {status.reason or 'not set up (see --check-tools)'}"
            LOGGER.info("longitudinal mode: %s left out: %s", name, not_run[name])
            continue
        envelopes: tuple[str, ...] = ()
        if isinstance(method, EnvelopeUser):
            asked = method.envelope_choice(config)
            envelopes = (asked,) if asked else envelope_names()
        segmentations.append(TemplateSegmentation(name, segment, envelopes))
    names = {s.method for s in segmentations}
    for segmentation in [s for s in segmentations if s.envelopes]:
        usable = tuple(m for m in segmentation.envelopes if m in names)
        if not usable:
            not_run[segmentation.method] = (f"no envelope on the template: {' or '.join(segmentation.envelopes)} "
                                            "does not segment it here")
            LOGGER.info("longitudinal mode: %s left out: %s", segmentation.method, not_run[segmentation.method])
            segmentations.remove(segmentation)
        else:
            segmentations[segmentations.index(segmentation)] = TemplateSegmentation(
                segmentation.method, segmentation.segment, usable)
    return segmentations, not_run
