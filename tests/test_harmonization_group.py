"""Multi-site cohorts at group level: scanner from the sidecars, scanner change, ComBat harmonisation, refusals."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from tests.simulate_multisite import TRUTH, real_anatomy, simulate_multisite, write_multisite_dataset
from thalamus_bidsapp.bidsio.atomic import read_tsv, write_json, write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.group.harmonize import run_harmonization_step, session_table
from thalamus_bidsapp.stats.harmonization import apply_combat
from thalamus_bidsapp.group.scanners import add_scanner_columns

PROTECT = ("age", "sex", "edss", "anatomy")


@pytest.fixture(scope="module")
def anatomy(shared_data: Path) -> pd.DataFrame:
    return real_anatomy(shared_data)


def _config(tmp_path: Path, kind: str = "combat", batch: str = "site", protect=PROTECT) -> RunConfig:
    return RunConfig(bids_dir=tmp_path, output_dir=tmp_path, analysis_level="group", work_dir=tmp_path,
                     harmonize=kind, harmonize_batch=batch, harmonize_protect=tuple(protect))


def _coefficients(volumes: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per method and hemisphere: the age and EDSS coefficients relative to the planted ones (1 = exact)."""
    rows = []
    for (method, hemisphere), data in volumes.groupby(["method", "hemisphere"]):
        fit = smf.ols(f"{column} ~ age + edss + C(sex) + icv_ml + C(anatomy)", data).fit()
        sides = 2 if hemisphere == "bilateral" else 1
        rows.append({"method": method, "hemisphere": hemisphere, "age": fit.params["age"] / TRUTH["age"] / sides,
                     "edss": fit.params["edss"] / TRUTH["edss"] / sides})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["combat", "combat-gam"])
def test_harmonisation_removes_site_effects_and_recovers_planted_effects(anatomy, tmp_path, kind) -> None:
    cohort = simulate_multisite(anatomy, n_subjects=900, n_sessions=1, seed=0)
    volumes = cohort.joined().rename(columns={"institution": "site"})
    harmonised = run_harmonization_step(_config(tmp_path, kind), volumes, tmp_path)
    assert harmonised["volume_ml_harmonized"].notna().all() and harmonised["icv_ml_harmonized"].notna().all()
    sides = harmonised[harmonised["hemisphere"] != "bilateral"].set_index(["participant_id", "method", "hemisphere"])
    both = sides["volume_ml_harmonized"].groupby(level=[0, 1]).sum()
    bilateral = harmonised[harmonised["hemisphere"] == "bilateral"].set_index(["participant_id", "method"])
    np.testing.assert_allclose(bilateral["volume_ml_harmonized"].loc[both.index], both, rtol=1e-12)

    diagnostics = read_tsv(tmp_path / "harmonization.tsv")
    assert set(diagnostics["harmonization"]) <= {kind, "combat"}  # ICV alone: plain location/scale
    volumes_rows = diagnostics[diagnostics["method"] != "icv"]
    assert len(volumes_rows) == 2 * 2 * 3  # methods x sides x sites
    assert (volumes_rows["p_anova_before"] < 1e-6).all() and (diagnostics["p_anova_after"] > 0.05).all()
    assert (diagnostics["p_kruskal_after"] > 0.05).all() and (diagnostics["p_levene_after"] > 0.05).all()
    site_a = volumes_rows[volumes_rows["batch"] == "Hospital A"]
    assert (site_a["variance_after"] < site_a["variance_before"]).all()  # A's inflated error is scaled down

    raw, fixed = _coefficients(harmonised, "volume_ml"), _coefficients(harmonised, "volume_ml_harmonized")
    assert ((fixed[["age", "edss"]] - 1).abs() < 0.05).all().all(), fixed
    assert ((raw[["age", "edss"]] - 1).abs() > 0.05).all().all(), raw  # biased by the site offsets before

    model = json.loads((tmp_path / "harmonization_model.json").read_text())
    assert model["volume_model"]["kind"] == kind and model["batch_column"] == "site"
    assert set(model["volume_model"]["batches"]) == {"Hospital A", "Clinic B", "University C"}
    assert "icv_ml_harmonized" in model["volume_model"]["covariates"]["continuous"]
    if kind == "combat-gam":
        assert len(model["volume_model"]["covariates"]["smooth"]["age"]) == 4
    # the saved model harmonises sessions the same way (the README's recipe: icv_model, then volume_model)
    sessions, features = session_table(volumes, "site", PROTECT)
    sessions["icv_ml_harmonized"] = apply_combat(sessions, model["icv_model"], "site")["icv_ml"]
    again = apply_combat(sessions, model["volume_model"], "site").assign(participant_id=sessions["participant_id"])
    left = harmonised[(harmonised["method"] == "first") & (harmonised["hemisphere"] == "left")]
    np.testing.assert_allclose(again.set_index("participant_id").loc[left["participant_id"], "first:T1w:left"],
                               left["volume_ml_harmonized"], rtol=1e-9)


