"""Group level: ComBat harmonisation of the thalamus volumes across sites or scanners (``--harmonize``).

Features: the left and right volumes of every method and contrast (the
bilateral volume for a method without sides), one row per session. ICV is
harmonised first on its own (one feature: location/scale, no empirical
Bayes, no subject term) and its harmonised value is always among the protected covariates of
the volumes, beside the ``--harmonize-protect`` columns. With repeated
sessions of a subject the model has a random subject intercept
(longitudinal ComBat). With ``--harmonize-ref-batch`` the other batches are
mapped to that batch, whose volumes and ICV stay as measured. A method's
harmonised bilateral volume is the sum of its harmonised sides. Writes ``volume_ml_harmonized`` and
``icv_ml_harmonized`` into the volumes, ``harmonization.tsv`` (diagnostics)
and ``harmonization_model.json`` (the fitted parameters) into the group folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thalamus_bidsapp import __version__
from thalamus_bidsapp.bidsio.atomic import write_json, write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.stats.batch_effects import batch_effect_tests
from thalamus_bidsapp.stats.harmonization import BatchProblem, HarmonizationResult, combat

LOGGER = logging.getLogger(__name__)

SESSION_KEYS = ["participant_id", "session_id"]
FEATURE_KEYS = ["method", "contrast", "hemisphere"]
HARMONIZED = "volume_ml_harmonized"
ICV_HARMONIZED = "icv_ml_harmonized"
ICV_FEATURE = "icv_ml"

#: Descriptions of the columns harmonisation adds to group/volumes.tsv.
VOLUME_COLUMNS = {
    HARMONIZED: {"Description": "The volume after ComBat harmonisation across sites or scanners (--harmonize; "
                                "group/harmonization_model.json); a bilateral row is the sum of the harmonised "
                                "sides; n/a for a session without a batch label or protected covariate",
                 "Units": "mL"},
    ICV_HARMONIZED: {"Description": "The intracranial volume after ComBat harmonisation (location/scale per batch)",
                     "Units": "mL"},
}

_STATISTICS = {
    "mean": {"Description": "Mean volume of the batch's sessions, {when} harmonisation", "Units": "mL"},
    "variance": {"Description": "Variance (ddof 1) of the batch's volumes, {when} harmonisation", "Units": "mL^2"},
    "resid_mean": {"Description": "Mean residual of the batch's sessions after the protected covariates' effects "
                                  "(fitted on every batch together), {when} harmonisation", "Units": "mL"},
    "resid_variance": {"Description": "Variance of those residuals, {when} harmonisation", "Units": "mL^2"},
    "p_anova": {"Description": "F test of the batch term in volume ~ protected covariates + batch, {when} "
                               "harmonisation (sessions treated as independent)"},
    "p_kruskal": {"Description": "Kruskal-Wallis test across batches of the covariate-model residuals, {when} "
                                 "harmonisation"},
    "p_levene": {"Description": "Brown-Forsythe test of equal residual variance across batches, {when} harmonisation"},
}

HARMONIZATION_COLUMNS: dict[str, Any] = {
    "harmonization": "ComBat variant fitted: combat, combat-gam, or longitudinal-combat / longitudinal-combat-gam "
                     "(random subject intercept)",
    "batch_column": "Column of group/volumes.tsv whose values are the batches (site or scanner)",
    "method": "Segmentation method (icv for the intracranial volume)",
    "contrast": "Image contrast of the method (n/a for ICV)",
    "hemisphere": "left, right or bilateral (n/a for ICV)",
    "batch": "The batch (site or scanner label)",
    "n": "Sessions of the batch with a value, used in the model",
    **{f"{stat}_{when}": {k: v.format(when=when) for k, v in desc.items()}
       for stat, desc in _STATISTICS.items() for when in ("before", "after")},
}


def run_harmonization_step(config: RunConfig, volumes: pd.DataFrame, group_dir: Path) -> pd.DataFrame:
    """Harmonise the volumes when ``--harmonize`` asks; returns the volumes with the harmonised columns.

    Raises
    ------
    ThalamusError
        Exit 65 naming the batch or column: no batch labels, a protected
        column missing, fewer than two batches, a batch with fewer than two
        sessions, or a batch confounded with a protected covariate.
    """
    if config.harmonize == "none" or volumes.empty:
        if config.harmonize_ref_batch is not None:
            LOGGER.warning("--harmonize-ref-batch %s is ignored: --harmonize is none", config.harmonize_ref_batch)
        return volumes
    batch = _batch_column(volumes, config.harmonize_batch)
    sessions, features = session_table(volumes, batch, config.harmonize_protect)
    continuous, categorical = _covariate_kinds(sessions, config.harmonize_protect)
    smooth = ["age"] if config.harmonize == "combat-gam" else []
    if smooth and "age" not in continuous:
        raise ThalamusError("--harmonize combat-gam fits a non-linear age term: list a numeric age column in "
                            f"--harmonize-protect (given: {' '.join(config.harmonize_protect)})", EXIT_DATAERR)
    repeated = bool(sessions["participant_id"].duplicated().any())
    subject = "participant_id" if repeated else None
    protect = {"continuous": continuous, "categorical": categorical, "smooth": smooth, "subject": subject,
               "ref_batch": config.harmonize_ref_batch}
    # ICV is a trait of the subject (often one value for all its sessions): no subject term for it
    icv = _fit(sessions, [ICV_FEATURE], batch, {**protect, "subject": None}, eb=False)
    sessions[ICV_HARMONIZED] = icv.data[ICV_FEATURE]
    vols = _fit(sessions, list(features), batch, {**protect, "continuous": [*continuous, ICV_HARMONIZED]})
    LOGGER.info("harmonisation (%s by %s, %d batches, %d sessions, %d features): protected %s + ICV; to %s",
                vols.model["kind"], batch, len(vols.model["batches"]), int(vols.used.sum()), len(features),
                " ".join(config.harmonize_protect), f"the reference batch {config.harmonize_ref_batch!r}"
                if config.harmonize_ref_batch is not None else "the pooled mean and variance")
    volumes = _put_back(volumes, sessions, vols.data, features)
    diagnostics = _diagnostics(sessions, vols.data, features, batch, icv, vols)
    write_tsv(diagnostics, Path(group_dir) / "harmonization.tsv", HARMONIZATION_COLUMNS)
    write_json(_model_record(config, batch, features, icv.model, vols.model),
               Path(group_dir) / "harmonization_model.json")
    left_out = int((~vols.used).sum())
    if left_out:
        LOGGER.warning("harmonisation: %d session(s) without a %s label or a protected covariate (%s) are not "
                       "harmonised (volume_ml_harmonized n/a)", left_out, batch, ", ".join(config.harmonize_protect))
    return volumes


def _batch_column(volumes: pd.DataFrame, kind: str) -> str:
    for name in (kind, f"{kind}_sessions", f"{kind}_participants"):
        if name in volumes and volumes[name].notna().any():
            return name
    source = ("the image sidecars (Manufacturer, ManufacturersModelName, MagneticFieldStrength) or a scanner column "
              "of sessions.tsv" if kind == "scanner" else
              "the T1w sidecars' InstitutionName or a site column of participants.tsv or sessions.tsv")
    raise ThalamusError(f"--harmonize-batch {kind}: no session has a {kind} label; give it in {source}", EXIT_DATAERR)


def session_table(volumes: pd.DataFrame, batch: str, protect: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """One row per session: batch, protected covariates, ICV and one column per volume feature.

    Returns the table and the feature columns as ``{column: (method, contrast, hemisphere)}``.
    """
    missing = [c for c in protect if c not in volumes]
    if missing:
        raise ThalamusError(f"--harmonize-protect: column(s) {', '.join(missing)} not in participants.tsv or the "
                            "sessions tables (group/volumes.tsv has: "
                            f"{', '.join(c for c in volumes.columns if c not in FEATURE_KEYS)})", EXIT_DATAERR)
    rows = volumes.assign(session_id=volumes["session_id"].fillna(""),
                          hemisphere=volumes.get("hemisphere", pd.Series("bilateral", index=volumes.index)))
    sided = set(rows.loc[rows["hemisphere"].isin(["left", "right"]), "method"])
    keep = rows["hemisphere"].isin(["left", "right"]) | ~rows["method"].isin(sided)
    rows = rows[keep & pd.to_numeric(rows["volume_ml"], errors="coerce").notna()]
    rows = rows.assign(feature=rows["method"].astype(str) + ":" + rows["contrast"].fillna("n/a").astype(str) + ":"
                       + rows["hemisphere"].astype(str))
    wide = rows.pivot_table(index=SESSION_KEYS, columns="feature", values="volume_ml", aggfunc="first")
    first = volumes.assign(session_id=volumes["session_id"].fillna("")).groupby(SESSION_KEYS, sort=True)
    info = first[[batch, *protect]].first()
    info[ICV_FEATURE] = pd.to_numeric(volumes["icv_ml"], errors="coerce").groupby(
        [volumes["participant_id"], volumes["session_id"].fillna("")]).median()
    table = info.join(wide).reset_index()
    features = {c: tuple(c.split(":")) for c in wide.columns}
    return table, features


def _covariate_kinds(sessions: pd.DataFrame, protect: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Numeric protected columns enter linearly; the others (sex, diagnosis) as categories."""
    continuous, categorical = [], []
    for column in protect:
        values = sessions[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().any() and numeric[values.notna()].notna().all():
            sessions[column] = numeric
            continuous.append(column)
        else:
            categorical.append(column)
    return continuous, categorical


def _fit(sessions: pd.DataFrame, features: list[str], batch: str, protect: dict[str, Any],
         eb: bool = True) -> HarmonizationResult:
    try:
        return combat(sessions, features, batch, continuous=protect["continuous"], categorical=protect["categorical"],
                      smooth=protect["smooth"], subject=protect["subject"], eb=eb, ref_batch=protect["ref_batch"])
    except BatchProblem as err:
        raise ThalamusError(f"--harmonize: cannot harmonise by {batch}: {err}. Merge or drop that batch, or "
                            "protect fewer covariates", EXIT_DATAERR) from err
    except (ValueError, np.linalg.LinAlgError) as err:  # e.g. spline knots of an age with 2 values, a singular fit
        raise ThalamusError(f"--harmonize: cannot fit the ComBat model by {batch} with the protected covariates "
                            f"{', '.join([*protect['continuous'], *protect['categorical']])}: {err}",
                            EXIT_DATAERR) from err


def _put_back(volumes: pd.DataFrame, sessions: pd.DataFrame, harmonised: pd.DataFrame,
              features: dict[str, tuple]) -> pd.DataFrame:
    """The harmonised values on the rows of the long volumes table; bilateral = left + right where sided."""
    keyed = pd.concat([sessions[SESSION_KEYS + [ICV_HARMONIZED]], harmonised], axis=1)
    lookup: dict[tuple, float] = {}
    for column in harmonised.columns:
        method, contrast, hemisphere = features[column]
        for pid, sid, value in zip(keyed["participant_id"], keyed["session_id"], keyed[column]):
            lookup[(pid, sid, method, contrast, hemisphere)] = value
            if hemisphere in ("left", "right"):
                key = (pid, sid, method, contrast, "bilateral")
                lookup[key] = lookup.get(key, 0.0) + value
    hemis = volumes.get("hemisphere", pd.Series("bilateral", index=volumes.index))
    keys = zip(volumes["participant_id"], volumes["session_id"].fillna(""), volumes["method"].astype(str),
               volumes["contrast"].fillna("n/a").astype(str), hemis)
    icv = dict(zip(zip(keyed["participant_id"], keyed["session_id"]), keyed[ICV_HARMONIZED]))
    out = volumes.copy()
    position = out.columns.get_loc("volume_ml") + 1
    out.insert(position, HARMONIZED, [lookup.get(key, np.nan) for key in keys])
    out.insert(out.columns.get_loc("icv_ml") + 1, ICV_HARMONIZED,
               [icv.get(key, np.nan) for key in zip(out["participant_id"], out["session_id"].fillna(""))])
    return out


def _diagnostics(sessions: pd.DataFrame, harmonised: pd.DataFrame, features: dict, batch: str,
                 icv: HarmonizationResult, vols: HarmonizationResult) -> pd.DataFrame:
    """Per feature and batch: means, variances and batch-effect tests before and after harmonisation."""
    tables = []
    encoding = {k: v for k, v in vols.model["covariates"].items() if k != "names"}
    icv_encoding = {k: v for k, v in icv.model["covariates"].items() if k != "names"}
    targets = [(ICV_FEATURE, ("icv", "n/a", "n/a"), sessions[ICV_FEATURE], icv.data[ICV_FEATURE], icv_encoding,
                icv.model["kind"])]
    targets += [(column, key, sessions[column], harmonised[column], encoding, vols.model["kind"])
                for column, key in features.items()]
    for _column, key, before, after, enc, kind in targets:
        frame = sessions.assign(_before=before.to_numpy(), _after=after.to_numpy())
        pre = batch_effect_tests(frame, "_before", batch, enc)
        post = batch_effect_tests(frame, "_after", batch, enc)
        table = pre.merge(post.drop(columns="n"), on="batch", suffixes=("_before", "_after"))
        for i, (name, value) in enumerate(zip(["harmonization", "batch_column", *FEATURE_KEYS], [kind, batch, *key])):
            table.insert(i, name, value)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    order = ["harmonization", "batch_column", *FEATURE_KEYS, "batch", "n"]
    stats = ["mean", "variance", "resid_mean", "resid_variance", "p_anova", "p_kruskal", "p_levene"]
    return table[order + [f"{s}_{w}" for s in stats for w in ("before", "after")]]


def _model_record(config: RunConfig, batch: str, features: dict, icv_model: dict, volume_model: dict) -> dict:
    return {
        "Description": "ComBat harmonisation fitted by thalamus_bidsapp's group level; apply it to new sessions "
                       "with thalamus_bidsapp.stats.harmonization.apply_combat (first icv_model to icv_ml, then "
                       "volume_model with icv_ml_harmonized among the covariates)",
        "GeneratedBy": {"Name": "thalamus_bidsapp", "Version": __version__},
        "harmonize": config.harmonize,
        "batch_column": batch,
        "protect": list(config.harmonize_protect),
        "ref_batch": config.harmonize_ref_batch,
        "features": {column: dict(zip(FEATURE_KEYS, key)) for column, key in features.items()},
        "icv_model": icv_model,
        "volume_model": volume_model,
    }
