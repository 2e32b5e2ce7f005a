"""The QC thresholds file: defaults, a user's file merged over them, bad keys named (exit 64)."""

from __future__ import annotations

import json

import pytest

from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.qc.thresholds import default_thresholds, load_thresholds
from thalamus_bidsapp.qc.session import QC_COLUMN_DESCRIPTIONS


def test_every_check_has_a_rule_with_a_source():
    defaults = default_thresholds()
    checks = set(QC_COLUMN_DESCRIPTIONS["check"]["Levels"])
    rules = {"components" if c.startswith("components") else "centroid_distance" if c.startswith("centroid") else c
             for c in checks}
    assert rules == set(defaults["checks"])
    for name, rule in defaults["checks"].items():
        assert {"kind", "warn", "fail", "source"} <= set(rule), name
        assert len(rule["source"]) > 40, name


def test_a_user_file_is_merged_over_the_defaults(tmp_path):
    path = tmp_path / "qc.yaml"
    path.write_text("prior_threshold: 0.4\nchecks:\n  lr_ratio: {warn: [0.85, 1.18]}\n")
    merged = load_thresholds(path)
    assert merged["prior_threshold"] == 0.4
    assert merged["checks"]["lr_ratio"]["warn"] == [0.85, 1.18]
    assert merged["checks"]["lr_ratio"]["fail"] == default_thresholds()["checks"]["lr_ratio"]["fail"]
    assert merged["checks"]["dice_methods"] == default_thresholds()["checks"]["dice_methods"]


@pytest.mark.parametrize("content, named", [
    ({"checks": {"dice_method": {"warn": 0.5}}}, "checks.dice_method"),
    ({"checks": {"dice_methods": {"warning": 0.5}}}, "checks.dice_methods.warning"),
    ({"prior_treshold": 0.5}, "prior_treshold"),
    ({"checks": {"lr_ratio": {"warn": 0.9}}}, "'checks.lr_ratio.warn' must be a pair"),
    ({"prior_threshold": 2}, "prior_threshold"),
])
def test_a_bad_key_or_value_is_a_usage_error_naming_it(tmp_path, content, named):
    path = tmp_path / "qc.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ThalamusError) as err:
        load_thresholds(path)
    assert err.value.exit_code == 64 and named in str(err.value)


def test_the_command_line_refuses_a_bad_thresholds_file(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    path = tmp_path / "qc.yaml"
    path.write_text("checks:\n  nonsense: {warn: 1}\n")
    code = main([str(bids), str(tmp_path / "out"), "group", "--qc-thresholds", str(path)])
    assert code == 64
    assert "checks.nonsense" in capsys.readouterr().err