def test_refuses_a_batch_confounded_with_a_protected_covariate(anatomy, tmp_path) -> None:
    volumes = simulate_multisite(anatomy, n_subjects=60, seed=1).joined().rename(columns={"institution": "site"})
    volumes["diagnosis"] = np.where(volumes["site"] == "University C", "SPMS", "RRMS")  # every SPMS at C
    with pytest.raises(ThalamusError) as err:
        run_harmonization_step(_config(tmp_path, protect=("age", "sex", "diagnosis")), volumes, tmp_path)
    assert err.value.exit_code == 65
    assert "'University C' is confounded with diagnosis" in str(err.value)
    assert not (tmp_path / "harmonization.tsv").exists()


def test_refuses_a_batch_with_one_session(anatomy, tmp_path) -> None:
    volumes = simulate_multisite(anatomy, n_subjects=60, seed=1).joined().rename(columns={"institution": "site"})
    volumes.loc[volumes["participant_id"] == "sub-002", "site"] = "Visiting scanner"
    with pytest.raises(ThalamusError) as err:
        run_harmonization_step(_config(tmp_path), volumes, tmp_path)
    assert err.value.exit_code == 65 and "'Visiting scanner' has 1 session(s)" in str(err.value)


def test_reference_batch_keeps_its_volumes(anatomy, tmp_path) -> None:
    volumes = simulate_multisite(anatomy, n_subjects=150, seed=5).joined().rename(columns={"institution": "site"})
    config = _config(tmp_path, protect=("age", "sex", "edss"))
    harmonised = run_harmonization_step(replace(config, harmonize_ref_batch="Clinic B"), volumes, tmp_path)
    at_b = harmonised[harmonised["site"] == "Clinic B"]
    np.testing.assert_allclose(at_b["volume_ml_harmonized"], at_b["volume_ml"], rtol=1e-9)
    np.testing.assert_allclose(at_b["icv_ml_harmonized"], at_b["icv_ml"], rtol=1e-12)
    elsewhere = harmonised[(harmonised["site"] != "Clinic B") & (harmonised["hemisphere"] == "left")]
    assert (elsewhere["volume_ml_harmonized"] - elsewhere["volume_ml"]).abs().min() > 0
    diagnostics = read_tsv(tmp_path / "harmonization.tsv")
    assert (diagnostics["p_anova_after"] > 0.05).all()
    model = json.loads((tmp_path / "harmonization_model.json").read_text())
    assert model["ref_batch"] == "Clinic B" and model["volume_model"]["ref_batch"] == "Clinic B"
    with pytest.raises(ThalamusError, match="reference batch 'Clinic Z' is not among the usable batches") as err:
        run_harmonization_step(replace(config, harmonize_ref_batch="Clinic Z"), volumes, tmp_path)
    assert err.value.exit_code == 65


def test_harmonize_options_reach_the_run_config(tmp_path) -> None:
    from thalamus_bidsapp.cli.run import build_config

    (tmp_path / "bids").mkdir()
    base = [str(tmp_path / "bids"), str(tmp_path / "out"), "group"]
    default = build_config(base)
    assert (default.harmonize, default.harmonize_batch, default.harmonize_protect, default.harmonize_ref_batch) == (
        "none", "scanner", ("age", "sex"), None)
    config = build_config([*base, "--harmonize", "combat-gam", "--harmonize-batch", "site", "--harmonize-protect",
                           "age", "sex", "edss", "age", "--harmonize-ref-batch", "Clinic B"])
    assert (config.harmonize, config.harmonize_batch, config.harmonize_protect, config.harmonize_ref_batch) == (
        "combat-gam", "site", ("age", "sex", "edss"), "Clinic B")


