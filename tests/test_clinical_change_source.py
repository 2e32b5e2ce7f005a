"""The change models take the thalamic change from the longitudinal mode where it exists (``change_source``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.simulate_cohort import simulate_cohort
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.group.clinical import run_clinical
from thalamus_bidsapp.group.clinical.change_source import composed_volumes, longitudinal_chains
from thalamus_bidsapp.group.clinical_config import load_clinical_config
from thalamus_bidsapp.reports.group_leads import longitudinal_lead, progression_lead
from thalamus_bidsapp.stats.change import CHANGE_COLUMNS

METHODS = (("meshnet", "T1w", 0.0, 0.25), ("first", "T1w", 0.6, 0.3))
N_SUBJECTS = 36
#: meshnet has longitudinal rows for these subjects only: the others fall back to the cross-sectional difference
WITH_LONGITUDINAL = [f"sub-{i:03d}" for i in range(1, 29)]
#: the longitudinal pair ses-02 -> ses-03 is missing: ses-01 -> ses-02 chains, ses-01 -> ses-03 does not
BROKEN_CHAIN = "sub-005"


def _baseline(i: int) -> float:
    return 9.0 + 0.01 * i


def _pct_to_last(i: int) -> float:
    return -(2.0 + 0.1 * i)


def _change_table(volumes: pd.DataFrame) -> pd.DataFrame:
    """Longitudinal meshnet rows (volumes unlike the sessions' own) and cross-sectional rows of both methods."""
    rows = []
    for subject in WITH_LONGITUDINAL:
        i = int(subject.removeprefix("sub-"))
        series = [_baseline(i), _baseline(i) * 0.99, _baseline(i) * (1 + _pct_to_last(i) / 100)]
        for k in range(2):
            if subject == BROKEN_CHAIN and k == 1:
                continue
            rows.append({"participant_id": subject, "method": "meshnet", "hemisphere": "bilateral",
                         "session_from": f"ses-{k + 1:02d}", "session_to": f"ses-{k + 2:02d}",
                         "volume_from_ml": series[k], "volume_to_ml": series[k + 1], "mode": "longitudinal"})
    # the cross-sectional rows of the change table are never read: the volumes table has those volumes
    for (subject, method), part in volumes.groupby(["participant_id", "method"]):
        part = part.sort_values("session_id")
        for (_, a), (_, b) in zip(part.iloc[:-1].iterrows(), part.iloc[1:].iterrows()):
            rows.append({"participant_id": subject, "method": method, "hemisphere": "bilateral",
                         "session_from": a["session_id"], "session_to": b["session_id"], "volume_from_ml": 1.0,
                         "volume_to_ml": 2.0, "mode": "cross-sectional"})
    table = pd.DataFrame(rows)
    table["change_ml"] = table["volume_to_ml"] - table["volume_from_ml"]
    table["change_pct"] = 100 * table["change_ml"] / table["volume_from_ml"]
    return table.reindex(columns=list(CHANGE_COLUMNS))


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, pd.DataFrame]:
    volumes = simulate_cohort(n_subjects=N_SUBJECTS, n_sessions=3, seed=7, methods=METHODS,
                              missing_fraction=0).joined()
    return volumes, _change_table(volumes)


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, pd.DataFrame], Path]]:
    volumes, change = cohort
    root = tmp_path_factory.mktemp("change_source")
    config = root / "cross.yaml"
    config.write_text("change_source: cross-sectional\n")
    out = {}
    for name, cfg, table in (("default", None, change), ("cross", config, change), ("without", None, None)):
        out[name] = (run_clinical(volumes, cfg, root / name, figures=False, change=table), root / name)
    return out


def _subject_rows(table: pd.DataFrame, method: str) -> pd.DataFrame:
    return table[table["method"] == method].set_index("participant_id")


def test_default_takes_the_longitudinal_change_and_falls_back_per_subject(runs) -> None:
    results, _ = runs["default"]
    deltas = _subject_rows(results["longitudinal_deltas"], "meshnet")
    cross = _subject_rows(runs["without"][0]["longitudinal_deltas"], "meshnet")
    for subject in WITH_LONGITUDINAL:
        i = int(subject.removeprefix("sub-"))
        row = deltas.loc[subject]
        assert row["change_source"] == "longitudinal"
        assert row["volume_ml_bl"] == pytest.approx(_baseline(i))
        assert row["pct_volume_ml"] == pytest.approx(-1.0)
        assert row["delta_volume_ml"] == pytest.approx(-0.01 * _baseline(i))
        assert row["annual_pct_change"] == pytest.approx(-1.0 / row["interval_years"])
        assert abs(cross.loc[subject, "pct_volume_ml"] + 1.0) > 1e-6  # the two sources differ here
    others = sorted(set(deltas.index) - set(WITH_LONGITUDINAL))
    assert len(others) == N_SUBJECTS - len(WITH_LONGITUDINAL)
    assert (deltas.loc[others, "change_source"] == "cross-sectional").all()
    pd.testing.assert_series_equal(deltas.loc[others, "pct_volume_ml"], cross.loc[others, "pct_volume_ml"])
    # a method without longitudinal rows keeps the cross-sectional difference for every subject
    first = _subject_rows(results["longitudinal_deltas"], "first")
    assert (first["change_source"] == "cross-sectional").all()
    pd.testing.assert_series_equal(first["pct_volume_ml"], _subject_rows(runs["without"][0]["longitudinal_deltas"],
                                                                         "first")["pct_volume_ml"])


