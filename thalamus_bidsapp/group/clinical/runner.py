"""Run every clinical analysis the data allow and write their tables and figures."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.group.clinical.change_source import record_change_source
from thalamus_bidsapp.group.clinical.common import (
    COURSE,
    METHOD_KEYS,
    MODEL_ERRORS,
    PCT,
    SUBJECT,
    Ledger,
    describe_columns,
    ordered_visits,
    prepare_volumes,
)
from thalamus_bidsapp.group.clinical.crosssectional import cross_sectional
from thalamus_bidsapp.group.clinical.longitudinal import longitudinal
from thalamus_bidsapp.group.clinical.power import power_table
from thalamus_bidsapp.group.clinical.progression import progression
from thalamus_bidsapp.group.clinical_config import ClinicalConfig, load_clinical_config
from thalamus_bidsapp.reports.figures_clinical import make_figures

LOGGER = logging.getLogger(__name__)


def hemisphere_volumes(volumes: pd.DataFrame, hemispheres: tuple[str, ...]) -> pd.DataFrame:
    """The rows of the hemispheres analysed; left and right rows enter as methods ``<method>_left``/``_right``.

    A volumes table without a ``hemisphere`` column has bilateral rows only.
    """
    if "hemisphere" not in volumes:
        return volumes if "bilateral" in hemispheres else volumes.iloc[0:0]
    parts = []
    for hemisphere in hemispheres:
        part = volumes[volumes["hemisphere"] == hemisphere]
        if hemisphere != "bilateral":
            part = part.assign(method=part["method"].astype(str) + f"_{hemisphere}")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def run_clinical(
    volumes: pd.DataFrame,
    config: ClinicalConfig | str | os.PathLike | None,
    out_dir: Path,
    *,
    figures: bool = True,
    change: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Run every clinical analysis the data allow; write tables and figures.

    Parameters
    ----------
    volumes
        The group volumes table (``group/volumes.tsv``) with the clinical
        columns joined from participants.tsv and the sessions tables.
    config
        A :class:`ClinicalConfig`, a path to a ``--clinical-config`` file, or
        None for the defaults.
    out_dir
        Folder for ``clinical_<analysis>.tsv`` (+ ``.json``) and ``figures/``.
    figures
        Whether to draw the figures (PNG and SVG).
    change
        The longitudinal change table (``group/longitudinal_change.tsv``):
        with the config's ``change_source: longitudinal`` the longitudinal and
        progression models take the thalamic change from its longitudinal
        rows where they cover baseline to follow-up.

    Returns
    -------
    dict
        Analysis name -> table, for every table written, including
        ``exclusions`` (rows left out and why) and ``analyses`` (done or skipped).

    Raises
    ------
    ThalamusError
        A column the analyses need is missing (exit code 65) or the config is invalid.
    """
    if not isinstance(config, ClinicalConfig):
        config = load_clinical_config(config)
    out_dir = Path(out_dir)
    ledger = Ledger()
    frame, available = prepare_volumes(hemisphere_volumes(volumes, config.hemispheres), config, ledger)
    LOGGER.info("clinical analyses on %d subjects, %d methods; roles found: %s", frame[SUBJECT].nunique(),
                frame.groupby(METHOD_KEYS).ngroups, ", ".join(sorted(available)))
    visits = ordered_visits(frame)
    results: dict[str, pd.DataFrame] = {}
    _log_change_source(config, change)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("crosssectional", lambda: cross_sectional(frame, visits, config, available, ledger)),
        ("longitudinal", lambda: longitudinal(frame, visits, config, available, ledger, change)),
        ("progression", lambda: progression(frame, visits, config, available, ledger, change)),
    ]
    for name, step in steps:
        try:
            produced = step()
        except MODEL_ERRORS as exc:
            ledger.status(name, False, f"could not be computed on these data: {exc}")
            continue
        if isinstance(produced, pd.DataFrame):
            results[name] = produced
        elif isinstance(produced, dict):
            results.update(produced)
    try:
        power = power_table(results.get("longitudinal_deltas"), config, ledger)
    except MODEL_ERRORS as exc:
        power = None
        ledger.status("power", False, f"could not be computed on these data: {exc}")
    if power is not None:
        results["power"] = record_change_source(power, results["longitudinal_deltas"])
    results["exclusions"] = ledger.exclusion_table()
    results["analyses"] = ledger.analysis_table()

    for name, table in results.items():
        write_tsv(table, out_dir / f"clinical_{name}.tsv", describe_columns(table))
    written = make_figures(results, out_dir, pct=PCT, course=COURSE) if figures else []
    LOGGER.info("clinical analyses: %d tables and %d figure files written to %s", len(results), len(written), out_dir)
    return results


def _log_change_source(config: ClinicalConfig, change: pd.DataFrame | None) -> None:
    if config.change_source != "longitudinal":
        LOGGER.info("change_source %s (clinical config %s): the change models use the difference of the "
                    "sessions' cross-sectional volumes", config.change_source, config.source)
    elif change is None or change.empty:
        LOGGER.info("change_source longitudinal: no longitudinal change table (group/longitudinal_change.tsv); the "
                    "change models use the difference of the sessions' cross-sectional volumes")
