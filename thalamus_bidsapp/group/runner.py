"""Group level: gather the participant derivatives and run the group analyses."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_json, write_tsv
from thalamus_bidsapp.bidsio.runlog import GROUP_LOG
from thalamus_bidsapp.bidsio.staging import Staging
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import (
    EXIT_CANTCREAT,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_SESSIONS_FAILED,
    EXIT_TEMPFAIL,
    ThalamusError,
)
from thalamus_bidsapp.group.harmonize import run_harmonization_step
from thalamus_bidsapp.group.longitudinal_change import gather_change_tables, write_change_table
from thalamus_bidsapp.group.qc_step import run_qc_step
from thalamus_bidsapp.group.readback import (
    RUNNING,
    ParticipantOutputs,
    SessionState,
    latest_session_states,
    read_participant_outputs,
    session_name,
)
from thalamus_bidsapp.group.scanners import add_scanner_columns
from thalamus_bidsapp.group.template_maps import run_template_maps
from thalamus_bidsapp.group.volumes import column_descriptions, gather_volumes, join_clinical

LOGGER = logging.getLogger(__name__)

#: Sessions left out of the group tables, with the reason (their latest participant status, or a bad file).
EXCLUDED_COLUMNS = {
    "participant_id": "Participant label, sub-<label>",
    "session_id": "Session label, ses-<label> (n/a when the dataset has no sessions)",
    "reason": "Why the session (or, for --qc-exclude, one of its masks) is not in the group tables",
}
_NO_SESSIONS = ["participant_id", "session_id", "reason"]
#: The clinical analyses the group report has a section for.
CLINICAL_ANALYSES = ("cross_sectional", "longitudinal", "progression", "power")


def run_group(config: RunConfig) -> int:
    """Write the group tables, figures and report as one set; returns the exit status.

    Only sessions whose latest participant status is ok are used; the others
    are listed in the log, in ``group/excluded_sessions.tsv`` and in the
    report. Every mask's QC checks go into ``group/qc.tsv`` and its worst
    status into the ``qc_status`` column of ``group/volumes.tsv``; with
    ``--qc-exclude`` the flagged masks are left out of the statistics (and
    listed in ``group/excluded_sessions.tsv``). The tables are built in a staging folder that replaces
    ``group/`` whole at the end, so no table of an earlier run survives
    beside the new ones, and an error leaves the earlier set untouched.

    Returns
    -------
    int
        0, or 1 when a session had to be left out for a file that cannot be
        read at group level (a corrupt mask or volumes table), after every
        table is written.

    Raises
    ------
    ThalamusError
        66 for no participant outputs or an unknown participant label; 75
        while participant jobs are still running (unless
        ``skip_running_sessions``); 65 for a clinical table that cannot be
        joined.
    """
    from thalamus_bidsapp.reports.group import write_group_report

    group_dir = config.output_dir / "group"
    if config.reports_only:
        LOGGER.info("report: %s", write_group_report(config.output_dir))
        return EXIT_OK
    log_dir = config.output_dir / "logs" / config.run_id
    with group_log(log_dir / GROUP_LOG, config.verbosity):
        write_json(config.to_json(), log_dir / "config.json")
        return _run_group(config, group_dir)


def _run_group(config: RunConfig, group_dir: Path) -> int:
    from thalamus_bidsapp.reports.group import write_group_report

    states = latest_session_states(config.output_dir)
    try:
        outputs = read_participant_outputs(config.output_dir)
    except ThalamusError as err:
        if err.exit_code == EXIT_NOINPUT:
            _check_running(config, states)  # no outputs yet because the jobs still run: 75, not 66
        raise
    _check_labels(config, outputs, states)
    _check_running(config, states)

    volume_files, excluded = _usable_sessions(outputs.volumes, states, config.participant_labels)
    mask_files, _ = _usable_sessions(outputs.masks, states, config.participant_labels)
    qc_files, _ = _usable_sessions(outputs.qc, states, config.participant_labels)
    # A group run started without a run id (called as a library) still needs a staging folder of its own.
    run_staging = Staging(config.output_dir, config.run_id or f"group-{uuid.uuid4().hex[:8]}").open()
    try:
        staging = run_staging.folder("group")
        volumes, unreadable = gather_volumes(volume_files)
        volumes = add_scanner_columns(join_clinical(volumes, config.bids_dir), config)
        volumes, mask_files, qc_excluded = run_qc_step(config, qc_files, volumes, _without(mask_files, unreadable),
                                                       staging)
        bad_masks = run_agreement_step(config, staging, mask_files)
        group_failures = pd.concat([unreadable, bad_masks], ignore_index=True)
        run_template_maps(config, staging, _without(mask_files, group_failures))
        volumes = run_harmonization_step(config, _without(volumes, bad_masks), staging)
        write_tsv(volumes, staging / "volumes.tsv", column_descriptions(volumes, config.bids_dir))
        LOGGER.info("group/volumes.tsv: %d rows from %d sessions", len(volumes),
                    volumes[["participant_id", "session_id"]].drop_duplicates().shape[0])
        change = gather_change_tables(config.output_dir, config.participant_labels)
        run_clinical_step(volumes, config.clinical_config, staging, change)
        write_change_table(config.output_dir, staging, config.participant_labels, change)
        excluded = pd.concat([excluded, group_failures, qc_excluded], ignore_index=True)
        excluded = excluded.sort_values(["participant_id", "session_id"], na_position="first", ignore_index=True)
        write_tsv(excluded, staging / "excluded_sessions.tsv", EXCLUDED_COLUMNS)
        for row in excluded.itertuples():
            LOGGER.warning("left out of the group tables: %s: %s", session_name(row.participant_id, row.session_id),
                           row.reason)
        write_group_report(config.output_dir, group_dir=staging)
        _log_lost_tables(staging, group_dir)
        run_staging.replace(staging, group_dir)
    finally:
        run_staging.close()
    LOGGER.info("report: %s", group_dir / "report.html")
    if not group_failures.empty:
        LOGGER.error("%d session(s) left out for files that cannot be read (see group/excluded_sessions.tsv)",
                     len(group_failures))
        return EXIT_SESSIONS_FAILED
    return EXIT_OK


@contextmanager
def group_log(path: Path, verbosity: int = 0) -> Iterator[Path]:
    """Copy every log line of the group run into ``path`` (``logs/<run>/group.log``), which the report links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbosity else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s | %(message)s",
                                           datefmt="%y%m%d-%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    LOGGER.info("group level log: %s", path)
    try:
        yield path
    except ThalamusError as err:
        # The command line prints why the run stopped; the log file gets it here, once.
        handler.handle(logging.LogRecord(LOGGER.name, logging.ERROR, __file__, 0, "%s", (err,), None))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def _wanted(labels: tuple[str, ...]) -> set[str]:
    return {f"sub-{label.removeprefix('sub-')}" for label in labels}