def test_progression_chains_the_consecutive_pairs_to_the_last_session(runs) -> None:
    subjects = _subject_rows(runs["default"][0]["progression_subjects"], "meshnet")
    cross = _subject_rows(runs["without"][0]["progression_subjects"], "meshnet")
    assert (subjects["session_fu"] == "ses-03").all()
    for subject in WITH_LONGITUDINAL:
        if subject == BROKEN_CHAIN:
            continue
        assert subjects.loc[subject, "change_source"] == "longitudinal"
        assert subjects.loc[subject, "pct_volume_ml"] == pytest.approx(_pct_to_last(int(subject[4:])))
    # ses-02 -> ses-03 missing: no longitudinal chain to the last session, while the next session has one
    assert subjects.loc[BROKEN_CHAIN, "change_source"] == "cross-sectional"
    assert subjects.loc[BROKEN_CHAIN, "pct_volume_ml"] == pytest.approx(cross.loc[BROKEN_CHAIN, "pct_volume_ml"])
    assert _subject_rows(runs["default"][0]["longitudinal_deltas"], "meshnet").loc[
        BROKEN_CHAIN, "change_source"] == "longitudinal"


def test_model_tables_record_the_source_and_use_its_values(runs) -> None:
    results, _ = runs["default"]
    n_long = len(WITH_LONGITUDINAL)
    mixed = f"mixed ({n_long} longitudinal, {N_SUBJECTS - n_long} cross-sectional)"
    for name in ("longitudinal_regression", "longitudinal_winsorised", "longitudinal_ordinal", "longitudinal_pbvc",
                 "power"):
        table = results[name]
        assert list(table.columns).index("change_source") == list(table.columns).index("contrast") + 1, name
        assert set(table.loc[table["method"] == "meshnet", "change_source"]) == {mixed}, name
        assert set(table.loc[table["method"] == "first", "change_source"]) == {"cross-sectional"}, name
    progression_mixed = f"mixed ({n_long - 1} longitudinal, {N_SUBJECTS - n_long + 1} cross-sectional)"
    for name in ("progression_ancova", "progression_logistic"):
        table = results[name]
        assert set(table.loc[table["method"] == "meshnet", "change_source"]) == {progression_mixed}, name
    assert set(results["longitudinal_pairwise_wilcoxon"]["change_source"]) == {
        f"mixed ({n_long} longitudinal, {2 * N_SUBJECTS - n_long} cross-sectional)"}
    by_dx = results["longitudinal_change_by_diagnosis"]
    assert set(by_dx.loc[by_dx["method"] == "n/a", "change_source"]) == {"n/a"}
    # the estimates come from the longitudinal values: the power table's mean annual change is theirs
    deltas = _subject_rows(results["longitudinal_deltas"], "meshnet")
    power = results["power"].set_index("method")
    assert power.loc["meshnet", "mean_annual_pct"] == pytest.approx(deltas["annual_pct_change"].mean())
    assert power.loc["meshnet", "mean_annual_pct"] != pytest.approx(
        runs["without"][0]["power"].set_index("method").loc["meshnet", "mean_annual_pct"])
    regression = results["longitudinal_regression"].set_index(["method", "outcome"])["beta"]
    without = runs["without"][0]["longitudinal_regression"].set_index(["method", "outcome"])["beta"]
    assert regression.loc["first"].tolist() == pytest.approx(without.loc["first"].tolist())
    assert not np.allclose(regression.loc["meshnet"], without.loc["meshnet"])


def test_cross_sectional_source_writes_the_tables_as_before(runs) -> None:
    results, folder = runs["cross"]
    _, without = runs["without"]
    assert not any("change_source" in table for table in results.values())
    files = sorted(p.name for p in folder.glob("clinical_*"))
    assert files == sorted(p.name for p in without.glob("clinical_*")) and files
    for name in files:
        assert (folder / name).read_bytes() == (without / name).read_bytes(), name


