"""Cross-sectional clinical associations: outcome ~ thalamus (mL) + age + sex + z(ICV) at baseline (2.7.4)."""

from __future__ import annotations

import pandas as pd

from thalamus_bidsapp.group.clinical.common import (
    ICV_Z,
    SEX,
    SUBJECT,
    VOLUME,
    Ledger,
    fdr_table,
    outcome_ols,
    transformed_outcome,
    baseline_rows,
    fit_per_method,
)
from thalamus_bidsapp.group.clinical_config import ClinicalConfig

ANALYSIS = "cross_sectional"


def cross_sectional(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                    ledger: Ledger) -> pd.DataFrame | None:
    """OLS of each outcome on baseline thalamus volume per method (paper section 2.7.4)."""
    outcomes = [o for o in config.cross_sectional_outcomes if o.role in available]
    for o in config.cross_sectional_outcomes:
        if o.role not in available:
            ledger.status(f"{ANALYSIS}:{o.role}", False, f"no column for {o.role}")
    if not outcomes:
        ledger.status(ANALYSIS, False, "none of the outcome columns is present")
        return None
    base = baseline_rows(frame, visits, config, ledger, ANALYSIS)
    if base.empty:
        ledger.status(ANALYSIS, False, "no baseline sessions")
        return None

    def fit(data: pd.DataFrame, keys: dict, covar: list[str], notes: list[str]) -> list[pd.DataFrame]:
        rows = []
        for spec in outcomes:
            y = f"y_{spec.role}"
            data[y] = transformed_outcome(data[spec.role], spec, ledger, ANALYSIS, **keys)
            ledger.missing(ANALYSIS, data, [y, VOLUME, *covar], {y: spec.role}, **keys, outcome=spec.role)
            rows.append(outcome_ols(data, y, VOLUME, covar, notes, spec, config, keys["method"], keys["contrast"]))
        return rows

    table = fdr_table(fit_per_method(base, fit, ["age", SEX, ICV_Z, *config.covariates]), ANALYSIS)
    ledger.status(ANALYSIS, bool(table["n"].max() > 0), "" if table["n"].max() > 0 else "no complete rows",
                  int(base[SUBJECT].nunique()))
    return table
