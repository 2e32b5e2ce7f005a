"""Thalamic change of the change models from the longitudinal mode where it covers the subject's visits.

The participant level's longitudinal mode measures every session of a
subject on one within-subject template (``group/longitudinal_change.tsv``,
rows of ``mode == longitudinal``, consecutive pairs of sessions). With the
clinical config's ``change_source: longitudinal`` the baseline and follow-up
volumes of a subject, method and hemisphere come from those rows when their
pairs chain from the baseline to the follow-up session the models use; the
others keep the difference of the sessions' own (cross-sectional) volumes.
The ``change_source`` column says which, per subject and, summarised, per
model row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from thalamus_bidsapp.group.clinical.common import ANNUAL, DELTA, INTERVAL, METHOD_KEYS, PCT, SUBJECT, VOLUME
from thalamus_bidsapp.group.clinical_config import ClinicalConfig

LOGGER = logging.getLogger(__name__)

CHANGE_SOURCE = "change_source"
LONGITUDINAL = "longitudinal"
CROSS_SECTIONAL = "cross-sectional"

_Chains = Mapping[tuple[str, str], Mapping[str, tuple[str, float, float]]]


def longitudinal_chains(change: pd.DataFrame) -> dict[tuple[str, str], dict[str, tuple[str, float, float]]]:
    """(subject, clinical method name) -> session_from -> (session_to, volume_from_ml, volume_to_ml).

    The clinical analyses name a side's volumes ``<method>_left`` and
    ``<method>_right`` and the whole thalamus ``<method>``; the change table
    keeps the method (the same desc name as the volumes tables) and the
    hemisphere apart.
    """
    rows = change[change["mode"].astype(str) == LONGITUDINAL]
    chains: dict[tuple[str, str], dict[str, tuple[str, float, float]]] = {}
    for row in rows.itertuples(index=False):
        hemisphere = str(row.hemisphere)
        method = str(row.method) if hemisphere == "bilateral" else f"{row.method}_{hemisphere}"
        steps = chains.setdefault((_label(row.participant_id, "sub-"), method), {})
        steps.setdefault(_label(row.session_from, "ses-"),
                         (_label(row.session_to, "ses-"), float(row.volume_from_ml), float(row.volume_to_ml)))
    return chains


def _label(value: object, prefix: str) -> str:
    text = str(value)
    return text if text.startswith(prefix) else f"{prefix}{text}"


def composed_volumes(chains: _Chains, subject: str, method: str, baseline: str,
                     followup: str) -> tuple[float, float] | None:
    """Baseline and follow-up volumes along the consecutive longitudinal pairs, or None when they do not chain."""
    steps = chains.get((subject, method))
    if not steps:
        return None
    session, target = _label(baseline, "ses-"), _label(followup, "ses-")
    first = last = None
    for _ in range(len(steps)):
        if session not in steps:
            return None
        session, volume_from, volume_to = steps[session]
        first = volume_from if first is None else first
        last = volume_to
        if session == target:
            break
    else:
        return None
    if first is None or last is None or not (np.isfinite(first) and first > 0 and np.isfinite(last)):
        return None
    return first, last


def thalamic_change(deltas: pd.DataFrame, change: pd.DataFrame | None, config: ClinicalConfig,
                    analysis: str) -> pd.DataFrame:
    """The deltas the models use: with the longitudinal change when the config asks for it and a table exists."""
    if config.change_source != LONGITUDINAL or change is None or change.empty or deltas.empty:
        return deltas
    return use_longitudinal_change(deltas, change, analysis)


def use_longitudinal_change(deltas: pd.DataFrame, change: pd.DataFrame, analysis: str) -> pd.DataFrame:
    """``deltas`` with the volume change from the longitudinal mode where it covers baseline to follow-up.

    Replaces ``volume_ml_bl``, ``volume_ml_fu``, the change in mL and %, and
    the annualised %, and adds ``change_source`` (longitudinal or
    cross-sectional) to every row.
    """
    chains = longitudinal_chains(change)
    out = deltas.copy()
    source = np.full(len(out), CROSS_SECTIONAL, dtype=object)
    for i, (subject, method, baseline, followup) in enumerate(
            zip(out[SUBJECT], out["method"], out["session_bl"], out["session_fu"])):
        volumes = composed_volumes(chains, str(subject), str(method), str(baseline), str(followup))
        if volumes is None:
            continue
        position = out.index[i]
        out.loc[position, [f"{VOLUME}_bl", f"{VOLUME}_fu"]] = volumes
        source[i] = LONGITUDINAL
    from_long = source == LONGITUDINAL
    bl, fu = out[f"{VOLUME}_bl"].to_numpy(float), out[f"{VOLUME}_fu"].to_numpy(float)
    out.loc[from_long, DELTA] = (fu - bl)[from_long]
    out.loc[from_long, PCT] = (100.0 * (fu - bl) / bl)[from_long]
    interval = out[INTERVAL].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        annual = np.where(interval > 0, out[PCT].to_numpy(float) / interval, np.nan)
    out.loc[from_long, ANNUAL] = annual[from_long]
    out[CHANGE_SOURCE] = source
    _log_counts(out, analysis)
    return out


def _log_counts(deltas: pd.DataFrame, analysis: str) -> None:
    counts = deltas.groupby(METHOD_KEYS)[CHANGE_SOURCE].value_counts().unstack(fill_value=0)
    parts = [f"{method} ({contrast}) {int(row.get(LONGITUDINAL, 0))} longitudinal, "
             f"{int(row.get(CROSS_SECTIONAL, 0))} cross-sectional" for (method, contrast), row in counts.iterrows()]
    n_long = int((deltas[CHANGE_SOURCE] == LONGITUDINAL).sum())
    LOGGER.info("%s: thalamic change from the longitudinal mode for %d of %d subject-method rows, the difference of "
                "the cross-sectional volumes for the others (no longitudinal pairs from baseline to follow-up): %s",
                analysis, n_long, len(deltas), "; ".join(parts))


def source_summary(sources: pd.Series) -> str:
    """``longitudinal``, ``cross-sectional``, or ``mixed (n longitudinal, m cross-sectional)``."""
    counts = sources.astype(str).value_counts()
    if len(counts) == 0:
        return "n/a"
    if len(counts) == 1:
        return str(counts.index[0])
    return (f"mixed ({int(counts.get(LONGITUDINAL, 0))} longitudinal, "
            f"{int(counts.get(CROSS_SECTIONAL, 0))} cross-sectional)")


def record_change_source(table: pd.DataFrame, deltas: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``change_source`` after its method keys: the sources of its rows' deltas.

    A row keyed by method and contrast summarises that method's rows of
    ``deltas``; a row comparing two methods (columns ``A`` and ``B``,
    ``method (contrast)`` labels) summarises both; other rows get ``n/a``.
    """
    if CHANGE_SOURCE not in deltas or CHANGE_SOURCE in table:
        return table
    labels = deltas["method"].astype(str) + " (" + deltas["contrast"].astype(str) + ")"
    by_label = {label: source_summary(rows) for label, rows in deltas[CHANGE_SOURCE].groupby(labels)}
    if set(METHOD_KEYS) <= set(table.columns):
        keys = table["method"].astype(str) + " (" + table["contrast"].astype(str) + ")"
        values = keys.map(by_label).fillna("n/a")
        position = table.columns.get_loc("contrast") + 1
    elif {"A", "B"} <= set(table.columns):
        values = [source_summary(deltas.loc[labels.isin([a, b]), CHANGE_SOURCE])
                  for a, b in zip(table["A"].astype(str), table["B"].astype(str))]
        position = table.columns.get_loc("B") + 1
    else:
        return table
    out = table.copy()
    out.insert(position, CHANGE_SOURCE, list(values))
    return out
