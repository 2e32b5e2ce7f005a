"""Clinical group level: configuration, planted effects of a simulated cohort, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.simulate_cohort import TRUTH, joined_volumes, simulate_cohort, write_bids_tree
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.group.clinical import run_clinical
from thalamus_bidsapp.group.clinical_config import load_clinical_config

EXPECTED_TABLES = [
    "crosssectional", "longitudinal_deltas", "longitudinal_change_by_diagnosis", "longitudinal_pairwise_wilcoxon",
    "longitudinal_regression", "longitudinal_winsorised", "longitudinal_ordinal", "longitudinal_pbvc",
    "progression_subjects", "progression_ancova", "progression_adjusted_means", "progression_pairwise",
    "progression_logistic", "power", "exclusions", "analyses",
]
EXPECTED_FIGURES = [
    "clinical_crosssectional_forest", "clinical_longitudinal_forest", "clinical_pct_change_boxplot",
    "clinical_pct_change_by_diagnosis_boxplot", "clinical_progression_pct_change_boxplot",
]


# ------------------------------------------------------------------ configuration
def test_defaults() -> None:
    cfg = load_clinical_config(None)
    hc3 = {o.role: o.hc3 for o in cfg.cross_sectional_outcomes}
    assert hc3["edss"] == "always" and hc3["disease_duration"] == "always" and hc3["sdmt"] == "auto"
    assert {o.role: o.transform for o in cfg.cross_sectional_outcomes}["t25fw"] == "log"
    assert [(b.max_baseline, b.change) for b in cfg.progression_thresholds] == [(0.0, 1.5), (5.5, 1.0), (10.0, 0.5)]
    assert cfg.winsorize_limits == ((0.01, 0.01), (0.05, 0.05))
    assert (cfg.power_difference, cfg.power, cfg.power_alpha) == (0.3, 0.8, 0.05)
    assert cfg.columns["nhpt"].candidates[:2] == ("9hpt", "nhpt")
    with pytest.raises(AttributeError):
        cfg.power = 0.9  # frozen


def test_user_yaml_and_json_merge_over_defaults(tmp_path: Path) -> None:
    yml = tmp_path / "clinical.yaml"
    yml.write_text("columns:\n  edss: {column: EDSS_score}\n  disease_duration: {column: dd_months, scale: 0.08333333}\n"
                   "power:\n  difference_pct_per_year: 0.5\n")
    cfg = load_clinical_config(yml)
    assert cfg.columns["edss"].column == "EDSS_score" and cfg.columns["edss"].table == "sessions"
    assert cfg.columns["disease_duration"].scale == pytest.approx(1 / 12, rel=1e-6)
    assert cfg.power_difference == 0.5 and cfg.power == 0.8
    js = tmp_path / "clinical.json"
    js.write_text(json.dumps({"sessions": {"followup": "last"}, "cross_sectional": {"outcomes": ["edss"]}}))
    cfg = load_clinical_config(js)
    assert cfg.followup == "last" and [o.role for o in cfg.cross_sectional_outcomes] == ["edss"]
    assert cfg.to_json()["sessions"]["baseline"] == "first"


@pytest.mark.parametrize(
    ("text", "code"),
    [("powr: {power: 0.9}\n", 64), ("power: {power: 1.5}\n", 64), ("columns:\n  edss: {colum: x}\n", 64),
     ("cross_sectional:\n  outcomes: [{role: edss, transform: sqrt}]\n", 64), ("[1, 2", 64)],
)
def test_invalid_config_is_a_usage_error(tmp_path: Path, text: str, code: int) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ThalamusError) as err:
        load_clinical_config(path)
    assert err.value.exit_code == code and "bad.yaml" in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ThalamusError) as err:
        load_clinical_config(tmp_path / "nope.yaml")
    assert err.value.exit_code == 66


# ------------------------------------------------------------------ simulated cohort
@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pd.DataFrame], Path, object]:
    root = tmp_path_factory.mktemp("bids")
    cohort = simulate_cohort(n_subjects=160, seed=1)
    write_bids_tree(cohort, root)
    volumes = joined_volumes(root)
    out = root / "derivatives" / "thalamus_bidsapp" / "group" / "clinical"
    results = run_clinical(volumes, None, out)
    return results, out, cohort


def _row(table: pd.DataFrame, **keys: str) -> pd.Series:
    sel = np.ones(len(table), bool)
    for key, value in keys.items():
        sel &= (table[key] == value).to_numpy()
    assert sel.sum() == 1, keys
    return table.loc[sel].iloc[0]


def test_end_to_end_writes_every_table_and_figure(cohort_run) -> None:
    results, out, _ = cohort_run
    assert sorted(results) == sorted(EXPECTED_TABLES)
    for name in EXPECTED_TABLES:
        tsv = out / f"clinical_{name}.tsv"
        assert tsv.is_file() and tsv.with_suffix(".json").is_file(), name
        sidecar = json.loads(tsv.with_suffix(".json").read_text())
        assert set(sidecar) == set(read_tsv(tsv).columns)
    for stem in EXPECTED_FIGURES:
        for fmt in ("png", "svg"):
            path = out / "figures" / f"{stem}.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert set(results["analyses"]["status"]) == {"done"}
    # the TSV round-trips with n/a for missing values
    text = (out / "clinical_longitudinal_deltas.tsv").read_text()
    assert "n/a" in text and "nan" not in text.lower().replace("n/a", "")


def test_cross_sectional_recovers_planted_effects(cohort_run) -> None:
    results, _, _ = cohort_run
    table = results["crosssectional"]
    assert len(table) == 5 * 3  # outcomes x methods
    edss = _row(table, outcome="edss", method="first")
    assert edss["ci_low"] < TRUTH["edss_per_ml"] < edss["ci_high"] and edss["beta"] < 0
    assert edss["hc3"]  # forced for EDSS as in the paper
    sdmt = _row(table, outcome="sdmt", method="first")
    assert sdmt["ci_low"] < TRUTH["sdmt_per_ml"] < sdmt["ci_high"] and sdmt["p_fdr"] < 0.001
    t25 = _row(table, outcome="t25fw", method="first")
    assert t25["transform"] == "log" and t25["ci_low"] < TRUTH["log_t25fw_per_ml"] < t25["ci_high"]
    assert (table["p_fdr"] >= table["p"] - 1e-15).all()
    assert set(table["covariates"]) == {"age + sex + icv_z"}


def test_missing_values_are_reported_not_dropped_silently(cohort_run) -> None:
    results, _, cohort = cohort_run
    table = results["crosssectional"]
    ex = results["exclusions"]
    # one subject has age n/a: every cross-sectional model leaves it out and says so
    age = ex[(ex["analysis"] == "cross_sectional") & (ex["reason"] == "missing age")]
    assert len(age) == 15 and set(age["n_rows"]) == {1}
    # the T25FW "unable" entry is read as missing and reported (one row per method in the volumes table)
    bad = ex[ex["reason"].str.startswith("non-numeric value in t25fw")]
    assert bad["n_rows"].sum() == 3
    baseline = pd.concat([t.iloc[[0]].assign(participant_id=s) for s, t in cohort.sessions.items()])
    age_ok = cohort.participants.set_index("participant_id")["age"].notna()
    expected_n = int((pd.to_numeric(baseline["edss"], errors="coerce").notna().to_numpy()
                      & age_ok.loc[baseline["participant_id"]].to_numpy()).sum())
    edss = _row(table, outcome="edss", method="first")
    assert edss["n"] == expected_n and edss["n"] + edss["n_excluded"] == 160


def test_longitudinal_recovers_planted_effects(cohort_run) -> None:
    results, _, cohort = cohort_run
    reg = results["longitudinal_regression"]
    sdmt = _row(reg, outcome="sdmt", method="first")
    assert sdmt["ci_low"] < TRUTH["sdmt_delta_per_ml"] < sdmt["ci_high"]
    assert set(reg["covariates"]) == {"age + sex + icv_z + steroid + interval_years"}
    assert set(_row(reg, outcome="edss", method="first")[["hc3"]]) == {True}
    wins = results["longitudinal_winsorised"]
    assert set(wins["winsor_limits"]) == {"1-99%", "5-95%"} and len(wins) == 2 * len(reg)
    deltas = results["longitudinal_deltas"]
    first = deltas[deltas["method"] == "first"].set_index("participant_id")
    # mean annualised % change per true course matches the planted DeepGRAI rates
    course = cohort.subjects.set_index("participant_id")["annual_rate"]
    assert np.corrcoef(first["annual_pct_change"], course.loc[first.index])[0, 1] > 0.9
    pbvc = _row(results["longitudinal_pbvc"], method="first")
    assert pbvc["r"] > 0.5 and pbvc["p_fdr"] < 0.001
    ordinal = _row(results["longitudinal_ordinal"], method="first")
    assert ordinal["n_categories"] == 3 and ordinal["converged"]
    desc = results["longitudinal_change_by_diagnosis"]
    assert {"RRMS", "PMS", "all"} <= set(desc["diagnosis"])
    assert len(results["longitudinal_pairwise_wilcoxon"]) == 3


def test_progression_groups_differ_as_planted(cohort_run) -> None:
    results, _, cohort = cohort_run
    means = results["progression_adjusted_means"]
    first = means[means["method"] == "first"].set_index("group")["adj_mean"]
    assert first["progression"] < first["improvement"] < first["stable"]
    pair = _row(results["progression_pairwise"], method="first", A="progression", B="stable")
    subjects = results["progression_subjects"]
    years = subjects.loc[subjects["method"] == "first", "followup_years"].mean()
    planted = (TRUTH["annual_rate"]["progression"] - TRUTH["annual_rate"]["stable"]) * years
    assert pair["ci_low"] < planted < pair["ci_high"] and pair["p_bonferroni"] < 0.001 and pair["p_tukey"] < 0.001
    anc = _row(results["progression_ancova"], method="first", source="edss_course")
    assert anc["p"] < 0.001
    logit = _row(results["progression_logistic"], method="first")
    assert logit["beta"] < 0 and logit["p"] < 0.05
    assert logit["covariates"] == "scanner_change + age + sex + disease_duration + followup_years"
    # the classification agrees with the simulated EDSS courses
    got = subjects[subjects["method"] == "first"].set_index("participant_id")["edss_course"].dropna()
    truth = cohort.subjects.set_index("participant_id")["course"]
    assert (got.astype(str) == truth.loc[got.index]).all()


def test_power_ranks_methods_by_noise(cohort_run) -> None:
    results, _, _ = cohort_run
    power = results["power"].set_index("method")
    assert power.loc["first", "n_per_arm"] < power.loc["dbsegment", "n_per_arm"] < power.loc["mindglide", "n_per_arm"]
    assert (power["difference_pct_per_year"] == 0.3).all()


# ------------------------------------------------------------------ errors and thin data
@pytest.fixture(scope="module")
def small_volumes() -> pd.DataFrame:
    return simulate_cohort(n_subjects=40, seed=5, missing_fraction=0).joined()


def test_missing_required_column_names_column_and_file(small_volumes: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ThalamusError) as err:
        run_clinical(small_volumes.drop(columns=["age"]), None, tmp_path, figures=False)
    assert err.value.exit_code == 65
    assert "'age'" in str(err.value) and "participants.tsv" in str(err.value) and "volumes.tsv" in str(err.value)
    with pytest.raises(ThalamusError, match="icv_ml"):
        run_clinical(small_volumes.drop(columns=["icv_ml"]), None, tmp_path, figures=False)


def test_renamed_columns_via_config(small_volumes: pd.DataFrame, tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("columns:\n  edss: {column: EDSS}\n")
    renamed = small_volumes.rename(columns={"edss": "EDSS", "9hpt": "nhpt"})
    results = run_clinical(renamed, cfg_path, tmp_path / "out", figures=False)
    cs = results["crosssectional"]
    assert {"edss", "nhpt"} <= set(cs["outcome"])  # nhpt found through its alias


def test_cross_sectional_only_dataset_skips_longitudinal(tmp_path: Path) -> None:
    volumes = simulate_cohort(n_subjects=40, n_sessions=1, seed=2).joined()
    volumes["session_id"] = np.nan  # a dataset without sessions
    volumes = volumes.drop(columns=["sdmt"])
    results = run_clinical(volumes, None, tmp_path)
    assert "crosssectional" in results and "longitudinal_deltas" not in results and "power" not in results
    status = results["analyses"].set_index("analysis")["status"]
    assert status["longitudinal"] == "skipped" and status["progression"] == "skipped"
    assert status["power"] == "skipped" and status["cross_sectional:sdmt"] == "skipped"
    assert (tmp_path / "figures" / "clinical_crosssectional_forest.png").is_file()
    assert not (tmp_path / "clinical_longitudinal_deltas.tsv").exists()
