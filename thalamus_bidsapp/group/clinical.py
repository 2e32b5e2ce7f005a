"""Group level, clinical part: cross-sectional, longitudinal, disability progression, power.

Entry point :func:`run_clinical`. It reads the long volumes table (one row per
subject, session, method and contrast, with the clinical columns of
participants.tsv and the sessions tables joined), runs

- cross-sectional OLS ``outcome ~ thalamus_ml + age + sex + z(ICV)`` on each
  subject's baseline session (Ibrahim et al. 2026, section 2.7.4);
- longitudinal OLS ``delta_outcome ~ delta_thalamus_ml + age + sex + z(ICV)
  + steroid + interval_years`` between baseline and follow-up, with pairwise
  Wilcoxon tests of % change between methods, descriptives by diagnosis,
  winsorised and ordinal-logistic sensitivity analyses and the Pearson
  correlation with PBVC (section 2.7.5);
- the DeepGRAI disability analysis: EDSS course groups compared by ANCOVA
  of % thalamic change adjusted for age and follow-up time, Bonferroni
  pairwise comparisons, and a logistic model of progression (reference 000);
- the sample size per arm per method for a trial on annual thalamic atrophy;

and writes one TSV (with JSON sidecar) per analysis and the figures.

Missing data: every model uses the complete cases of its columns. What was
left out, and why, is counted in ``clinical_exclusions.tsv`` (and logged);
``clinical_analyses.tsv`` says which analyses ran and why others were skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from thalamus_bidsapp.bidsio.atomic import atomic_path, write_tsv
from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.group.clinical_config import ClinicalConfig, OutcomeSpec, load_clinical_config
from thalamus_bidsapp.stats import longitudinal as lon
from thalamus_bidsapp.stats import power as pw
from thalamus_bidsapp.stats import progression as prog
from thalamus_bidsapp.stats.multiplicity import p_adjust
from thalamus_bidsapp.stats.pairwise import pairwise_wilcoxon
from thalamus_bidsapp.stats.regression import adjust_family, ols, zscore

LOGGER = logging.getLogger(__name__)

SUBJECT = "participant_id"
SESSION = "session_id"
METHOD_KEYS = ["method", "contrast"]
VOLUMES_SOURCE = "group/volumes.tsv"

NUMERIC_ROLES = ("age", "edss", "t25fw", "nhpt", "sdmt", "disease_duration", "pbvc", "time_years")
TEXT_ROLES = ("diagnosis", "scanner", "acq_time")
SEX = "sex"
STEROID = "steroid"
VOLUME = "volume_ml"
ICV = "icv_ml"
ICV_Z = "icv_z"
INTERVAL = "interval_years"
FOLLOWUP_YEARS = "followup_years"
SCANNER_CHANGE = "scanner_change"
PCT = "pct_volume_ml"
DELTA = "delta_volume_ml"
ANNUAL = "annual_pct_change"
COURSE = "edss_course"
PROGRESSED = "progressed"

FIGURE_FORMATS = ("png", "svg")


# ============================================================== bookkeeping
class _Ledger:
    """Counts of rows left out and the status of each analysis, for the report tables."""

    def __init__(self) -> None:
        self.exclusions: list[dict[str, Any]] = []
        self.analyses: list[dict[str, Any]] = []

    def exclude(self, analysis: str, reason: str, n_rows: int, *, method: str = "n/a", contrast: str = "n/a",
                outcome: str = "n/a") -> None:
        if n_rows <= 0:
            return
        self.exclusions.append({"analysis": analysis, "method": method, "contrast": contrast, "outcome": outcome,
                                "reason": reason, "n_rows": int(n_rows)})
        LOGGER.info("%s [%s %s %s]: %d row(s) left out: %s", analysis, method, contrast, outcome, n_rows, reason)

    def missing(self, analysis: str, frame: pd.DataFrame, columns: Iterable[str],
                names: Mapping[str, str] | None = None, **keys: str) -> None:
        """Record, per column, how many rows of ``frame`` miss it (a row may miss several)."""
        names = names or {}
        for column in dict.fromkeys(columns):
            if column not in frame:
                continue
            values = frame[column]
            n = int((~np.isfinite(values.astype(float))).sum()) if pd.api.types.is_numeric_dtype(values) else int(values.isna().sum())
            self.exclude(analysis, f"missing {names.get(column, column)}", n, **keys)

    def status(self, analysis: str, ran: bool, reason: str = "", n_subjects: int = 0) -> None:
        self.analyses.append({"analysis": analysis, "status": "done" if ran else "skipped", "reason": reason,
                              "n_subjects": int(n_subjects)})
        if ran:
            LOGGER.info("clinical analysis %s: done (%d subjects)", analysis, n_subjects)
        else:
            LOGGER.warning("clinical analysis %s skipped: %s", analysis, reason)

    def exclusion_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.exclusions, columns=["analysis", "method", "contrast", "outcome", "reason", "n_rows"])

    def analysis_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.analyses, columns=["analysis", "status", "reason", "n_subjects"])


# ============================================================== preparation
def prepare_volumes(volumes: pd.DataFrame, config: ClinicalConfig, ledger: _Ledger | None = None,
                    source: str | os.PathLike = VOLUMES_SOURCE) -> tuple[pd.DataFrame, set[str]]:
    """Validate the volumes table and bring the clinical columns to their role names and units.

    Returns
    -------
    frame, available
        The table with canonical columns (participant_id, session_id, method,
        contrast, volume_ml, icv_ml and one column per role) and the set of
        roles found in the dataset.

    Raises
    ------
    ThalamusError
        A column the analyses need is missing (exit code 65).
    """
    ledger = ledger or _Ledger()
    for column in (SUBJECT, "method", "contrast", VOLUME, ICV):
        if column not in volumes.columns:
            raise ThalamusError(f"column {column!r} is missing from {os.fspath(source)}", exit_code=EXIT_DATAERR)
    config.require(volumes, config.required_roles(), source)

    frame = pd.DataFrame(index=volumes.index)
    frame[SUBJECT] = volumes[SUBJECT].astype(str)
    if SESSION in volumes:
        frame[SESSION] = volumes[SESSION].astype("object").where(volumes[SESSION].notna(), None)
    else:
        frame[SESSION] = None
    frame["method"] = volumes["method"].astype(str)
    frame["contrast"] = volumes["contrast"].fillna("n/a").astype(str)
    for column in (VOLUME, ICV):
        frame[column] = _numeric(volumes[column], column, ledger)
    if "diagnosis" not in config.columns:
        frame["diagnosis"] = np.nan

    available: set[str] = set()
    for role, spec in config.columns.items():
        column = config.resolve(role, volumes)
        if column is None:
            frame[role] = np.nan
            if role in NUMERIC_ROLES or role in TEXT_ROLES or role in (SEX, STEROID):
                LOGGER.info("clinical role %r: no column %s in %s; analyses that need it are skipped",
                            role, " / ".join(spec.candidates), os.fspath(source))
            continue
        available.add(role)
        raw = volumes[column]
        if role == SEX:
            frame[role] = _map_levels(raw, config.sex_levels, role, ledger)
        elif role == STEROID:
            mapped = _map_levels(raw, config.boolean_values, role, ledger)
            frame[role] = mapped.map({"true": 1.0, "false": 0.0}).astype(float)
        elif role in TEXT_ROLES or spec.units in ("category",):
            frame[role] = raw.astype("object").where(raw.notna(), None)
            frame[role] = frame[role].map(lambda v: None if v is None else str(v))
        else:
            frame[role] = _numeric(raw, role, ledger) * spec.scale

    # Volumes the config leaves out, and volumes that cannot be right
    selected = [config.method_selected(m, c) for m, c in zip(frame["method"], frame["contrast"])]
    selected = pd.Series(selected, index=frame.index)
    for (method, contrast), n in frame.loc[~selected].groupby(METHOD_KEYS).size().items():
        ledger.exclude("all", "method excluded by the clinical config", int(n), method=method, contrast=contrast)
    frame = frame.loc[selected]
    bad = ~(np.isfinite(frame[VOLUME]) & (frame[VOLUME] > 0))
    for (method, contrast), n in frame.loc[bad].groupby(METHOD_KEYS).size().items():
        ledger.exclude("all", "thalamus volume missing or not positive", int(n), method=method, contrast=contrast)
    frame = frame.loc[~bad]
    key = [SUBJECT, SESSION, *METHOD_KEYS]
    dup = frame.assign(**{SESSION: frame[SESSION].fillna("n/a")}).duplicated(key, keep="first")
    if dup.any():
        ledger.exclude("all", "duplicate subject/session/method/contrast row (first kept)", int(dup.sum()))
        frame = frame.loc[~dup]
    return frame.reset_index(drop=True), available


def _numeric(values: pd.Series, name: str, ledger: _Ledger) -> pd.Series:
    converted = pd.to_numeric(values, errors="coerce").astype(float)
    bad = converted.isna() & values.notna()
    if bad.any():
        examples = ", ".join(sorted({str(v) for v in values[bad]})[:3])
        ledger.exclude("all", f"non-numeric value in {name} (e.g. {examples}); read as missing", int(bad.sum()),
                       outcome=name)
    return converted


def _map_levels(values: pd.Series, levels: Mapping[str, Sequence[str]], role: str, ledger: _Ledger) -> pd.Series:
    lookup = {alias: level for level, aliases in levels.items() for alias in (*aliases, level.lower())}

    def norm(value: object) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
            value = int(value)
        return lookup.get(str(value).strip().lower(), "?")

    mapped = values.astype("object").map(norm)
    unknown = mapped == "?"
    if unknown.any():
        examples = ", ".join(sorted({str(v) for v in values[unknown]})[:3])
        ledger.exclude("all", f"unrecognised {role} value (e.g. {examples}); read as missing", int(unknown.sum()),
                       outcome=role)
    return mapped.where(~unknown, None)


def _session_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per subject and session with the session-level clinical columns."""
    cols = [c for c in frame.columns if c not in (*METHOD_KEYS, VOLUME, ICV)]
    table = frame.loc[frame[SESSION].notna(), cols].drop_duplicates([SUBJECT, SESSION], keep="first")
    return table.reset_index(drop=True)