def test_missing_protected_column_and_gam_without_age(anatomy, tmp_path) -> None:
    volumes = simulate_multisite(anatomy, n_subjects=30, seed=1).joined().rename(columns={"institution": "site"})
    with pytest.raises(ThalamusError, match="--harmonize-protect: column.*bmi") as err:
        run_harmonization_step(_config(tmp_path, protect=("age", "bmi")), volumes, tmp_path)
    assert err.value.exit_code == 65
    with pytest.raises(ThalamusError, match="combat-gam.*age"):
        run_harmonization_step(_config(tmp_path, "combat-gam", protect=("sex",)), volumes, tmp_path)
    with pytest.raises(ThalamusError, match="no session has a scanner label"):
        run_harmonization_step(_config(tmp_path, batch="scanner"), volumes, tmp_path)


def test_a_scanner_column_of_sessions_tsv_wins_over_the_sidecars(anatomy, tmp_path, caplog) -> None:
    cohort = simulate_multisite(anatomy, n_subjects=6, n_sessions=2, seed=2)
    bids, out = write_multisite_dataset(cohort, tmp_path)
    volumes = cohort.volumes.merge(cohort.sessions.drop(columns="site_true"), on=["participant_id", "session_id"])
    volumes["scanner"] = np.where(volumes["session_id"] == "ses-01", "old", "new")
    config = RunConfig(bids_dir=bids, output_dir=out, analysis_level="group", work_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="thalamus_bidsapp.group.scanners"):
        found = add_scanner_columns(volumes, config)
    assert set(found["scanner"]) == {"old", "new"}
    assert "scanner: the dataset's scanner column gives 12 session(s) and wins over the sidecars" in caplog.text
    assert set(found["manufacturer"]) == {"Siemens", "GE", "Philips"}  # the other sidecar fields still come in
    second = found.drop_duplicates(["participant_id", "session_id"]).set_index("session_id")["scanner_change"]
    assert (second.loc["ses-02"] == 1).all() and second.loc["ses-01"].isna().all()


def test_site_precedence_sessions_table_then_sidecars_then_participants(anatomy, tmp_path, caplog) -> None:
    from thalamus_bidsapp.group.volumes import join_clinical

    cohort = simulate_multisite(anatomy, n_subjects=6, n_sessions=2, seed=2)
    bids, out = write_multisite_dataset(cohort, tmp_path)
    participants = read_tsv(bids / "participants.tsv")
    participants["site"] = "P-" + participants["centre"].astype(str)
    write_tsv(participants, bids / "participants.tsv")
    for sidecar in (bids / "sub-002").rglob("*_T1w.json"):  # no InstitutionName: participants.tsv fills in
        write_json({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "InstitutionName"}, sidecar)
    table = read_tsv(bids / "sub-003" / "sub-003_sessions.tsv")
    table["site"] = ["n/a", "Mobile unit"]  # ses-02 on a mobile scanner: the sessions table wins over the sidecar
    write_tsv(table, bids / "sub-003" / "sub-003_sessions.tsv")
    volumes = join_clinical(cohort.volumes, bids)
    config = RunConfig(bids_dir=bids, output_dir=out, analysis_level="group", work_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="thalamus_bidsapp.group.scanners"):
        found = add_scanner_columns(volumes, config).drop_duplicates(["participant_id", "session_id"])
    site = found.set_index(["participant_id", "session_id"])["site"]
    truth = cohort.scanners.set_index(["participant_id", "session_id"])["institution"]
    assert site.loc[("sub-003", "ses-02")] == "Mobile unit" and site.loc[("sub-003", "ses-01")] == "University C"
    assert (site.loc["sub-002"] == "P-B").all()
    others = [key for key in site.index if key[0] not in ("sub-002", "sub-003")]
    assert (site.loc[others] == truth.loc[others]).all()
    assert (found["site_participants"].str.startswith("P-")).all()  # participants.tsv's own column is kept
    assert "site: the dataset's site_sessions column gives 1 session(s) and wins over the sidecars (1 of them" \
        in caplog.text
    assert "site: participants.tsv's site column fills 2 session(s)" in caplog.text