def _check_labels(config: RunConfig, outputs: ParticipantOutputs, states: dict[str, SessionState]) -> None:
    """A requested participant with no outputs and no run record is exit 66, as at participant level."""
    if not config.participant_labels:
        return
    known = (set(outputs.volumes["participant_id"]) | set(outputs.masks["participant_id"])
             | {name.split("_")[0] for name in states})
    missing = sorted(_wanted(config.participant_labels) - known)
    if missing:
        raise ThalamusError(
            f"participant label(s) {', '.join(m.removeprefix('sub-') for m in missing)} not found in the "
            f"participant outputs of {config.output_dir}; available: "
            f"{', '.join(k.removeprefix('sub-') for k in sorted(known)) or 'none'}",
            EXIT_NOINPUT,
        )


def _check_running(config: RunConfig, states: dict[str, SessionState]) -> None:
    """Refuse (75) to build tables while participant jobs still write, or after one was killed without
    recording a result, unless told to leave those sessions out."""
    wanted = _wanted(config.participant_labels)
    chosen = {name: state for name, state in states.items() if not wanted or name.split("_")[0] in wanted}
    running = sorted(name for name, state in chosen.items() if state.status == RUNNING)
    killed = sorted(name for name, state in chosen.items() if state.killed)
    if not running and not killed:
        return
    logs = ", ".join(sorted({f"logs/{states[name].run}/sessions.tsv" for name in running + killed}))
    parts = [f"participant jobs are still running for {len(running)} session(s): {', '.join(running)}"] if running \
        else []
    parts += [f"the participant job of {len(killed)} session(s) was killed without recording a result: "
              f"{', '.join(killed)} (rerun the participant level for them)"] if killed else []
    if not config.skip_running_sessions:
        raise ThalamusError(
            f"{'; '.join(parts)} ({logs}). Wait for the jobs to finish, or pass --skip-running-sessions to build "
            "the group tables without them (also when those jobs were killed and will not be rerun)",
            EXIT_TEMPFAIL,
        )
    LOGGER.warning("%s (%s): left out of the group tables (--skip-running-sessions)", "; ".join(parts), logs)