def _ordered_visits(frame: pd.DataFrame) -> pd.DataFrame:
    sessions = _session_table(frame)
    if sessions.empty:
        return sessions.assign(visit_rank=pd.Series(dtype=int))
    return lon.order_visits(sessions, acq_time="acq_time", time_years="time_years")


# ============================================================== cross-sectional
def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _transform(values: pd.Series, spec: OutcomeSpec, ledger: _Ledger, analysis: str, **keys: str) -> pd.Series:
    if spec.transform == "log":
        bad = values.notna() & ~(values > 0)
        ledger.exclude(analysis, f"{spec.role} not positive, cannot be log-transformed", int(bad.sum()),
                       outcome=spec.role, **keys)
        with np.errstate(divide="ignore", invalid="ignore"):
            return pd.Series(np.where(values > 0, np.log(values.where(values > 0)), np.nan), index=values.index)
    return values


def _usable_covariates(data: pd.DataFrame, wanted: Sequence[str], notes: list[str]) -> list[str]:
    """Covariates with at least one value: an absent optional column would otherwise exclude every row."""
    out = []
    for name in wanted:
        if name in data and data[name].notna().any():
            out.append(name)
        else:
            notes.append(f"covariate {name} unavailable, left out")
    return out


def cross_sectional(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                    ledger: _Ledger) -> pd.DataFrame | None:
    """OLS of each outcome on baseline thalamus volume per method (paper section 2.7.4)."""
    analysis = "cross_sectional"
    outcomes = [o for o in config.cross_sectional_outcomes if o.role in available]
    for o in config.cross_sectional_outcomes:
        if o.role not in available:
            ledger.status(f"{analysis}:{o.role}", False, f"no column for {o.role}")
    if not outcomes:
        ledger.status(analysis, False, "none of the outcome columns is present")
        return None
    base = _baseline_rows(frame, visits, config, ledger, analysis)
    if base.empty:
        ledger.status(analysis, False, "no baseline sessions")
        return None
    rows = []
    for (method, contrast), data in base.groupby(METHOD_KEYS, sort=True):
        data = data.copy()
        data[ICV_Z] = zscore(data[ICV])
        notes: list[str] = []
        covar = _usable_covariates(data, ["age", SEX, ICV_Z], notes)
        for spec in outcomes:
            y = f"y_{spec.role}"
            data[y] = _transform(data[spec.role], spec, ledger, analysis, method=method, contrast=contrast)
            ledger.missing(analysis, data, [y, VOLUME, *covar], {y: spec.role}, method=method, contrast=contrast,
                           outcome=spec.role)
            rows.append(_outcome_ols(data, y, VOLUME, covar, notes, spec, config, method, contrast))
    table = _fdr_table(rows, analysis)
    ledger.status(analysis, bool(table["n"].max() > 0), "" if table["n"].max() > 0 else "no complete rows",
                  int(base[SUBJECT].nunique()))
    return table