def test_the_source_is_documented_logged_and_reported(cohort, runs, tmp_path: Path, caplog) -> None:
    _, folder = runs["default"]
    sidecar = (folder / "clinical_longitudinal_regression.json").read_text()
    assert '"change_source"' in sidecar and "longitudinal mode" in sidecar
    volumes, change = cohort
    with caplog.at_level(logging.INFO, logger="thalamus_bidsapp.group.clinical"):
        run_clinical(volumes, None, tmp_path, figures=False, change=change)
    assert f"longitudinal: thalamic change from the longitudinal mode for {len(WITH_LONGITUDINAL)} of " \
           f"{2 * N_SUBJECTS} subject-method rows" in caplog.text
    assert f"meshnet (T1w) {len(WITH_LONGITUDINAL)} longitudinal, " in caplog.text
    lead = " ".join(longitudinal_lead(runs["default"][0]["longitudinal_deltas"], None))
    assert f"for {len(WITH_LONGITUDINAL)} of {2 * N_SUBJECTS} subject-method pairs" in lead
    assert "longitudinal mode" in " ".join(progression_lead(runs["default"][0]["progression_subjects"], None))
    assert "longitudinal mode" not in " ".join(longitudinal_lead(runs["cross"][0]["longitudinal_deltas"], None))


def test_hemisphere_rows_map_to_the_side_methods() -> None:
    change = pd.DataFrame({"participant_id": ["sub-01"] * 2, "method": ["meshnet"] * 2,
                           "hemisphere": ["left", "bilateral"], "session_from": ["ses-1"] * 2,
                           "session_to": ["ses-2"] * 2, "volume_from_ml": [4.0, 8.0], "volume_to_ml": [3.9, 7.9],
                           "mode": ["longitudinal"] * 2})
    chains = longitudinal_chains(change)
    assert composed_volumes(chains, "sub-01", "meshnet_left", "ses-1", "ses-2") == (4.0, 3.9)
    assert composed_volumes(chains, "sub-01", "meshnet", "ses-1", "ses-2") == (8.0, 7.9)
    assert composed_volumes(chains, "sub-01", "meshnet_right", "ses-1", "ses-2") is None
    assert composed_volumes(chains, "sub-01", "meshnet", "ses-2", "ses-1") is None


@pytest.mark.parametrize("value", ["longitudinal-mode", "both"])
def test_invalid_change_source_is_a_usage_error_naming_the_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "clinical.yaml"
    path.write_text(f"change_source: {value}\n")
    with pytest.raises(ThalamusError) as err:
        load_clinical_config(path)
    assert err.value.exit_code == 64
    assert "clinical.yaml" in str(err.value) and "change_source" in str(err.value) and value in str(err.value)
    assert load_clinical_config(None).change_source == "longitudinal"


def test_group_level_reads_the_participant_change_tables(shared_data: Path, tmp_path: Path) -> None:
    """A group run: the subjects' change tables reach the models, the tables and the report."""
    from tests.simulate_multisite import real_anatomy, simulate_multisite, write_multisite_dataset
    from thalamus_bidsapp.bidsio.atomic import read_tsv, write_tsv
    from thalamus_bidsapp.cli.run import main

    cohort = simulate_multisite(real_anatomy(shared_data), n_subjects=12, n_sessions=2, seed=4)
    bids, out = write_multisite_dataset(cohort, tmp_path)
    with_table = [f"sub-{i:03d}" for i in range(1, 7)]
    for subject in with_table:
        table = pd.DataFrame([{"participant_id": subject, "method": "first", "hemisphere": "bilateral",
                               "session_from": "ses-01", "session_to": "ses-02", "volume_from_ml": 10.0,
                               "volume_to_ml": 9.9, "change_ml": -0.1, "change_pct": -1.0, "interval_years": 1.0,
                               "annualized_change_pct": -1.0, "mode": "longitudinal"}], columns=list(CHANGE_COLUMNS))
        write_tsv(table, out / subject / "anat" / f"{subject}_label-thalamus_desc-longitudinal_volumes.tsv")
    assert main([str(bids), str(out), "group", "-w", str(tmp_path / "work")]) == 0
    deltas = read_tsv(out / "group" / "clinical_longitudinal_deltas.tsv")
    first = deltas[deltas["method"] == "first"].set_index("participant_id")
    assert (first.loc[with_table, "change_source"] == "longitudinal").all()
    assert first.loc[with_table, "pct_volume_ml"].astype(float).to_numpy() == pytest.approx(-1.0)
    assert (first.drop(index=with_table)["change_source"] == "cross-sectional").all()
    assert (deltas.loc[deltas["method"] == "dbsegment", "change_source"] == "cross-sectional").all()
    regression = read_tsv(out / "group" / "clinical_longitudinal_regression.tsv")
    assert set(regression.loc[regression["method"] == "first", "change_source"]) == {
        "mixed (6 longitudinal, 6 cross-sectional)"}
    report = (out / "group" / "report.html").read_text()
    assert "comes from the longitudinal mode (one within-subject template) for 6 of 24 subject-method pairs" in report
