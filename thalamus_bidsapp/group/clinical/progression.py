"""DeepGRAI-style disability analysis: % thalamic change by EDSS course (Zivadinov et al., DeepGRAI Registry).

EDSS course groups (progression, improvement, stable) compared by ANCOVA of
% thalamic change adjusted for age and follow-up time, Bonferroni pairwise
comparisons of the adjusted means, and a logistic model of progression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thalamus_bidsapp.group.clinical.change_source import CHANGE_SOURCE, record_change_source, thalamic_change
from thalamus_bidsapp.group.clinical.common import (
    ANNUAL,
    COURSE,
    DELTA,
    FOLLOWUP_YEARS,
    METHOD_KEYS,
    PCT,
    PROGRESSED,
    SCANNER_CHANGE,
    SEX,
    SUBJECT,
    VOLUME,
    Ledger,
    annotate_results,
    usable_covariates,
    deltas_between_visits,
    fit_per_method,
)
from thalamus_bidsapp.group.clinical_config import ClinicalConfig
from thalamus_bidsapp.stats import progression as prog
from thalamus_bidsapp.stats.multiplicity import p_adjust

ANALYSIS = "progression"


def _pairwise(data: pd.DataFrame, dv: str, between: str, covar: list[str], categorical: list[str]) -> pd.DataFrame:
    """Bonferroni pairwise comparisons; the table keeps p, p_bonferroni, p_tukey and the interval's adjustment."""
    res = prog.ancova_pairwise(data, dv, between, covar, categorical, padjust="bonferroni")
    return res.drop(columns="p_adjusted").rename(columns={"padjust": "ci_adjust"})


_ANCOVA_TABLES = (("progression_ancova", prog.ancova), ("progression_adjusted_means", prog.ancova_adjusted_means),
                  ("progression_pairwise", _pairwise))


def progression(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                ledger: Ledger, change: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """DeepGRAI-style analysis of % thalamic change by EDSS course (Zivadinov et al., DeepGRAI Registry).

    ``change``: ``group/longitudinal_change.tsv``, the thalamic change where
    the config's ``change_source`` is longitudinal (see :mod:`.change_source`).
    """
    out: dict[str, pd.DataFrame] = {}
    if "edss" not in available:
        ledger.status(ANALYSIS, False, "no EDSS column")
        return out
    deltas = deltas_between_visits(frame, visits, config.progression_followup, config, ["edss"], ledger, ANALYSIS)
    if deltas.empty:
        ledger.status(ANALYSIS, False, "no subject has a baseline and a follow-up session")
        return out
    deltas = thalamic_change(deltas, change, config, ANALYSIS)
    deltas[COURSE] = prog.classify_edss_course(deltas["edss_bl"], deltas["edss_fu"],
                                               config.progression_thresholds).to_numpy()
    deltas[PROGRESSED] = np.where(deltas[COURSE].isna(), np.nan, (deltas[COURSE] == prog.PROGRESSION).astype(float))
    per_subject = deltas.drop_duplicates(SUBJECT)
    ledger.exclude(ANALYSIS, "EDSS course unknown (EDSS missing at baseline or follow-up)",
                   int(per_subject[COURSE].isna().sum()))
    keep = [SUBJECT, "session_bl", "session_fu", FOLLOWUP_YEARS, *METHOD_KEYS, "edss_bl", "edss_fu", COURSE,
            PROGRESSED, f"{VOLUME}_bl", f"{VOLUME}_fu", DELTA, PCT, ANNUAL, "age", SEX, "disease_duration",
            SCANNER_CHANGE, CHANGE_SOURCE]
    out["progression_subjects"] = deltas[[c for c in keep if c in deltas]].copy()
    n_groups = per_subject[COURSE].dropna().nunique()
    ledger.status(ANALYSIS, n_groups >= 1, "" if n_groups else "no EDSS course could be classified",
                  int(per_subject[COURSE].notna().sum()))
    out.update(_course_models(deltas, config, ledger))
    return {name: record_change_source(table, deltas) for name, table in out.items()}


def _course_models(deltas: pd.DataFrame, config: ClinicalConfig, ledger: Ledger) -> dict[str, pd.DataFrame]:
    """ANCOVA tables and the logistic model of progression, per method."""
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name, _ in _ANCOVA_TABLES}
    tables["progression_logistic"] = []

    def fit(data: pd.DataFrame, keys: dict, _covar: list[str], _notes: list[str]) -> None:
        data = data.assign(**{COURSE: pd.Categorical(data[COURSE], categories=list(prog.COURSE_LEVELS))})
        covar = usable_covariates(data, list(config.ancova_covariates), [])
        if data[COURSE].dropna().nunique() >= 2:
            ledger.missing("progression_ancova", data, [PCT, COURSE, *covar], outcome=PCT, **keys)
            for name, func in _ANCOVA_TABLES:
                res = func(data, PCT, COURSE, covar, categorical=[SEX])
                if not res.empty:
                    tables[name].append(annotate_results(res, keys, covar))
        else:
            ledger.status(f"progression_ancova:{keys['method']}:{keys['contrast']}", False,
                          "fewer than two EDSS course groups")
        lnotes: list[str] = []
        lcovar = usable_covariates(data, list(config.logistic_covariates), lnotes)
        ledger.missing("progression_logistic", data, [PROGRESSED, PCT, *lcovar], outcome=PROGRESSED, **keys)
        res = prog.logistic(data, x=PCT, y=PROGRESSED, covar=lcovar, categorical=[SEX])
        res = res.loc[res["term"] == PCT].reset_index(drop=True)
        tables["progression_logistic"].append(annotate_results(res, keys, lcovar, lnotes))

    fit_per_method(deltas, fit, icv_z=False)
    out: dict[str, pd.DataFrame] = {}
    for name, parts in tables.items():
        if parts:
            out[name] = pd.concat(parts, ignore_index=True)
        else:
            ledger.status(name, False, "fewer than two EDSS course groups for every method")
    if "progression_logistic" in out:
        out["progression_logistic"]["p_fdr"] = p_adjust(out["progression_logistic"]["p"], "fdr_bh")
    return out