def _annotate(res: pd.DataFrame, front: Mapping[str, object], covar: Sequence[str],
              notes: Sequence[str] | None = None) -> pd.DataFrame:
    """Put the ``front`` columns first (in order), add the covariates used and prepend ``notes`` to ``note``."""
    for i, (name, value) in enumerate(front.items()):
        res.insert(i, name, value)
    res["covariates"] = " + ".join(covar)
    if notes is not None:
        res["note"] = "; ".join(n for n in [*notes, *res["note"].astype(str)] if n)
    return res


def _outcome_ols(data: pd.DataFrame, y: str, x: str, covar: Sequence[str], notes: Sequence[str], spec: OutcomeSpec,
                 config: ClinicalConfig, method: object, contrast: object) -> pd.DataFrame:
    """OLS of one outcome on ``x`` for one method, labelled with outcome, transform, method and contrast."""
    res = ols(data, x=x, y=y, covar=covar, categorical=[SEX], hc3=spec.hc3, hc3_alpha=config.hc3_alpha)
    res = res.loc[res["term"] == x].reset_index(drop=True)  # the table reports the volume term only
    res["hc3_policy"] = spec.hc3
    front = {"outcome": spec.role, "transform": spec.transform, "method": method, "contrast": contrast}
    return _annotate(res, front, covar, notes)


def _fdr_table(rows: Sequence[pd.DataFrame], analysis: str) -> pd.DataFrame:
    """The rows of a family of models in one table, with BH-adjusted p (``p_fdr``) and stars."""
    table = adjust_family(pd.concat(rows, ignore_index=True), "p", "fdr_bh", "p_fdr")
    table["significance"] = table["p_fdr"].map(_stars)
    table.insert(0, "analysis", analysis)
    return table


def _baseline_rows(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, ledger: _Ledger,
                   analysis: str) -> pd.DataFrame:
    no_session = frame[frame[SESSION].isna()]
    with_session = frame[frame[SESSION].notna()]
    if visits.empty:
        return no_session
    if config.baseline == "first":
        base_sessions = visits.loc[visits["visit_rank"] == 0, [SUBJECT, SESSION]]
    else:
        base_sessions = visits.loc[visits[SESSION] == config.baseline, [SUBJECT, SESSION]]
        missing = set(visits[SUBJECT]) - set(base_sessions[SUBJECT])
        ledger.exclude(analysis, f"subject has no baseline session {config.baseline}", len(missing))
    base = with_session.merge(base_sessions, on=[SUBJECT, SESSION], how="inner")
    # subjects without sessions in a dataset that has them: their single visit is the baseline
    extra = no_session[~no_session[SUBJECT].isin(base[SUBJECT])]
    return pd.concat([base, extra], ignore_index=True)


# ============================================================== longitudinal
_KEEP = ["age", SEX, ICV, "diagnosis", "disease_duration", STEROID, "scanner", "pbvc", "edss"]


