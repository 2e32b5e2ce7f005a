"""What every clinical analysis shares: column names, the exclusions ledger, data preparation, model helpers.

:func:`fit_per_method` is the one loop over methods (and contrasts) that
every per-method model of the clinical analyses goes through.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.group.clinical_config import COMPUTED_COVARIATES, ClinicalConfig, OutcomeSpec
from thalamus_bidsapp.stats import longitudinal as lon
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


#: Numerical failures of a model fit on the data given (singular matrices, failed optimisation, bad values):
#: reported as that model's note, never raised to the command line.
MODEL_ERRORS = (ValueError, np.linalg.LinAlgError, ArithmeticError)


class Ledger:
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


def prepare_volumes(volumes: pd.DataFrame, config: ClinicalConfig, ledger: Ledger | None = None,
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
    ledger = ledger or Ledger()
    harmonized = config.volume_source == "harmonized"
    sources = {VOLUME: f"{VOLUME}_harmonized", ICV: f"{ICV}_harmonized"} if harmonized else {VOLUME: VOLUME, ICV: ICV}
    for column in (SUBJECT, "method", "contrast", *sources.values()):
        if column not in volumes.columns:
            hint = " (volume_source: harmonized needs --harmonize at the group level)" if column.endswith(
                "_harmonized") else ""
            raise ThalamusError(f"column {column!r} is missing from {os.fspath(source)}{hint}", exit_code=EXIT_DATAERR)
    config.require(volumes, config.required_roles(), source)

    frame = pd.DataFrame(index=volumes.index)
    frame[SUBJECT] = volumes[SUBJECT].astype(str)
    if SESSION in volumes:
        frame[SESSION] = volumes[SESSION].astype("object").where(volumes[SESSION].notna(), None)
    else:
        frame[SESSION] = None
    frame["method"] = volumes["method"].astype(str)
    frame["contrast"] = volumes["contrast"].fillna("n/a").astype(str)
    for column, column_in in sources.items():
        frame[column] = _numeric(volumes[column_in], column_in, ledger)
    if "diagnosis" not in config.columns:
        frame["diagnosis"] = np.nan
    for name, column in COMPUTED_COVARIATES.items():  # the session's lesion volume, when lesion masks were given
        frame[name] = _numeric(volumes[column], column, ledger) if column in volumes else np.nan

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
        elif role in (STEROID, SCANNER_CHANGE):
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


def _numeric(values: pd.Series, name: str, ledger: Ledger) -> pd.Series:
    converted = pd.to_numeric(values, errors="coerce").astype(float)
    bad = converted.isna() & values.notna()
    if bad.any():
        examples = ", ".join(sorted({str(v) for v in values[bad]})[:3])
        ledger.exclude("all", f"non-numeric value in {name} (e.g. {examples}); read as missing", int(bad.sum()),
                       outcome=name)
    return converted


def _map_levels(values: pd.Series, levels: Mapping[str, Sequence[str]], role: str, ledger: Ledger) -> pd.Series:
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


def ordered_visits(frame: pd.DataFrame) -> pd.DataFrame:
    sessions = _session_table(frame)
    if sessions.empty:
        return sessions.assign(visit_rank=pd.Series(dtype=int))
    return lon.order_visits(sessions, acq_time="acq_time", time_years="time_years")



def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def transformed_outcome(values: pd.Series, spec: OutcomeSpec, ledger: Ledger, analysis: str,
                        **keys: str) -> pd.Series:
    """The outcome as modelled (log when ``spec`` says so; values that cannot be logged are counted in ``ledger``)."""
    if spec.transform == "log":
        bad = values.notna() & ~(values > 0)
        ledger.exclude(analysis, f"{spec.role} not positive, cannot be log-transformed", int(bad.sum()),
                       outcome=spec.role, **keys)
        with np.errstate(divide="ignore", invalid="ignore"):
            return pd.Series(np.where(values > 0, np.log(values.where(values > 0)), np.nan), index=values.index)
    return values


def usable_covariates(data: pd.DataFrame, wanted: Sequence[str], notes: list[str]) -> list[str]:
    """Covariates with at least one value: an absent optional column would otherwise exclude every row."""
    out = []
    for name in wanted:
        if name in data and data[name].notna().any():
            out.append(name)
        else:
            notes.append(f"covariate {name} unavailable, left out")
    return out


def annotate_results(res: pd.DataFrame, front: Mapping[str, object], covar: Sequence[str],
                     notes: Sequence[str] | None = None) -> pd.DataFrame:
    """Put the ``front`` columns first (in order), add the covariates used and prepend ``notes`` to ``note``."""
    for i, (name, value) in enumerate(front.items()):
        res.insert(i, name, value)
    res["covariates"] = " + ".join(covar)
    if notes is not None:
        res["note"] = "; ".join(n for n in [*notes, *res["note"].astype(str)] if n)
    return res


#: Columns of the clinical regression tables taken from the OLS table, in order; ``hc3`` says which SE is ``se``.
OLS_TABLE_COLUMNS = [
    "term", "beta", "se", "se_classical", "se_hc3", "ci_low", "ci_high", "t", "p", "df_resid", "residual_sd", "r2",
    "n", "n_excluded", "hc3", "bp_p", "note",
]


def outcome_ols(data: pd.DataFrame, y: str, x: str, covar: Sequence[str], notes: Sequence[str], spec: OutcomeSpec,
                config: ClinicalConfig, method: object, contrast: object) -> pd.DataFrame:
    """OLS of one outcome on ``x`` for one method, labelled with outcome, transform, method and contrast.

    The outcome's ``hc3`` policy picks the SE of inference: ``always`` HC3,
    ``never`` classical, ``auto`` HC3 where the Breusch-Pagan test of the
    classical fit has p < ``hc3_alpha`` (the paper's rule, a documented
    clinical-config choice; the stats library itself never switches).
    """
    res = ols(data, x=x, y=y, covar=covar, categorical=[SEX], se="hc3" if spec.hc3 == "always" else "classical")
    bp_p = float(res["bp_p"].iloc[0])
    if spec.hc3 == "auto" and np.isfinite(bp_p) and bp_p < config.hc3_alpha:
        res = ols(data, x=x, y=y, covar=covar, categorical=[SEX], se="hc3")
    res = res.loc[res["term"] == x].reset_index(drop=True)  # the table reports the volume term only
    res["hc3"] = (res["se_type"] == "hc3") & res["beta"].notna()
    res = res[OLS_TABLE_COLUMNS]
    res["hc3_policy"] = spec.hc3
    front = {"outcome": spec.role, "transform": spec.transform, "method": method, "contrast": contrast}
    return annotate_results(res, front, covar, notes)


def fdr_table(rows: Sequence[pd.DataFrame], analysis: str) -> pd.DataFrame:
    """The rows of a family of models in one table, with BH-adjusted p (``p_fdr``) and stars."""
    table = adjust_family(pd.concat(rows, ignore_index=True), "p", "fdr_bh", "p_fdr")
    table["significance"] = table["p_fdr"].map(_stars)
    table.insert(0, "analysis", analysis)
    return table


def method_contrast_labels(frame: pd.DataFrame) -> pd.Series:
    """``method (contrast)`` of each row."""
    return frame["method"].astype(str) + " (" + frame["contrast"].astype(str) + ")"


def fit_per_method(frame: pd.DataFrame, fit: Callable[..., Any], covariates: Sequence[str] = (), *,
                   icv_z: bool = True) -> list[pd.DataFrame]:
    """Call ``fit(data, keys, covar, notes)`` once per method and contrast; collect the tables it returns.

    ``data`` is a copy of the method's rows (with ``icv_z``, the ICV
    z-scored within the method, when asked); ``keys`` is ``{"method": ...,
    "contrast": ...}``; ``covar`` the wanted covariates that have data and
    ``notes`` why the others were left out. ``fit`` returns a table, a list
    of tables, or None. A numerical failure of one method's model (see
    :data:`MODEL_ERRORS`) gives that method a row with empty estimates and
    the reason in ``note``; the other methods go on.
    """
    rows: list[pd.DataFrame] = []
    for (method, contrast), data in frame.groupby(METHOD_KEYS, sort=True):
        data = data.copy()
        if icv_z:
            data[ICV_Z] = zscore(data[ICV])
        notes: list[str] = []
        covar = usable_covariates(data, covariates, notes)
        try:
            produced = fit(data, {"method": method, "contrast": contrast}, covar, notes)
        except MODEL_ERRORS as exc:
            # one method's model failing on its data must not stop the other methods and analyses
            LOGGER.warning("model for %s (%s) could not be fitted: %s", method, contrast, exc)
            produced = pd.DataFrame([{"method": method, "contrast": contrast, "n": 0, "p": np.nan,
                                      "note": f"model could not be fitted: {exc}"}])
        if isinstance(produced, pd.DataFrame):
            rows.append(produced)
        elif produced:
            rows.extend(produced)
    return rows


def baseline_rows(frame: pd.DataFrame, visits: pd.DataFrame, config: ClinicalConfig, ledger: Ledger,
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


_KEEP = ["age", SEX, ICV, "diagnosis", "disease_duration", STEROID, "scanner", "pbvc", "edss", "lesion_volume"]



def deltas_between_visits(frame: pd.DataFrame, visits: pd.DataFrame, followup: str, config: ClinicalConfig,
                          outcome_roles: Sequence[str], ledger: Ledger, analysis: str) -> pd.DataFrame:
    """Per subject and method: follow-up minus baseline of the volume and the outcomes, with covariates."""
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
    rename = {f"{c}_bl": c for c in ("age", SEX, ICV, "diagnosis", "disease_duration", "lesion_volume")}
    rename.update({f"{STEROID}_fu": STEROID, "pbvc_fu": "pbvc"})
    deltas = deltas.rename(columns=rename)
    deltas[SCANNER_CHANGE] = scanner_change_between(deltas, frame, visits)
    deltas[FOLLOWUP_YEARS] = deltas[INTERVAL]
    return deltas



def scanner_change_between(deltas: pd.DataFrame, frame: pd.DataFrame, visits: pd.DataFrame) -> np.ndarray:
    """1 when the scanner changed at any session after baseline up to the follow-up, 0 when at none.

    Uses the sessions' ``scanner_change`` (given, or derived by the group
    level against each previous session); without it, compares the baseline
    and follow-up scanners. NaN when neither tells.
    """
    compared = np.where(deltas["scanner_bl"].notna() & deltas["scanner_fu"].notna(),
                        (deltas["scanner_bl"].astype(str) != deltas["scanner_fu"].astype(str)).astype(float), np.nan)
    if SCANNER_CHANGE not in frame or not frame[SCANNER_CHANGE].notna().any():
        return compared
    rank = dict(zip(zip(visits[SUBJECT], visits[SESSION]), visits["visit_rank"]))
    changes: dict[str, list[tuple[int, float]]] = {}
    for (subject, session), value in frame.groupby([SUBJECT, SESSION])[SCANNER_CHANGE].first().items():
        changes.setdefault(subject, []).append((rank.get((subject, session), -1), value))
    out = []
    for subject, bl, fu, fallback in zip(deltas[SUBJECT], deltas["session_bl"], deltas["session_fu"], compared):
        low, high = rank.get((subject, bl)), rank.get((subject, fu))
        between = [v for r, v in changes.get(subject, []) if low is not None and high is not None and low < r <= high]
        out.append(1.0 if any(v == 1 for v in between) else 0.0 if between and all(v == 0 for v in between)
                   else fallback)
    return np.asarray(out, float)


def describe_columns(table: pd.DataFrame) -> dict[str, Any]:
    """Column descriptions of a clinical table, from ``data/clinical_columns.json`` (derived names by rule)."""
    known = json.loads(importlib.resources.files("thalamus_bidsapp.data").joinpath("clinical_columns.json").read_text())
    out: dict[str, Any] = {}
    for column in table.columns:
        if column in known:
            out[column] = known[column]
        elif column.startswith("delta_"):
            out[column] = f"Follow-up minus baseline of {column[6:]}"
        elif column.endswith("_bl"):
            out[column] = f"{column[:-3]} at baseline"
        elif column.endswith("_fu"):
            out[column] = f"{column[:-3]} at follow-up"
        else:
            out[column] = column.replace("_", " ")
    return out