def _usable_sessions(files: pd.DataFrame, states: dict[str, SessionState],
                     labels: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of sessions whose latest participant status is ok, and the sessions left out with the reason.

    A session with outputs but no run record (outputs copied without ``logs/``)
    is used, with a warning.
    """
    files = _only_participants(files, labels)
    keep, excluded, unrecorded = [], {}, set()
    for row in files.itertuples():
        name = session_name(row.participant_id, row.session_id)
        state = states.get(name)
        if state is None or state.status == "ok":
            keep.append(True)
            if state is None:
                unrecorded.add(name)
            continue
        keep.append(False)
        reason = f"latest participant status ({state.run}): {state.status}"
        excluded[name] = {"participant_id": row.participant_id, "session_id": row.session_id,
                          "reason": reason + (f": {state.reason}" if state.reason else "")}
    if unrecorded:
        LOGGER.warning("no participant run recorded in logs/*/sessions.tsv for %s: used as found",
                       ", ".join(sorted(unrecorded)))
    usable = files[pd.Series(keep, index=files.index, dtype=bool)].reset_index(drop=True)
    return usable, pd.DataFrame(list(excluded.values()), columns=_NO_SESSIONS)


def _without(table: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """``table`` less the rows of the sessions in ``sessions`` (participant_id, session_id)."""
    if sessions.empty or table.empty:
        return table
    drop = {session_name(p, s) for p, s in zip(sessions["participant_id"], sessions["session_id"])}
    keep = [session_name(p, s) not in drop for p, s in zip(table["participant_id"], table["session_id"])]
    return table[keep].reset_index(drop=True)


def _table_rows(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return max(sum(1 for line in handle if line.strip()) - 1, 0)
    except OSError:
        return 0


def _log_lost_tables(staging: Path, group_dir: Path) -> None:
    """Say which tables of the earlier set disappear or empty when the new set replaces it."""
    new_rows = {p.name: _table_rows(p) for p in staging.glob("*.tsv")}
    if not group_dir.is_dir():
        return
    for path in sorted(group_dir.glob("*.tsv")):
        old = _table_rows(path)
        if path.name not in new_rows:
            LOGGER.warning("group/%s of an earlier run is removed: this run does not produce it", path.name)
        elif old and not new_rows[path.name]:
            LOGGER.warning("group/%s had %d row(s) and now has none", path.name, old)


def collect_manual_masks(config: RunConfig) -> pd.DataFrame:
    """Manual thalamus masks (``label-thalamus_desc-manual_mask``) of the ``--derivatives`` datasets.

    Per-side masks (with a ``hemi`` entity) and ``dseg`` files are left to
    :func:`collect_manual_sides`; a session whose only manual mask is a dseg
    uses it (binarised) as its bilateral mask.
    """
    rows = _manual_rows(config)
    bilateral = rows[rows["hemi"].isna()]
    has_mask = set(zip(bilateral.loc[bilateral["suffix"] == "mask", "participant_id"],
                       bilateral.loc[bilateral["suffix"] == "mask", "session_id"].fillna("")))
    keep = (bilateral["suffix"] == "mask") | ~pd.Series(
        [(p, s or "") in has_mask for p, s in zip(bilateral["participant_id"], bilateral["session_id"])],
        index=bilateral.index, dtype=bool)
    masks = bilateral[keep][["participant_id", "session_id", "path"]].reset_index(drop=True)
    return _only_participants(masks, config.participant_labels)


def collect_manual_sides(config: RunConfig, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per session, the manual mask or dseg (``path``) and the per-side masks (``left``, ``right``), if any."""
    rows = _manual_rows(config) if rows is None else rows
    sessions = []
    for (pid, sid), group in rows.groupby([rows["participant_id"], rows["session_id"].fillna("")], sort=True):
        by_hemi = {str(h).upper(): Path(p) for h, p in zip(group["hemi"], group["path"]) if pd.notna(h)}
        whole = group[group["hemi"].isna()].sort_values("suffix")  # dseg before mask
        sessions.append({"participant_id": pid, "session_id": sid or None,
                         "path": whole["path"].iloc[0] if len(whole) else None,
                         "left": by_hemi.get("L"), "right": by_hemi.get("R")})
    table = pd.DataFrame(sessions, columns=["participant_id", "session_id", "path", "left", "right"])
    return _only_participants(table, config.participant_labels)


def _manual_rows(config: RunConfig) -> pd.DataFrame:
    """Every manual thalamus file of the ``--derivatives`` datasets: masks, per-side masks and dsegs."""
    from thalamus_bidsapp.bidsio import inputs

    query = inputs.load_queries(config.bids_filter_file)["manual"]
    rows = []
    for name, root in config.derivatives.items():
        layout = inputs.open_layout(root, validate=False, database_dir=config.work_dir / "bids_index",
                                    derivatives=True)
        found = 0
        for suffix in dict.fromkeys((query.get("suffix", "mask"), "dseg")):
            for bids_file in layout.get(**{**query, "suffix": suffix}):
                ents = bids_file.get_entities()
                session = ents.get("session")
                rows.append({"participant_id": f"sub-{ents['subject']}",
                             "session_id": f"ses-{session}" if session else None, "path": Path(bids_file.path),
                             "hemi": ents.get("hemi"), "suffix": suffix})
                found += 1
        LOGGER.info("derivatives %s: %d manual thalamus files", name, found)
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "path", "hemi", "suffix"])