def _deltas(frame: pd.DataFrame, visits: pd.DataFrame, followup: str, config: ClinicalConfig,
            outcome_roles: Sequence[str], ledger: _Ledger, analysis: str) -> pd.DataFrame:
    if visits.empty:
        return pd.DataFrame()
    pairs = lon.select_visit_pairs(visits, config.baseline, followup)
    n_subjects = visits[SUBJECT].nunique()
    ledger.exclude(analysis, f"subject without a follow-up session ({followup})", n_subjects - len(pairs))
    if pairs.empty:
        return pd.DataFrame()
    no_interval = pairs[INTERVAL].isna()
    ledger.exclude(analysis, "visit interval unknown (no acq_time or time_years)", int(no_interval.sum()))
    values = [VOLUME, *outcome_roles]
    keep = [c for c in _KEEP if c not in values]
    deltas = lon.paired_deltas(frame, pairs, values, by=METHOD_KEYS, pct=[VOLUME], keep=keep)
    with np.errstate(divide="ignore", invalid="ignore"):
        deltas[ANNUAL] = np.where(deltas[INTERVAL] > 0, deltas[PCT] / deltas[INTERVAL], np.nan)
    # covariates at baseline (age, sex, ICV, diagnosis, disease duration); treatment and PBVC at follow-up,
    # because the sessions table records steroids "since the last visit" and SIENA's PBVC on the follow-up
    rename = {f"{c}_bl": c for c in ("age", SEX, ICV, "diagnosis", "disease_duration")}
    rename.update({f"{STEROID}_fu": STEROID, "pbvc_fu": "pbvc"})
    deltas = deltas.rename(columns=rename)
    deltas[SCANNER_CHANGE] = np.where(
        deltas["scanner_bl"].notna() & deltas["scanner_fu"].notna(),
        (deltas["scanner_bl"].astype(str) != deltas["scanner_fu"].astype(str)).astype(float), np.nan,
    )
    deltas[FOLLOWUP_YEARS] = deltas[INTERVAL]
    return deltas


def longitudinal(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                 ledger: _Ledger) -> dict[str, pd.DataFrame]:
    """Deltas, change descriptives, method comparison, delta regressions and sensitivity analyses (2.7.5)."""
    analysis = "longitudinal"
    out: dict[str, pd.DataFrame] = {}
    roles = [o.role for o in config.longitudinal_outcomes if o.role in available]
    deltas = _deltas(frame, visits, config.followup, config, roles, ledger, analysis)
    if deltas.empty:
        ledger.status(analysis, False, "no subject has a baseline and a follow-up session")
        return out
    n_sub = int(deltas[SUBJECT].nunique())
    ledger.status(analysis, True, "", n_sub)
    # apply the outcome transforms before differencing (log -> delta of logs)
    for spec in config.longitudinal_outcomes:
        if spec.role in roles and spec.transform == "log":
            bl = _transform(deltas[f"{spec.role}_bl"], spec, ledger, analysis)
            fu = _transform(deltas[f"{spec.role}_fu"], spec, ledger, analysis)
            deltas[f"delta_{spec.role}"] = fu - bl
    delta_cols = [SUBJECT, "session_bl", "session_fu", INTERVAL, "interval_source", *METHOD_KEYS, "diagnosis",
                  f"{VOLUME}_bl", f"{VOLUME}_fu", DELTA, PCT, ANNUAL,
                  *[c for r in roles for c in (f"{r}_bl", f"{r}_fu", f"delta_{r}")], "pbvc", STEROID, SCANNER_CHANGE]
    out["longitudinal_deltas"] = deltas[[c for c in dict.fromkeys(delta_cols) if c in deltas]].copy()

    # descriptives of change, overall and by diagnosis
    desc = []
    for value in (PCT, DELTA):
        overall = lon.describe(deltas, value, METHOD_KEYS).assign(diagnosis="all")
        by_dx = lon.describe(deltas.assign(diagnosis=deltas["diagnosis"].fillna("n/a")), value, [*METHOD_KEYS, "diagnosis"])
        desc += [overall, by_dx]
    clinical = deltas.drop_duplicates(SUBJECT)
    for role in roles:
        value = f"delta_{role}"
        desc.append(lon.describe(clinical, value).assign(method="n/a", contrast="n/a", diagnosis="all"))
        desc.append(lon.describe(clinical.assign(diagnosis=clinical["diagnosis"].fillna("n/a")), value, ["diagnosis"])
                    .assign(method="n/a", contrast="n/a"))
    table = pd.concat(desc, ignore_index=True)
    first = ["variable", "method", "contrast", "diagnosis"]
    out["longitudinal_change_by_diagnosis"] = table[first + [c for c in table.columns if c not in first]]

    # methods compared on the same subjects
    labelled = deltas.assign(method_label=_labels(deltas))
    if labelled["method_label"].nunique() >= 2:
        # a pair needs two subjects to be tested
        out["longitudinal_pairwise_wilcoxon"] = pairwise_wilcoxon(
            labelled.dropna(subset=[PCT]), PCT, "method_label", SUBJECT, min_pairs=2,
        )
    else:
        ledger.status("longitudinal_pairwise_wilcoxon", False, "fewer than two methods")

    # regressions of clinical change on volume change
    covar_wanted = ["age", SEX, ICV_Z, STEROID, INTERVAL]
    specs = [o for o in config.longitudinal_outcomes if o.role in roles]
    if specs:
        out["longitudinal_regression"] = _delta_regressions(deltas, specs, covar_wanted, config, ledger, analysis, None)
        wins = [_delta_regressions(deltas, specs, covar_wanted, config, ledger, "longitudinal_winsorised", limits)
                for limits in config.winsorize_limits]
        if wins:
            out["longitudinal_winsorised"] = pd.concat(wins, ignore_index=True)
    else:
        ledger.status("longitudinal_regression", False, "none of the outcome columns is present")

    # ordinal EDSS change
    if "edss" in available:
        out["longitudinal_ordinal"] = _ordinal_edss(deltas, covar_wanted, config, ledger)
    else:
        ledger.status("longitudinal_ordinal", False, "no EDSS column")

    # PBVC
    if "pbvc" in available and deltas["pbvc"].notna().any():
        rows = []
        for (method, contrast), data in deltas.groupby(METHOD_KEYS, sort=True):
            ledger.missing("longitudinal_pbvc", data, [PCT, "pbvc"], method=method, contrast=contrast, outcome="pbvc")
            res = lon.pearson(data, PCT, "pbvc")
            res.insert(0, "method", method)
            res.insert(1, "contrast", contrast)
            rows.append(res)
        pbvc = pd.concat(rows, ignore_index=True)
        pbvc["p_fdr"] = p_adjust(pbvc["p"], "fdr_bh")
        out["longitudinal_pbvc"] = pbvc
    else:
        ledger.status("longitudinal_pbvc", False, "no PBVC values")
    return out


