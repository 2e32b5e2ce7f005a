"""Group level: gather the participant derivatives and run the group analyses."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_OK, ThalamusError
from thalamus_bidsapp.group.volumes import bilateral_only, column_descriptions, gather_volumes, join_clinical

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
    run_clinical_step(bilateral_only(volumes), config.clinical_config, group_dir)
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
    """Manual thalamus masks (``label-thalamus_desc-manual_mask``) of the ``--derivatives`` datasets."""
    from thalamus_bidsapp.bidsio import inputs

    query = inputs.load_queries(config.bids_filter_file)["manual"]
    rows = []
    for name, root in config.derivatives.items():
        layout = inputs.open_layout(root, validate=False, database_dir=config.work_dir / "bids_index",
                                    derivatives=True)
        for bids_file in layout.get(**query):
            ents = bids_file.get_entities()
            session = ents.get("session")
            rows.append({"participant_id": f"sub-{ents['subject']}",
                         "session_id": f"ses-{session}" if session else None, "path": Path(bids_file.path)})
        LOGGER.info("derivatives %s: %d manual thalamus masks", name, len(rows))
    masks = pd.DataFrame(rows, columns=["participant_id", "session_id", "path"])
    return _only_participants(masks, config.participant_labels)


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