def _run_group(bids: Path, out: Path, work: Path, *options: str) -> int:
    from thalamus_bidsapp.cli.run import main

    return main([str(bids), str(out), "group", "-w", str(work), *options])


@pytest.fixture(scope="module")
def multisite_tree(anatomy, tmp_path_factory) -> dict:
    """A longitudinal multi-site dataset (T1w sidecars, participant outputs) and its group run without --harmonize."""
    root = tmp_path_factory.mktemp("multisite")
    cohort = simulate_multisite(anatomy, n_subjects=24, n_sessions=2, seed=3)
    bids, out = write_multisite_dataset(cohort, root)
    code = _run_group(bids, out, root / "work")
    return {"code": code, "bids": bids, "out": out, "root": root, "cohort": cohort}


@pytest.fixture(scope="module")
def harmonised_run(multisite_tree, tmp_path_factory) -> dict:
    """The same dataset's group run with longitudinal ComBat by site and the clinical models on harmonised volumes."""
    root = tmp_path_factory.mktemp("harmonised")
    out = root / "out"
    shutil.copytree(multisite_tree["out"], out, ignore=shutil.ignore_patterns("group"))
    clinical = root / "clinical.yaml"
    clinical.write_text("volume_source: harmonized\n")
    code = _run_group(multisite_tree["bids"], out, root / "work", "--harmonize", "combat", "--harmonize-batch", "site",
                      "--harmonize-protect", *PROTECT, "--clinical-config", str(clinical))
    return {"code": code, "out": out}


def test_sidecar_scanner_fields_land_in_group_volumes(multisite_tree) -> None:
    multisite_run = multisite_tree
    assert multisite_run["code"] == 0
    volumes = read_tsv(multisite_run["out"] / "group" / "volumes.tsv")
    sessions = volumes.drop_duplicates(["participant_id", "session_id"]).set_index(["participant_id", "session_id"])
    truth = multisite_run["cohort"].scanners.set_index(["participant_id", "session_id"])
    assert (sessions["manufacturer"] == truth.loc[sessions.index, "manufacturer"]).all()
    assert (sessions["manufacturers_model_name"] == truth.loc[sessions.index, "model"]).all()
    assert (sessions["device_serial_number"].astype(str) == truth.loc[sessions.index, "serial"]).all()
    # MagneticFieldStrength inherited from the dataset-level T1w.json (3 T) unless the session's sidecar says 1.5
    assert (sessions["magnetic_field_strength"].astype(float) == truth.loc[sessions.index, "field"]).all()
    assert (sessions["site"] == truth.loc[sessions.index, "institution"]).all()
    # sub-001's scanner comes from the T1w of its input folder (no Sources in its outputs)
    assert sessions.loc[("sub-001", "ses-01"), "scanner"] == "Siemens Prisma 3T SN 1001"
    assert sessions.loc[("sub-003", "ses-01"), "scanner"] == "Philips Achieva 1.5T SN 3003"
    sidecar = json.loads((multisite_run["out"] / "group" / "volumes.json").read_text())
    assert {"scanner", "site", "scanner_change", "manufacturer"} <= set(sidecar)
    assert "volume_ml_harmonized" not in volumes  # without --harmonize
    report = (multisite_run["out"] / "group" / "report.html").read_text()
    assert "run without --harmonize" in report


def test_scanner_change_is_derived_between_sessions(multisite_tree) -> None:
    multisite_run = multisite_tree
    group = multisite_run["out"] / "group"
    volumes = read_tsv(group / "volumes.tsv").drop_duplicates(["participant_id", "session_id"])
    second = volumes[volumes["session_id"] == "ses-02"].set_index("participant_id")
    upgraded = second["site"] == "University C"  # site C moved from its Achieva to an Ingenia
    assert (second.loc[upgraded, "scanner_change"] == 1).all() and (second.loc[~upgraded, "scanner_change"] == 0).all()
    assert volumes.loc[volumes["session_id"] == "ses-01", "scanner_change"].isna().all()
    deltas = read_tsv(group / "clinical_progression_subjects.tsv").drop_duplicates("participant_id")
    changed = deltas.set_index("participant_id")["scanner_change"]
    assert (changed == upgraded.loc[changed.index].astype(float)).all()