def _labels(frame: pd.DataFrame) -> pd.Series:
    return frame["method"].astype(str) + " (" + frame["contrast"].astype(str) + ")"


def _delta_regressions(deltas: pd.DataFrame, specs: Sequence[OutcomeSpec], covar_wanted: Sequence[str],
                       config: ClinicalConfig, ledger: _Ledger, analysis: str,
                       limits: tuple[float, float] | None) -> pd.DataFrame:
    rows = []
    for (method, contrast), data in deltas.groupby(METHOD_KEYS, sort=True):
        data = data.copy()
        data[ICV_Z] = zscore(data[ICV])
        x = DELTA
        if limits is not None:
            data["delta_volume_ml_winsorised"] = lon.winsorize(data[DELTA], limits)
            x = "delta_volume_ml_winsorised"
        notes: list[str] = []
        covar = _usable_covariates(data, covar_wanted, notes)
        for spec in specs:
            y = f"delta_{spec.role}"
            if limits is None:
                ledger.missing(analysis, data, [y, x, *covar], method=method, contrast=contrast, outcome=spec.role)
            rows.append(_outcome_ols(data, y, x, covar, notes, spec, config, method, contrast))
    table = _fdr_table(rows, analysis)
    if limits is not None:
        table.insert(1, "winsor_limits", f"{100 * limits[0]:g}-{100 - 100 * limits[1]:g}%")
    return table


def _ordinal_edss(deltas: pd.DataFrame, covar_wanted: Sequence[str], config: ClinicalConfig,
                  ledger: _Ledger) -> pd.DataFrame:
    analysis = "longitudinal_ordinal"
    raw_delta = deltas["edss_fu"] - deltas["edss_bl"]
    if config.edss_change_categories == "thresholds":
        step = prog.progression_threshold(deltas["edss_bl"], config.progression_thresholds)
    else:
        step = config.edss_change_min
    deltas = deltas.assign(edss_change=lon.edss_change_category(raw_delta, step))
    rows = []
    for (method, contrast), data in deltas.groupby(METHOD_KEYS, sort=True):
        data = data.copy()
        data[ICV_Z] = zscore(data[ICV])
        notes: list[str] = []
        covar = _usable_covariates(data, covar_wanted, notes)
        ledger.missing(analysis, data, ["edss_change", DELTA, *covar], method=method, contrast=contrast, outcome="edss")
        res = lon.ordinal_logistic(data, x=DELTA, y="edss_change", covar=covar, categorical=[SEX])
        res = res.loc[res["term"] == DELTA].reset_index(drop=True)  # thresholds are in the stats API
        rows.append(_annotate(res, {"outcome": "edss_change", "method": method, "contrast": contrast}, covar, notes))
    table = pd.concat(rows, ignore_index=True)
    table["p_fdr"] = p_adjust(table["p"], "fdr_bh")
    table.insert(0, "analysis", analysis)
    ledger.status(analysis, bool(table["n"].max() > 0), "", int(deltas[SUBJECT].nunique()))
    return table


