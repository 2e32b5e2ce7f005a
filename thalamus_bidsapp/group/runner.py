"""Group level: gather the participant derivatives and run the group analyses."""

from __future__ import annotations

import logging

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_OK
from thalamus_bidsapp.group.volumes import column_descriptions, gather_volumes, join_clinical

LOGGER = logging.getLogger(__name__)


def run_group(config: RunConfig) -> int:
    """Write ``group/volumes.tsv``; returns the exit status."""
    group_dir = config.output_dir / "group"
    volumes = join_clinical(gather_volumes(config.output_dir), config.bids_dir)
    if config.participant_labels:
        wanted = {f"sub-{label.removeprefix('sub-')}" for label in config.participant_labels}
        volumes = volumes[volumes["participant_id"].isin(wanted)]
    write_tsv(volumes, group_dir / "volumes.tsv", column_descriptions(volumes, config.bids_dir))
    LOGGER.info("group/volumes.tsv: %d rows from %d sessions", len(volumes),
                volumes[["participant_id", "session_id"]].drop_duplicates().shape[0])
    return EXIT_OK