def test_derived_scanner_change_enters_the_longitudinal_change_model(multisite_tree, tmp_path) -> None:
    from thalamus_bidsapp.group.clinical import run_clinical

    config = tmp_path / "clinical.yaml"
    config.write_text("covariates: [scanner_change]\n")
    volumes = read_tsv(multisite_tree["out"] / "group" / "volumes.tsv")
    tables = run_clinical(volumes, config, tmp_path, figures=False)
    regression = tables["longitudinal_regression"]
    assert not regression.empty and regression["covariates"].str.contains("scanner_change").all()
    assert tables["longitudinal_deltas"]["scanner_change"].isin([0.0, 1.0]).all()


@pytest.mark.slow
def test_longitudinal_harmonisation_and_harmonised_clinical_models(harmonised_run) -> None:
    assert harmonised_run["code"] == 0
    group = harmonised_run["out"] / "group"
    diagnostics = read_tsv(group / "harmonization.tsv")
    assert set(diagnostics.loc[diagnostics["method"] != "icv", "harmonization"]) == {"longitudinal-combat"}
    volumes_rows = diagnostics[diagnostics["method"] != "icv"]
    assert (volumes_rows["p_anova_before"] < 0.05).all() and (volumes_rows["p_anova_after"] > 0.05).all()
    model = json.loads((group / "harmonization_model.json").read_text())
    assert len(model["volume_model"]["features"]["first:T1w:left"]["random_intercepts"]) == 24
    volumes = read_tsv(group / "volumes.tsv")
    deltas = read_tsv(group / "clinical_longitudinal_deltas.tsv")
    row = deltas[(deltas["method"] == "first")].iloc[0]
    source = volumes[(volumes["participant_id"] == row["participant_id"]) & (volumes["session_id"] == "ses-01")
                     & (volumes["method"] == "first") & (volumes["hemisphere"] == "bilateral")].iloc[0]
    assert row["volume_ml_bl"] == pytest.approx(source["volume_ml_harmonized"])
    assert row["volume_ml_bl"] != pytest.approx(source["volume_ml"])
    report = (group / "report.html").read_text()
    assert 'id="harmonization"' in report and "harmonization_before_after" in report
    assert (group / "figures" / "harmonization_before_after.png").stat().st_size > 1000


def test_confounded_batch_is_refused_with_exit_65(multisite_tree, capsys, caplog) -> None:
    multisite_run = multisite_tree
    before = sorted(p.name for p in (multisite_run["out"] / "group").iterdir())
    code = _run_group(multisite_run["bids"], multisite_run["out"], multisite_run["root"] / "work",
                      "--harmonize", "combat", "--harmonize-batch", "site", "--harmonize-protect", "age", "centre")
    assert code == 65
    captured = capsys.readouterr()
    assert "batch 'Clinic B' is confounded with centre" in caplog.text + captured.out + captured.err
    assert sorted(p.name for p in (multisite_run["out"] / "group").iterdir()) == before  # earlier set kept


def test_harmonized_volume_source_needs_harmonize(anatomy, tmp_path) -> None:
    from thalamus_bidsapp.group.clinical import run_clinical

    config = tmp_path / "clinical.yaml"
    config.write_text("volume_source: harmonized\n")
    volumes = simulate_multisite(anatomy, n_subjects=12, seed=4).joined()
    with pytest.raises(ThalamusError, match="volume_ml_harmonized.*--harmonize") as err:
        run_clinical(volumes, config, tmp_path, figures=False)
    assert err.value.exit_code == 65


def test_scanner_change_counts_every_session_up_to_the_follow_up() -> None:
    from thalamus_bidsapp.group.clinical.common import scanner_change_between
    from thalamus_bidsapp.group.scanners import add_scanner_change

    sessions = pd.DataFrame({"participant_id": ["sub-01"] * 3 + ["sub-02"] * 2,
                             "session_id": ["ses-1", "ses-2", "ses-3", "ses-1", "ses-2"],
                             "acq_time": ["2020-01-01", "2021-01-01", "2022-01-01", "2020-01-01", "2021-06-01"],
                             "scanner": ["X", "Y", "X", "X", "X"]})
    derived = add_scanner_change(sessions)
    np.testing.assert_array_equal(derived["scanner_change"], [np.nan, 1.0, 1.0, np.nan, 0.0])
    given = add_scanner_change(sessions.assign(scanner_change=[0, 0, 0, 0, 1]))
    assert given["scanner_change"].tolist() == [0, 0, 0, 0, 1]  # the dataset's column wins
    visits = derived.assign(visit_rank=[0, 1, 2, 0, 1])
    deltas = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "session_bl": ["ses-1", "ses-1"],
                           "session_fu": ["ses-3", "ses-2"], "scanner_bl": ["X", "X"], "scanner_fu": ["X", "X"]})
    # X -> Y -> X: the follow-up's scanner is the baseline's, yet the scanner changed in between
    assert scanner_change_between(deltas, derived, visits).tolist() == [1.0, 0.0]
    assert scanner_change_between(deltas, derived.drop(columns="scanner_change"), visits).tolist() == [0.0, 0.0]


