"""Models that cannot be fitted on the data given: a row with empty estimates and the reason, never a crash."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.simulate_cohort import simulate_cohort
from thalamus_bidsapp.group.clinical import run_clinical
from thalamus_bidsapp.stats import progression as prog
from thalamus_bidsapp.stats.ordinal import ordinal_logistic

MODEL_TABLES = ("crosssectional", "longitudinal_regression", "longitudinal_winsorised", "longitudinal_ordinal",
                "progression_logistic")
ESTIMATES = ("beta", "se", "ci_low", "ci_high", "p")


def _unfitted_rows_are_empty_with_a_reason(table: pd.DataFrame) -> int:
    """Every row without a beta has a note, and its other estimates are empty too; returns how many."""
    empty = table["beta"].isna()
    for column in ESTIMATES:
        if column in table:
            assert table.loc[empty, column].isna().all(), column
    assert (table.loc[empty, "note"].astype(str).str.len() > 0).all()
    return int(empty.sum())


# ------------------------------------------------------------------ the stats functions themselves
def test_ordinal_with_singular_hessian_gives_a_note_not_an_exception() -> None:
    # Three categories, one of them with a single row, perfectly ordered by x: the Hessian is singular.
    x = np.array([-2.0, -1.5, -1.0, -0.5, 0.2, 0.4, 0.6, 0.8, 3.0, 1.5])
    y = pd.Categorical([0, 0, 0, 0, 1, 1, 1, 1, 2, 1], ordered=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks to the log as a statsmodels warning either
        table = ordinal_logistic(pd.DataFrame({"x": x, "y": y}), x="x", y="y")
    assert len(table) == 1 and table["term"].iloc[0] == "x"
    assert table[["beta", "se", "p"]].isna().all(axis=None)
    assert "not estimable" in table["note"].iloc[0] and "0: 4, 1: 5, 2: 1" in table["note"].iloc[0]


def test_ordinal_with_perfect_separation_gives_empty_estimates() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = pd.Categorical(np.where(x > 0.5, 2, np.where(x > -0.5, 1, 0)), ordered=True)
    table = ordinal_logistic(pd.DataFrame({"x": x, "y": y}), x="x", y="y")
    assert len(table) == 1 and np.isnan(table["beta"].iloc[0])
    assert "perfect separation" in table["note"].iloc[0]


def test_logistic_with_perfect_separation_gives_empty_estimates() -> None:
    sep = pd.DataFrame({"y": [0.0] * 5 + [1.0] * 5, "x": np.arange(10.0)})
    table = prog.logistic(sep, x="x", y="y")
    assert len(table) == 1 and table[["beta", "se", "p", "odds_ratio"]].isna().all(axis=None)
    assert "separation" in table["note"].iloc[0] and "5 events in 10 rows" in table["note"].iloc[0]


def test_logistic_that_does_not_converge_gives_empty_estimates() -> None:
    # quasi-complete separation: one tie at the boundary; the optimiser runs off to infinity
    quasi = pd.DataFrame({"y": [0.0] * 5 + [1.0] * 5 + [0.0], "x": [*range(10), 5.0]})
    table = prog.logistic(quasi, x="x", y="y")
    assert len(table) == 1 and np.isnan(table["beta"].iloc[0]) and table["note"].iloc[0]


# ------------------------------------------------------------------ whole clinical analyses on small cohorts
@pytest.mark.slow
@pytest.mark.parametrize("n_subjects", [8, 12])
def test_every_model_family_on_small_cohorts(tmp_path: Path, n_subjects: int) -> None:
    """Small two-session cohorts: every analysis runs; models that cannot be fitted say why."""
    unfitted = 0
    for seed in range(3):
        volumes = simulate_cohort(n_subjects=n_subjects, seed=seed, missing_fraction=0).joined()
        results = run_clinical(volumes, None, tmp_path / f"s{seed}", figures=False)
        for name in MODEL_TABLES:
            assert name in results, (seed, name)
            unfitted += _unfitted_rows_are_empty_with_a_reason(results[name])
        status = results["analyses"].set_index("analysis")["status"]
        assert status[["cross_sectional", "longitudinal", "progression"]].eq("done").all()
        assert (tmp_path / f"s{seed}" / "clinical_analyses.tsv").is_file()
    assert unfitted > 0  # the small cohorts do include models that cannot be fitted


def test_the_cohort_whose_ordinal_model_crashed(tmp_path: Path) -> None:
    """12 subjects, 2 sessions: the ordinal EDSS model's Hessian is singular for some methods."""
    volumes = simulate_cohort(n_subjects=12, seed=4, missing_fraction=0).joined()
    results = run_clinical(volumes, None, tmp_path, figures=False)
    ordinal = results["longitudinal_ordinal"]
    assert len(ordinal) == 3  # one row per method, fitted or not
    notes = ordinal.loc[ordinal["beta"].isna(), "note"]
    assert len(notes) and notes.str.contains("not estimable").all()
    assert {"progression_logistic", "power", "longitudinal_pbvc"} <= set(results)


def test_degenerate_cohorts(tmp_path: Path) -> None:
    """Constant volumes, no EDSS change, two subjects: rows with reasons, every analysis table written."""
    base = simulate_cohort(n_subjects=10, seed=3, missing_fraction=0).joined()
    # constant volumes: the volume term has no variation (singular design), the ANCOVA no residual variance
    results = run_clinical(base.assign(volume_ml=7.0), None, tmp_path / "constant", figures=False)
    for name in ("crosssectional", "longitudinal_regression", "longitudinal_ordinal", "progression_logistic"):
        assert _unfitted_rows_are_empty_with_a_reason(results[name]) == len(results[name]), name
    assert results["progression_pairwise"]["t"].isna().all()
    # no EDSS change: one change category, one course; the other outcomes are still modelled
    results = run_clinical(base.assign(edss=3.0), None, tmp_path / "no_change", figures=False)
    ordinal = results["longitudinal_ordinal"]
    assert ordinal["beta"].isna().all() and ordinal["note"].str.contains("fewer than two outcome categories").all()
    sdmt = results["longitudinal_regression"].query("outcome == 'sdmt'")
    assert len(sdmt) == 3 and sdmt["beta"].notna().all()
    # two subjects with a follow-up: too few rows for any model
    two = base[base["participant_id"].isin(["sub-001", "sub-002"])]
    results = run_clinical(two, None, tmp_path / "two", figures=False)
    for name in MODEL_TABLES:
        if name in results:
            assert _unfitted_rows_are_empty_with_a_reason(results[name]) == len(results[name]), name
    assert (tmp_path / "two" / "clinical_analyses.tsv").is_file()