def run_agreement_step(config: RunConfig, group_dir: Path, method_masks: pd.DataFrame) -> pd.DataFrame:
    """Agreement with manual masks and between methods (containment needs no manual mask).

    Returns the sessions left out because a mask cannot be read or is not on
    the session's grid (participant_id, session_id, reason).
    """
    from thalamus_bidsapp.group.agreement import run_agreement

    if method_masks.empty:
        LOGGER.warning("agreement analyses skipped: no thalamus masks in %s", config.output_dir)
        return pd.DataFrame(columns=_NO_SESSIONS)
    manual_masks = collect_manual_masks(config)
    if manual_masks.empty:
        LOGGER.info("no manual thalamus masks (give them with --derivatives NAME=PATH): "
                    "only the containment between methods is computed")
    # The figures are drawn by the report, from the published tables (reports/figures_group.py).
    results = run_agreement(method_masks, manual_masks, group_dir, figures=False, skip_bad_sessions=True)
    LOGGER.info("agreement analyses: %s", ", ".join(sorted(k for k in results if k != "excluded")))
    run_side_agreement_step(config, group_dir, _without(method_masks, results["excluded"]))
    return results["excluded"]


def run_side_agreement_step(config: RunConfig, group_dir: Path, method_masks: pd.DataFrame) -> None:
    """Left and right agreement where the manual mask has sides (a dseg with 1 and 2, or hemi-L/hemi-R masks).

    Only the sessions of ``method_masks`` (those the bilateral agreement used) are compared.
    """
    from thalamus_bidsapp.group.agreement_sides import collect_method_sides, run_side_agreement

    method_sides = collect_method_sides(config.output_dir)
    used = set(zip(method_masks["participant_id"], method_masks["session_id"].fillna("")))
    method_sides = method_sides[[(p, s or "") in used for p, s in zip(method_sides["participant_id"],
                                                                       method_sides["session_id"])]]
    manual = collect_manual_sides(config)
    if method_sides.empty or manual.empty:
        return
    run_side_agreement(method_sides, manual, group_dir)


def _only_participants(table: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    if not labels:
        return table
    wanted = {f"sub-{label.removeprefix('sub-')}" for label in labels}
    return table[table["participant_id"].isin(wanted)].reset_index(drop=True)


def run_clinical_step(volumes: pd.DataFrame, clinical_config: Path | None, group_dir: Path,
                      change: pd.DataFrame | None = None) -> None:
    """Cross-sectional, longitudinal and progression analyses, when the data allow.

    ``change`` is the longitudinal change table, the thalamic change of the change models where the
    clinical config's ``change_source`` is longitudinal.

    Without ``--clinical-config`` a dataset that lacks the clinical columns is
    normal (not every study has them): the analyses are skipped with the
    reason. With it, a missing column is the user's error.
    """
    from thalamus_bidsapp.group.clinical import run_clinical
    from thalamus_bidsapp.group.clinical.common import describe_columns

    if volumes.empty:
        LOGGER.warning("clinical analyses skipped: no thalamus volumes to analyse")
        return
    try:
        results = run_clinical(volumes, clinical_config, group_dir, figures=False, change=change)
    except ThalamusError as err:
        if clinical_config is not None:
            raise
        reason = f"{err} (map the dataset's columns with --clinical-config)"
        LOGGER.warning("clinical analyses skipped: %s", reason)
        # The report reads why from this table, as for an analysis skipped for lack of data.
        skipped = pd.DataFrame({"analysis": list(CLINICAL_ANALYSES), "status": "skipped", "reason": reason,
                                "n_subjects": 0})
        write_tsv(skipped, group_dir / "clinical_analyses.tsv", describe_columns(skipped))
        return
    LOGGER.info("clinical analyses: %d tables in %s", len(results), group_dir)
