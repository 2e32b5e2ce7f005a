"""Group level: gather the participant derivatives and run the group analyses."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_OK, ThalamusError
from thalamus_bidsapp.group.volumes import column_descriptions, gather_volumes, join_clinical

LOGGER = logging.getLogger(__name__)

_MASK_NAME = re.compile(
    r"^(?P<sub>sub-[0-9a-zA-Z]+)(?:_(?P<ses>ses-[0-9a-zA-Z]+))?_space-T1w_label-thalamus_desc-(?P<desc>[0-9a-zA-Z]+)_mask\.nii\.gz$"
)


def run_group(config: RunConfig) -> int:
    """Write ``group/volumes.tsv``, the agreement and clinical analyses and the report; returns the exit status."""
    from thalamus_bidsapp.reports.group import redraw_group_figures, write_group_report

    group_dir = config.output_dir / "group"
    if config.reports_only:
        redraw_group_figures(config.output_dir)
        LOGGER.info("report: %s", write_group_report(config.output_dir))
        return EXIT_OK
    volumes = join_clinical(gather_volumes(config.output_dir), config.bids_dir)
    volumes = _only_participants(volumes, config.participant_labels)
    write_tsv(volumes, group_dir / "volumes.tsv", column_descriptions(volumes, config.bids_dir))
    LOGGER.info("group/volumes.tsv: %d rows from %d sessions", len(volumes),
                volumes[["participant_id", "session_id"]].drop_duplicates().shape[0])
    run_agreement_step(config, group_dir)
    # The clinical configuration names the hemispheres analysed (default: bilateral).
    run_clinical_step(volumes, config.clinical_config, group_dir)
    LOGGER.info("report: %s", write_group_report(config.output_dir))
    return EXIT_OK


def collect_method_masks(output_dir: Path, participant_labels: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every published thalamus mask: participant_id, session_id, method, path."""
    rows = []
    for path in sorted(Path(output_dir).glob("sub-*/**/anat/*_space-T1w_label-thalamus_desc-*_mask.nii.gz")):
        match = _MASK_NAME.match(path.name)
        if match:
            rows.append({"participant_id": match["sub"], "session_id": match["ses"], "method": match["desc"],
                         "path": path})
    masks = pd.DataFrame(rows, columns=["participant_id", "session_id", "method", "path"])
    return _only_participants(masks, participant_labels)


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


def run_agreement_step(config: RunConfig, group_dir: Path) -> None:
    """Agreement with manual masks and between methods (containment needs no manual mask)."""
    from thalamus_bidsapp.group.agreement import run_agreement

    method_masks = collect_method_masks(config.output_dir, config.participant_labels)
    if method_masks.empty:
        LOGGER.warning("agreement analyses skipped: no thalamus masks in %s", config.output_dir)
        return
    manual_masks = collect_manual_masks(config)
    if manual_masks.empty:
        LOGGER.info("no manual thalamus masks (give them with --derivatives NAME=PATH): "
                    "only the containment between methods is computed")
    results = run_agreement(method_masks, manual_masks, group_dir)
    LOGGER.info("agreement analyses: %s", ", ".join(sorted(results)))
    run_side_agreement_step(config, group_dir)


def run_side_agreement_step(config: RunConfig, group_dir: Path) -> None:
    """Left and right agreement where the manual mask has sides (a dseg with 1 and 2, or hemi-L/hemi-R masks)."""
    from thalamus_bidsapp.group.agreement_sides import collect_method_sides, run_side_agreement

    method_sides = _only_participants(collect_method_sides(config.output_dir), config.participant_labels)
    manual = collect_manual_sides(config)
    if method_sides.empty or manual.empty:
        return
    run_side_agreement(method_sides, manual, group_dir)


def _only_participants(table: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    if not labels:
        return table
    wanted = {f"sub-{label.removeprefix('sub-')}" for label in labels}
    return table[table["participant_id"].isin(wanted)].reset_index(drop=True)


def run_clinical_step(volumes: pd.DataFrame, clinical_config: Path | None, group_dir: Path) -> None:
    """Cross-sectional, longitudinal and progression analyses, when the data allow.

    Without ``--clinical-config`` a dataset that lacks the clinical columns is
    normal (not every study has them): the analyses are skipped with the
    reason. With it, a missing column is the user's error.
    """
    from thalamus_bidsapp.group.clinical import run_clinical

    if volumes.empty:
        LOGGER.warning("clinical analyses skipped: no thalamus volumes to analyse")
        return
    try:
        results = run_clinical(volumes, clinical_config, group_dir)
    except ThalamusError as err:
        if clinical_config is not None:
            raise
        LOGGER.warning("clinical analyses skipped: %s (map the dataset's columns with --clinical-config)", err)
        return
    LOGGER.info("clinical analyses: %d tables in %s", len(results), group_dir)