# ============================================================== progression
def progression(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, available: set[str],
                ledger: _Ledger) -> dict[str, pd.DataFrame]:
    """DeepGRAI-style analysis of % thalamic change by EDSS course (reference 000)."""
    analysis = "progression"
    out: dict[str, pd.DataFrame] = {}
    if "edss" not in available:
        ledger.status(analysis, False, "no EDSS column")
        return out
    deltas = _deltas(frame, visits, config.progression_followup, config, ["edss"], ledger, analysis)
    if deltas.empty:
        ledger.status(analysis, False, "no subject has a baseline and a follow-up session")
        return out
    deltas[COURSE] = prog.classify_edss_course(deltas["edss_bl"], deltas["edss_fu"], config.progression_thresholds).to_numpy()
    deltas[PROGRESSED] = np.where(deltas[COURSE].isna(), np.nan, (deltas[COURSE] == prog.PROGRESSION).astype(float))
    per_subject = deltas.drop_duplicates(SUBJECT)
    ledger.exclude(analysis, "EDSS course unknown (EDSS missing at baseline or follow-up)",
                   int(per_subject[COURSE].isna().sum()))
    keep = [SUBJECT, "session_bl", "session_fu", FOLLOWUP_YEARS, *METHOD_KEYS, "edss_bl", "edss_fu", COURSE,
            PROGRESSED, f"{VOLUME}_bl", f"{VOLUME}_fu", DELTA, PCT, ANNUAL, "age", SEX, "disease_duration",
            SCANNER_CHANGE]
    out["progression_subjects"] = deltas[[c for c in keep if c in deltas]].copy()
    n_groups = per_subject[COURSE].dropna().nunique()
    ledger.status(analysis, n_groups >= 1, "" if n_groups else "no EDSS course could be classified",
                  int(per_subject[COURSE].notna().sum()))

    ancova_covar = [c for c in config.ancova_covariates]
    logit_covar = [c for c in config.logistic_covariates]
    tables: dict[str, list[pd.DataFrame]] = {"progression_ancova": [], "progression_adjusted_means": [],
                                             "progression_pairwise": [], "progression_logistic": []}
    for (method, contrast), data in deltas.groupby(METHOD_KEYS, sort=True):
        data = data.assign(**{COURSE: pd.Categorical(data[COURSE], categories=list(prog.COURSE_LEVELS))})
        notes: list[str] = []
        covar = _usable_covariates(data, ancova_covar, notes)
        keys = {"method": method, "contrast": contrast}
        if data[COURSE].dropna().nunique() >= 2:
            ledger.missing("progression_ancova", data, [PCT, COURSE, *covar], outcome=PCT, **keys)
            for name, func in (("progression_ancova", prog.ancova), ("progression_adjusted_means", prog.ancova_adjusted_means),
                               ("progression_pairwise", prog.ancova_pairwise)):
                res = func(data, PCT, COURSE, covar, categorical=[SEX])
                if not res.empty:
                    tables[name].append(_annotate(res, keys, covar))
        else:
            ledger.status(f"progression_ancova:{method}:{contrast}", False, "fewer than two EDSS course groups")
        lnotes: list[str] = []
        lcovar = _usable_covariates(data, logit_covar, lnotes)
        ledger.missing("progression_logistic", data, [PROGRESSED, PCT, *lcovar], outcome=PROGRESSED, **keys)
        res = prog.logistic(data, x=PCT, y=PROGRESSED, covar=lcovar, categorical=[SEX])
        res = res.loc[res["term"] == PCT].reset_index(drop=True)
        tables["progression_logistic"].append(_annotate(res, keys, lcovar, lnotes))
    for name, parts in tables.items():
        if parts:
            out[name] = pd.concat(parts, ignore_index=True)
        else:
            ledger.status(name, False, "fewer than two EDSS course groups for every method")
    if "progression_logistic" in out:
        out["progression_logistic"]["p_fdr"] = p_adjust(out["progression_logistic"]["p"], "fdr_bh")
    return out


# ============================================================== power
def power_table(deltas: pd.DataFrame | None, config: ClinicalConfig, ledger: _Ledger) -> pd.DataFrame | None:
    """Subjects per arm per method for the configured difference in annual % atrophy."""
    if deltas is None or deltas.empty or not np.isfinite(deltas[ANNUAL]).any():
        ledger.status("power", False, "no annualised % change (needs follow-up sessions with known intervals)")
        return None
    table = pw.sample_size_table(deltas, ANNUAL, METHOD_KEYS, difference=config.power_difference,
                                 power=config.power, alpha=config.power_alpha)
    ledger.status("power", True, "", int(deltas[SUBJECT].nunique()))
    return table


# ============================================================== figures
def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FIGURE_FORMATS:
        path = out_dir / "figures" / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    return paths


def forest_figure(table: pd.DataFrame, title: str) -> Figure:
    """Beta with CI per method, one panel per outcome; stars mark BH-adjusted significance."""
    outcomes = list(dict.fromkeys(table["outcome"]))
    labels = sorted(set(_labels(table)))
    fig = Figure(figsize=(3.2 * len(outcomes) + 1.5, 0.45 * len(labels) + 2.0), layout="constrained")
    axes = fig.subplots(1, len(outcomes), sharey=True, squeeze=False)[0]
    ypos = {label: i for i, label in enumerate(labels)}
    for ax, outcome in zip(axes, outcomes):
        sub = table[table["outcome"] == outcome]
        for _, row in sub.iterrows():
            y = ypos[f"{row['method']} ({row['contrast']})"]
            if not np.isfinite(row["beta"]):
                continue
            color = "tab:red" if row.get("significance", "") else "tab:blue"
            ax.errorbar(row["beta"], y, xerr=[[row["beta"] - row["ci_low"]], [row["ci_high"] - row["beta"]]],
                        fmt="o", color=color, capsize=3)
            if row.get("significance", ""):
                ax.annotate(row["significance"], (row["ci_high"], y), xytext=(3, -3), textcoords="offset points",
                            fontsize=9, color=color)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        transform = sub["transform"].iloc[0] if len(sub) else "none"
        ax.set_title(f"{outcome}" + (" (log)" if transform == "log" else ""))
        ax.set_xlabel("beta per mL")
    axes[0].set_yticks(range(len(labels)), labels)
    fig.suptitle(f"{title}\n* p_FDR<0.05, ** <0.01, *** <0.001")
    return fig


