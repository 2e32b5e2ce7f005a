"""Longitudinal clinical analyses: change between visits, method comparison, change models (2.7.5).

Deltas and change descriptives; pairwise Wilcoxon of % change between
methods; OLS ``delta_outcome ~ delta_thalamus + age + sex + z(ICV) + steroid
+ interval_years``; winsorised and ordinal-logistic sensitivity analyses;
Pearson correlation of % thalamic change with PBVC.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from thalamus_bidsapp.group.clinical.change_source import CHANGE_SOURCE, record_change_source, thalamic_change
from thalamus_bidsapp.group.clinical.common import (
    ANNUAL,
    DELTA,
    ICV_Z,
    INTERVAL,
    METHOD_KEYS,
    PCT,
    SCANNER_CHANGE,
    SEX,
    STEROID,
    SUBJECT,
    VOLUME,
    Ledger,
    annotate_results,
    fdr_table,
    method_contrast_labels,
    outcome_ols,
    transformed_outcome,
    deltas_between_visits,
    fit_per_method,
)
from thalamus_bidsapp.group.clinical_config import ClinicalConfig, OutcomeSpec
from thalamus_bidsapp.stats import longitudinal as lon
from thalamus_bidsapp.stats import progression as prog
from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.pairwise import pairwise_wilcoxon

ANALYSIS = "longitudinal"
COVARIATES = ["age", SEX, ICV_Z, STEROID, INTERVAL]


def longitudinal(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                 ledger: Ledger, change: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Deltas, change descriptives, method comparison, delta regressions and sensitivity analyses (2.7.5).

    ``change``: ``group/longitudinal_change.tsv``, the thalamic change where
    the config's ``change_source`` is longitudinal (see :mod:`.change_source`).
    """
    out: dict[str, pd.DataFrame] = {}
    roles = [o.role for o in config.longitudinal_outcomes if o.role in available]
    deltas = deltas_between_visits(frame, visits, config.followup, config, roles, ledger, ANALYSIS)
    if deltas.empty:
        ledger.status(ANALYSIS, False, "no subject has a baseline and a follow-up session")
        return out
    deltas = thalamic_change(deltas, change, config, ANALYSIS)
    ledger.status(ANALYSIS, True, "", int(deltas[SUBJECT].nunique()))
    # apply the outcome transforms before differencing (log -> delta of logs)
    for spec in config.longitudinal_outcomes:
        if spec.role in roles and spec.transform == "log":
            bl = transformed_outcome(deltas[f"{spec.role}_bl"], spec, ledger, ANALYSIS)
            fu = transformed_outcome(deltas[f"{spec.role}_fu"], spec, ledger, ANALYSIS)
            deltas[f"delta_{spec.role}"] = fu - bl
    delta_cols = [SUBJECT, "session_bl", "session_fu", INTERVAL, "interval_source", *METHOD_KEYS, "diagnosis",
                  f"{VOLUME}_bl", f"{VOLUME}_fu", DELTA, PCT, ANNUAL,
                  *[c for r in roles for c in (f"{r}_bl", f"{r}_fu", f"delta_{r}")], "pbvc", STEROID, SCANNER_CHANGE,
                  CHANGE_SOURCE]
    out["longitudinal_deltas"] = deltas[[c for c in dict.fromkeys(delta_cols) if c in deltas]].copy()
    out["longitudinal_change_by_diagnosis"] = change_by_diagnosis(deltas, roles)
    labelled = deltas.assign(method_label=method_contrast_labels(deltas))
    if labelled["method_label"].nunique() >= 2:
        changes = labelled.dropna(subset=[PCT])
        # a pair needs two subjects to be tested; A - B with A the alphabetically earlier method label
        out["longitudinal_pairwise_wilcoxon"] = pairwise_wilcoxon(
            changes, PCT, "method_label", SUBJECT, min_pairs=2, order=sorted(changes["method_label"].unique()),
        )
    else:
        ledger.status("longitudinal_pairwise_wilcoxon", False, "fewer than two methods")
    out.update(_change_models(deltas, roles, config, available, ledger))
    return {name: record_change_source(table, deltas) for name, table in out.items()}


def change_by_diagnosis(deltas: pd.DataFrame, roles: Sequence[str]) -> pd.DataFrame:
    """Descriptives of volume change per method (overall and by diagnosis) and of each outcome's change."""
    desc = []
    for value in (PCT, DELTA):
        overall = lon.describe(deltas, value, METHOD_KEYS).assign(diagnosis="all")
        by_dx = lon.describe(deltas.assign(diagnosis=deltas["diagnosis"].fillna("n/a")), value,
                             [*METHOD_KEYS, "diagnosis"])
        desc += [overall, by_dx]
    clinical = deltas.drop_duplicates(SUBJECT)
    for role in roles:
        value = f"delta_{role}"
        desc.append(lon.describe(clinical, value).assign(method="n/a", contrast="n/a", diagnosis="all"))
        desc.append(lon.describe(clinical.assign(diagnosis=clinical["diagnosis"].fillna("n/a")), value, ["diagnosis"])
                    .assign(method="n/a", contrast="n/a"))
    table = pd.concat(desc, ignore_index=True)
    first = ["variable", "method", "contrast", "diagnosis"]
    return table[first + [c for c in table.columns if c not in first]]


