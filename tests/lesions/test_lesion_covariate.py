"""The clinical config accepts ``covariates: [lesion_volume]``: the session's lesion volume enters the models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.simulate_cohort import joined_volumes, simulate_cohort, write_bids_tree
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.group.clinical import run_clinical
from thalamus_bidsapp.group.clinical_config import load_clinical_config


def test_lesion_volume_covariate_enters_the_cross_sectional_and_longitudinal_models(tmp_path):
    root = tmp_path / "bids"
    write_bids_tree(simulate_cohort(n_subjects=40, seed=3), root)
    volumes = joined_volumes(root)
    rng = np.random.default_rng(0)
    per_session = {key: rng.gamma(2.0, 4.0) for key in volumes[["participant_id", "session_id"]].itertuples(
        index=False, name=None)}
    volumes["lesion_volume_ml"] = [per_session[k] for k in volumes[["participant_id", "session_id"]].itertuples(
        index=False, name=None)]
    config_file = tmp_path / "clinical.yaml"
    config_file.write_text("covariates: [lesion_volume]\n")
    config = load_clinical_config(config_file)
    assert config.covariates == ("lesion_volume",)
    results = run_clinical(volumes, config, tmp_path / "clinical", figures=False)
    assert set(results["crosssectional"]["covariates"]) == {"age + sex + icv_z + lesion_volume"}
    longitudinal = results["longitudinal_regression"]
    assert longitudinal["covariates"].str.endswith("lesion_volume").all()


def test_lesion_volume_covariate_without_lesion_masks_is_left_out_with_a_note(tmp_path):
    root = tmp_path / "bids"
    write_bids_tree(simulate_cohort(n_subjects=30, seed=4), root)
    config_file = tmp_path / "clinical.yaml"
    config_file.write_text("covariates: [lesion_volume]\n")
    results = run_clinical(joined_volumes(root), load_clinical_config(config_file), tmp_path / "c", figures=False)
    table = results["crosssectional"]
    assert set(table["covariates"]) == {"age + sex + icv_z"}
    assert table["note"].str.contains("covariate lesion_volume unavailable").all()


def test_an_unknown_covariate_is_a_usage_error(tmp_path):
    config_file = tmp_path / "clinical.yaml"
    config_file.write_text("covariates: [lesion_load_typo]\n")
    with pytest.raises(ThalamusError, match="unknown covariate 'lesion_load_typo'"):
        load_clinical_config(config_file)