def boxplot_figure(data: pd.DataFrame, value: str, group: str, hue: str | None, title: str, ylabel: str) -> Figure:
    """Boxplots (whiskers 1.5 IQR) of ``value`` per ``group``, side by side per ``hue`` level."""
    groups = sorted(data[group].dropna().astype(str).unique())
    hues = sorted(data[hue].dropna().astype(str).unique()) if hue else [None]
    width = 0.8 / max(len(hues), 1)
    fig = Figure(figsize=(max(4.0, 1.0 + 0.5 * len(groups) * len(hues)), 4.0), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(len(hues))]
    for j, h in enumerate(hues):
        series = []
        positions = []
        for i, g in enumerate(groups):
            sel = data[group].astype(str) == g
            if h is not None:
                sel &= data[hue].astype(str) == h
            values = pd.to_numeric(data.loc[sel, value], errors="coerce").dropna().to_numpy()
            if len(values):
                series.append(values)
                positions.append(i + (j - (len(hues) - 1) / 2) * width)
        if series:
            parts = ax.boxplot(series, positions=positions, widths=width * 0.9, patch_artist=True, whis=1.5,
                               manage_ticks=False, medianprops={"color": "black"})
            for patch in parts["boxes"]:
                patch.set_facecolor(colors[j])
                patch.set_alpha(0.6)
            if h is not None:
                ax.plot([], [], color=colors[j], lw=6, alpha=0.6, label=h)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if hue:
        ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def make_figures(results: Mapping[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Forest plots, boxplots of % change overall and by diagnosis, progression groups."""
    paths: list[Path] = []
    if "crosssectional" in results and results["crosssectional"]["beta"].notna().any():
        paths += _save(forest_figure(results["crosssectional"], "Cross-sectional: outcome ~ thalamus (mL)"),
                       out_dir, "clinical_crosssectional_forest")
    if "longitudinal_regression" in results and results["longitudinal_regression"]["beta"].notna().any():
        paths += _save(forest_figure(results["longitudinal_regression"], "Longitudinal: delta outcome ~ delta thalamus (mL)"),
                       out_dir, "clinical_longitudinal_forest")
    deltas = results.get("longitudinal_deltas")
    if deltas is not None and deltas[PCT].notna().any():
        labelled = deltas.assign(method_label=_labels(deltas), diagnosis=deltas["diagnosis"].fillna("n/a"))
        paths += _save(boxplot_figure(labelled, PCT, "method_label", None, "Thalamic volume change",
                                      "% change from baseline"), out_dir, "clinical_pct_change_boxplot")
        paths += _save(boxplot_figure(labelled, PCT, "diagnosis", "method_label", "Thalamic volume change by diagnosis",
                                      "% change from baseline"), out_dir, "clinical_pct_change_by_diagnosis_boxplot")
    prog_subjects = results.get("progression_subjects")
    if prog_subjects is not None and prog_subjects[COURSE].notna().any():
        labelled = prog_subjects.assign(method_label=_labels(prog_subjects))
        paths += _save(boxplot_figure(labelled, PCT, "method_label", COURSE, "Thalamic volume change by EDSS course",
                                      "% change from baseline"), out_dir, "clinical_progression_pct_change_boxplot")
    return paths


# ============================================================== sidecars
_DESCRIPTIONS: dict[str, Any] = {
    "analysis": "Analysis (family) the row belongs to",
    "outcome": "Clinical outcome (role in the clinical config)",
    "transform": "Transform of the outcome before the model (log: natural log)",
    "method": "Segmentation method (BIDS desc value)",
    "contrast": "Image contrast the method segmented",
    "term": "Predictor whose coefficient is reported",
    "beta": "Coefficient of the predictor (outcome units per mL, or log-odds per unit for logistic models)",
    "se": "Standard error of beta used for ci, t and p (HC3 when hc3 is true)",
    "se_classical": "Classical OLS standard error of beta",
    "se_hc3": "HC3 heteroscedasticity-consistent standard error of beta",
    "df_resid": "Residual degrees of freedom (t distribution of ci and p)",
    "residual_sd": "Residual standard deviation of the model (square root of the residual mean square)",
    "kind": "coefficient or threshold (ordinal model)",
    "loglik": "Log-likelihood of the fitted model", "aic": "Akaike information criterion, -2 loglik + 2 parameters",
    "ci_low": {"Description": "Lower bound of the 95% confidence interval"},
    "ci_high": {"Description": "Upper bound of the 95% confidence interval"},
    "t": "t statistic", "z": "Wald z statistic",
    "p": "Two-sided p-value, unadjusted",
    "p_fdr": "Benjamini-Hochberg adjusted p-value across the family (all rows of the table or limits)",
    "r2": "Coefficient of determination (unadjusted R squared)",
    "n": "Observations in the model (complete cases)",
    "n_excluded": "Rows left out of the model for a missing value in one of its columns",
    "hc3": "Whether HC3 heteroscedasticity-consistent standard errors were used",
    "hc3_policy": "HC3 rule from the config: auto (Breusch-Pagan p < hc3_alpha), always, never",
    "bp_p": "p-value of the studentised Breusch-Pagan test of the OLS residuals",
    "covariates": "Covariates in the model (icv_z: z-standardised ICV; sex dummy coded)",
    "note": "Why a model could not be fitted, or covariates left out for lack of data",
    "significance": "Stars for p_fdr: * < 0.05, ** < 0.01, *** < 0.001",
    "winsor_limits": "Percentiles at which delta thalamic volume was winsorised",
    "odds_ratio": "exp(beta)",
    "n_categories": "EDSS change categories present",
    "category_counts": "Subjects per EDSS change category",
    "converged": "Whether the maximum likelihood optimiser converged",
    "n_events": "Subjects with progression",
    "participant_id": "BIDS participant label", "session_bl": "Baseline session", "session_fu": "Follow-up session",
    INTERVAL: {"Description": "Time from baseline to follow-up", "Units": "years"},
    "interval_source": "Where the interval came from: acq_time, time_years, or unknown (session label)",
    FOLLOWUP_YEARS: {"Description": "Time from baseline to follow-up", "Units": "years"},
    "diagnosis": "Diagnosis from participants.tsv",
    f"{VOLUME}_bl": {"Description": "Thalamus volume at baseline", "Units": "mL"},
    f"{VOLUME}_fu": {"Description": "Thalamus volume at follow-up", "Units": "mL"},
    DELTA: {"Description": "Thalamus volume follow-up minus baseline", "Units": "mL"},
    PCT: {"Description": "Thalamus volume change in percent of baseline", "Units": "%"},
    ANNUAL: {"Description": "Percent thalamic volume change divided by the interval", "Units": "%/year"},
    "pbvc": {"Description": "Percentage brain volume change (SIENA) recorded at follow-up", "Units": "%"},
    STEROID: "Relapse-associated corticosteroid treatment since the previous visit (1 yes, 0 no)",
    SCANNER_CHANGE: "1 when the scanner differs between baseline and follow-up",
    COURSE: "EDSS course: progression, improvement or stable (baseline-dependent thresholds)",
    PROGRESSED: "1 for disability progression, 0 for stable or improved",
    "edss_bl": "EDSS at baseline", "edss_fu": "EDSS at follow-up",
    "age": {"Description": "Age at baseline", "Units": "years"}, "sex": "Sex",
    "disease_duration": {"Description": "Disease duration at baseline", "Units": "years"},
    "variable": "Variable summarised", "n_missing": "Rows with the variable missing",
    "mean": "Mean", "sd": "Standard deviation", "median": "Median", "q1": "First quartile", "q3": "Third quartile",
    "min": "Minimum", "max": "Maximum",
    "A": "First level compared", "B": "Second level compared", "median_A": "Median of A", "median_B": "Median of B",
    "median_diff": "Median of the paired differences A - B",
    "n_nonzero": "Non-zero paired differences (zeros dropped)",
    "T_plus": "Wilcoxon signed-rank sum of the positive differences A - B",
    "T_minus": "Wilcoxon signed-rank sum of the negative differences A - B",
    "alternative": "Alternative hypothesis of the test",
    "test_method": "Null distribution used: exact, permutation or normal approximation",
    "correction": "Whether a continuity correction was applied",
    "x": "First variable", "y": "Second variable", "r": "Pearson correlation coefficient",
    "source": "ANCOVA term", "ss": "Type II sum of squares", "df": "Degrees of freedom", "F": "F statistic",
    "np2": "Partial eta squared", "group": "EDSS course group", "adj_mean": "Mean adjusted to the covariate means",
    "diff": "Adjusted mean A minus adjusted mean B",
    "p_bonferroni": "Bonferroni-adjusted p-value over the pairs",
    "p_tukey": "Tukey-adjusted p-value (studentized range of the adjusted means)",
    "ci_adjust": "Adjustment of the confidence interval (bonferroni or tukey)",
    "n_subjects": "Subjects with an annualised change", "mean_annual_pct": {"Description": "Mean annual change", "Units": "%/year"},
    "sd_annual_pct": {"Description": "SD of the annual change across subjects", "Units": "%/year"},
    "difference_pct_per_year": {"Description": "Difference in annual atrophy to detect", "Units": "%/year"},
    "effect_size_d": "Standardised difference (difference / SD)", "power": "Target power",
    "alpha": "Two-sided significance level",
    "n_per_arm": "Subjects per arm, two-sample t approximation (rounded up)",
    "n_per_arm_exact": "Subjects per arm, noncentral t (statsmodels TTestIndPower, rounded up)",
    "n_per_arm_normal": "Subjects per arm, normal approximation (rounded up)",
    "reason": "Why rows were left out or the analysis skipped", "n_rows": "Rows concerned",
    "status": "done or skipped",
}


def _describe_columns(table: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        if column in _DESCRIPTIONS:
            out[column] = _DESCRIPTIONS[column]
        elif column.startswith("delta_"):
            out[column] = f"Follow-up minus baseline of {column[6:]}"
        elif column.endswith("_bl"):
            out[column] = f"{column[:-3]} at baseline"
        elif column.endswith("_fu"):
            out[column] = f"{column[:-3]} at follow-up"
        else:
            out[column] = column.replace("_", " ")
    return out


# ============================================================== entry point
def run_clinical(
    volumes: pd.DataFrame,
    config: ClinicalConfig | str | os.PathLike | None,
    out_dir: Path,
    *,
    figures: bool = True,
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
    ledger = _Ledger()
    frame, available = prepare_volumes(volumes, config, ledger)
    LOGGER.info("clinical analyses on %d subjects, %d methods; roles found: %s", frame[SUBJECT].nunique(),
                frame.groupby(METHOD_KEYS).ngroups, ", ".join(sorted(available)))
    visits = _ordered_visits(frame)
    results: dict[str, pd.DataFrame] = {}

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("crosssectional", lambda: cross_sectional(frame, visits, config, available, ledger)),
        ("longitudinal", lambda: longitudinal(frame, visits, config, available, ledger)),
        ("progression", lambda: progression(frame, visits, config, available, ledger)),
    ]
    for name, step in steps:
        produced = step()
        if isinstance(produced, pd.DataFrame):
            results[name] = produced
        elif isinstance(produced, dict):
            results.update(produced)
    power = power_table(results.get("longitudinal_deltas"), config, ledger)
    if power is not None:
        results["power"] = power
    results["exclusions"] = ledger.exclusion_table()
    results["analyses"] = ledger.analysis_table()

    for name, table in results.items():
        write_tsv(table, out_dir / f"clinical_{name}.tsv", _describe_columns(table))
    written = make_figures(results, out_dir) if figures else []
    LOGGER.info("clinical analyses: %d tables and %d figure files written to %s", len(results), len(written), out_dir)
    return results