def _change_models(deltas: pd.DataFrame, roles: Sequence[str], config: ClinicalConfig, available: set[str],
                   ledger: Ledger) -> dict[str, pd.DataFrame]:
    """Regressions of clinical change on volume change, their sensitivity analyses, and the PBVC correlation."""
    out: dict[str, pd.DataFrame] = {}
    specs = [o for o in config.longitudinal_outcomes if o.role in roles]
    if specs:
        out["longitudinal_regression"] = delta_regressions(deltas, specs, config, ledger, ANALYSIS, None)
        wins = [delta_regressions(deltas, specs, config, ledger, "longitudinal_winsorised", limits)
                for limits in config.winsorize_limits]
        if wins:
            out["longitudinal_winsorised"] = pd.concat(wins, ignore_index=True)
    else:
        ledger.status("longitudinal_regression", False, "none of the outcome columns is present")
    if "edss" in available:
        out["longitudinal_ordinal"] = ordinal_edss(deltas, config, ledger)
    else:
        ledger.status("longitudinal_ordinal", False, "no EDSS column")
    if "pbvc" in available and deltas["pbvc"].notna().any():
        out["longitudinal_pbvc"] = pbvc_correlation(deltas, ledger)
    else:
        ledger.status("longitudinal_pbvc", False, "no PBVC values")
    return out


def delta_regressions(deltas: pd.DataFrame, specs: Sequence[OutcomeSpec], config: ClinicalConfig, ledger: Ledger,
                      analysis: str, limits: tuple[float, float] | None) -> pd.DataFrame:
    """OLS of each outcome's change on the volume change (winsorised at ``limits`` when given), per method."""
    def fit(data: pd.DataFrame, keys: dict, covar: list[str], notes: list[str]) -> list[pd.DataFrame]:
        x = DELTA
        if limits is not None:
            data["delta_volume_ml_winsorised"] = lon.winsorize(data[DELTA], limits)
            x = "delta_volume_ml_winsorised"
        rows = []
        for spec in specs:
            y = f"delta_{spec.role}"
            if limits is None:
                ledger.missing(analysis, data, [y, x, *covar], **keys, outcome=spec.role)
            rows.append(outcome_ols(data, y, x, covar, notes, spec, config, keys["method"], keys["contrast"]))
        return rows

    table = fdr_table(fit_per_method(deltas, fit, [*COVARIATES, *config.covariates]), analysis)
    if limits is not None:
        table.insert(1, "winsor_limits", f"{100 * limits[0]:g}-{100 - 100 * limits[1]:g}%")
    return table


def ordinal_edss(deltas: pd.DataFrame, config: ClinicalConfig, ledger: Ledger) -> pd.DataFrame:
    """Ordinal logistic regression of the EDSS change category on the volume change, per method."""
    analysis = "longitudinal_ordinal"
    raw_delta = deltas["edss_fu"] - deltas["edss_bl"]
    if config.edss_change_categories == "thresholds":
        step = prog.progression_threshold(deltas["edss_bl"], config.progression_thresholds)
    else:
        step = config.edss_change_min
    deltas = deltas.assign(edss_change=lon.edss_change_category(raw_delta, step))

    def fit(data: pd.DataFrame, keys: dict, covar: list[str], notes: list[str]) -> pd.DataFrame:
        ledger.missing(analysis, data, ["edss_change", DELTA, *covar], **keys, outcome="edss")
        res = lon.ordinal_logistic(data, x=DELTA, y="edss_change", covar=covar, categorical=[SEX])
        # the volume coefficient only: the thresholds are in the stats API
        res = res.loc[res["term"] == DELTA].drop(columns="threshold").reset_index(drop=True)
        return annotate_results(res, {"outcome": "edss_change", **keys}, covar, notes)

    table = pd.concat(fit_per_method(deltas, fit, [*COVARIATES, *config.covariates]), ignore_index=True)
    table["p_fdr"] = p_adjust(table["p"], "fdr_bh")
    table.insert(0, "analysis", analysis)
    ledger.status(analysis, bool(table["n"].max() > 0), "", int(deltas[SUBJECT].nunique()))
    return table


def pbvc_correlation(deltas: pd.DataFrame, ledger: Ledger) -> pd.DataFrame:
    """Pearson correlation of % thalamic change with PBVC, per method (BH across methods)."""
    def fit(data: pd.DataFrame, keys: dict, covar: list[str], notes: list[str]) -> pd.DataFrame:
        ledger.missing("longitudinal_pbvc", data, [PCT, "pbvc"], **keys, outcome="pbvc")
        res = lon.pearson(data, PCT, "pbvc")
        res.insert(0, "method", keys["method"])
        res.insert(1, "contrast", keys["contrast"])
        return res

    pbvc = pd.concat(fit_per_method(deltas, fit, icv_z=False), ignore_index=True)
    pbvc["p_fdr"] = p_adjust(pbvc["p"], "fdr_bh")
    return pbvc