def test_sidecar_inheritance_and_scanner_label(tmp_path) -> None:
    from thalamus_bidsapp.bidsio.scanners import inherited_metadata, scanner_label

    anat = tmp_path / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    (tmp_path / "T1w.json").write_text(json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3}))
    (tmp_path / "acq-fast_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 7}))
    (tmp_path / "sub-01" / "sub-01_T1w.json").write_text(json.dumps({"ManufacturersModelName": "Prisma"}))
    (anat / "sub-01_ses-1_T1w.json").write_text(json.dumps({"DeviceSerialNumber": "42"}))
    (anat / "sub-01_ses-1_FLAIR.json").write_text(json.dumps({"Manufacturer": "GE"}))
    meta = inherited_metadata(anat / "sub-01_ses-1_T1w.nii.gz", tmp_path)
    assert meta == {"Manufacturer": "Siemens", "MagneticFieldStrength": 3, "ManufacturersModelName": "Prisma",
                    "DeviceSerialNumber": "42"}  # acq-fast_T1w.json and the FLAIR's sidecar do not apply
    assert scanner_label(meta) == "Siemens Prisma 3T SN 42"
    assert inherited_metadata(anat / "sub-01_ses-1_acq-fast_T1w.nii.gz", tmp_path)["MagneticFieldStrength"] == 7
    assert scanner_label({}) is None


def test_flair_and_r1map_sidecars_give_their_own_scanner(tmp_path, caplog) -> None:
    from thalamus_bidsapp.bidsio.scanners import session_scanners

    bids, out, derived = tmp_path / "bids", tmp_path / "out", tmp_path / "qmri"
    anat = bids / "sub-01" / "ses-1" / "anat"
    write_json({"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3,
                "DeviceSerialNumber": "7", "InstitutionName": "Hospital A", "SoftwareVersions": "syngo MR XA30"},
               anat / "sub-01_ses-1_T1w.json")
    write_json({"Manufacturer": "Siemens", "ManufacturersModelName": "Skyra", "MagneticFieldStrength": 3},
               anat / "sub-01_ses-1_FLAIR.json")
    write_json({"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3,
                "DeviceSerialNumber": "7"}, derived / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_R1map.json")
    out_anat = out / "sub-01" / "ses-1" / "anat"
    write_json({"Sources": ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"]},
               out_anat / "sub-01_ses-1_desc-preproc_T1w.json")
    write_json({"Sources": ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz"]},
               out_anat / "sub-01_ses-1_space-T1w_FLAIR.json")
    write_json({"Sources": ["bids:qmri:sub-01/ses-1/anat/sub-01_ses-1_R1map.nii.gz"]},
               out_anat / "sub-01_ses-1_space-T1w_R1map.json")
    sessions = pd.DataFrame({"participant_id": ["sub-01"], "session_id": ["ses-1"]})
    with caplog.at_level(logging.WARNING, logger="thalamus_bidsapp.bidsio.scanners"):
        found = session_scanners(sessions, out, bids, {"qmri": derived}).iloc[0]
    assert found["scanner"] == "Siemens Prisma 3T SN 7" and found["software_versions"] == "syngo MR XA30"
    assert found["flair_scanner"] == "Siemens Skyra 3T" and found["r1map_scanner"] == "Siemens Prisma 3T SN 7"
    assert "the FLAIR was acquired on Siemens Skyra 3T, the T1w on Siemens Prisma 3T SN 7" in caplog.text
    assert "R1map was acquired" not in caplog.text
