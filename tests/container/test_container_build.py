"""Build the Dockerfile's ``core`` target with podman and run the image for real.

Where podman can run (root, Debian's podman + runc + debootstrap; see
tests/container/setup_podman.sh): make a Debian base image with debootstrap,
tag it as the Dockerfile's BASE_IMAGE, build ``--target core --pull=never``,
then inside the image run ``--version``, ``--check-tools`` and participant + group on ds002748
sub-01 with ``--network none``, the input mounted read-only and the image's
non-root user; compare the outputs with tests/container/expected_*.

Elsewhere the test skips with the reason (tests/container/test_container_static.py
still runs hadolint and the CircleCI schema check).

Notes from the trial on the project's machines, which shape the setup below:
the default crun fails there (runc + cgroupfs in a containers.conf passed via
CONTAINERS_CONF); default ulimits fail (nofile=20000, nproc=4096); pip inside
the build needs the host's CA bundle, which is mounted for the build only and
never copied into a layer; torch comes from the local CPU wheel (pip download)
mounted as a find-links folder so the build does not pull a CUDA build.

Environment:
    THALAMUS_PODMAN_ROOT   podman storage (default ~/.cache/thalamus_bidsapp/podman);
                           kept between runs so layers and the base image are reused
    THALAMUS_TEST_DATA     the shared real data (default ../shared/data)
    THALAMUS_SKIP_CONTAINER_BUILD=1   skip this module (the static checks still run)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA, missing_prerequisite
from tests.container.compare_outputs import tree_differences, volume_differences
from tests.templateflow_home import build_templateflow_home

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

logger = logging.getLogger(__name__)

IMAGE = "localhost/thalamus-bidsapp:core-test"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DATASET = SHARED_DATA / "ds002748_subset"
MESHNET = SHARED_DATA / "brainchop" / "models" / "model30chan18cls"
CA_CANDIDATES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
DEFAULT_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# A fresh build took about 5 minutes on the project's 2-core machines; the
# limit keeps a stuck build well inside CI's 90 minutes.
BUILD_TIMEOUT_S = 25 * 60
#: Free space the base image, the build layers and the image need (about 5 GB used).
MIN_FREE_BYTES = 12 * 1024**3
RUN_TIMEOUT_S = 15 * 60


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"ARG {name} with a default not found in the Dockerfile"
    return match.group(1)


def _timed(label: str, cmd: list[str], env: dict[str, str], timeout: int, check: bool = True,
           **kwargs) -> subprocess.CompletedProcess:
    """Run a command, log its wall time, and fail with its output tail when it fails."""
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    logger.info("%s: %.0f s (rc=%d)", label, time.monotonic() - start, proc.returncode)
    if check and proc.returncode != 0:
        pytest.fail(f"{label} failed (rc={proc.returncode}): {' '.join(cmd)}\n"
                    f"stdout tail:\n{proc.stdout[-4000:]}\nstderr tail:\n{proc.stderr[-4000:]}")
    return proc


def _podman_env(tmp: Path) -> dict[str, str]:
    """Environment with a containers.conf and storage.conf that work on the CI machines."""
    root = _storage_root()
    root.mkdir(parents=True, exist_ok=True)
    conf = tmp / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    storage = tmp / "storage.conf"
    # overlay is much faster than vfs; the fallback below switches when the
    # kernel refuses overlay mounts.
    driver = os.environ.get("THALAMUS_PODMAN_DRIVER", "overlay")
    storage.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{root / ("storage-" + driver)}"\n'
        f'runroot = "{tmp / "run"}"\n'
    )
    env = dict(os.environ)
    env.update(CONTAINERS_CONF=str(conf), CONTAINERS_STORAGE_CONF=str(storage))
    return env


def _storage_root() -> Path:
    return Path(os.environ.get("THALAMUS_PODMAN_ROOT", Path.home() / ".cache" / "thalamus_bidsapp" / "podman"))


def _why_podman_cannot_run(env: dict[str, str]) -> str | None:
    if os.environ.get("THALAMUS_SKIP_CONTAINER_BUILD", "").strip().lower() in {"1", "true", "yes"}:
        return "THALAMUS_SKIP_CONTAINER_BUILD is set"
    if sys.platform != "linux":
        return "podman test needs Linux"
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run tests/container/setup_podman.sh as root)"
    if os.geteuid() != 0:
        return "debootstrap and this podman setup need root"
    free = shutil.disk_usage(_storage_root()).free
    if free < MIN_FREE_BYTES:
        return f"only {free / 1024**3:.1f} GiB free under {_storage_root()}; the build needs about 12"
    proc = subprocess.run(["podman", "info"], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return f"'podman info' fails here: {proc.stderr.strip()[-500:]}"
    return None


def _base_image(env: dict[str, str], tmp: Path) -> str:
    """The Dockerfile's BASE_IMAGE, made locally with debootstrap unless already in storage."""
    base = _dockerfile_arg("BASE_IMAGE")
    if subprocess.run(["podman", "image", "exists", base], env=env).returncode == 0:
        logger.info("base image %s already in podman storage", base)
        return base
    suite = re.search(r"debian:(\w+)", base)
    assert suite, f"BASE_IMAGE {base} is not a Debian image"
    rootfs = tmp / "rootfs"
    _timed("debootstrap", ["debootstrap", "--variant=minbase", suite.group(1), str(rootfs),
                           "http://deb.debian.org/debian"], env, 20 * 60)
    # Like the official image: updates and security suites too, no apt caches.
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\n"
        f"Suites: {suite.group(1)} {suite.group(1)}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\n"
        f"Suites: {suite.group(1)}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    _timed("podman import", ["podman", "import", "-", base], env, 10 * 60, stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return base


def _build_context(tmp: Path) -> Path:
    """A small context: the app's sources, and the MeshNet weights and a TemplateFlow home from the shared data."""
    ctx = tmp / "context"
    ctx.mkdir()
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, ctx / name)
    shutil.copytree(REPO_ROOT / "thalamus_bidsapp", ctx / "thalamus_bidsapp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for model, names in (("model30chan18cls", ("model.json", "model.bin")),
                         ("model21_104class", ("model.json", "group1-shard1of1.bin", "colormap.json"))):
        weights = ctx / "container-weights" / "meshnet" / model
        weights.mkdir(parents=True)
        for name in names:
            shutil.copy2(MESHNET.parent / model / name, weights / name)
    # TemplateFlow's S3 is not reachable from CI: the files come from the context (TEMPLATES_SOURCE=context).
    build_templateflow_home(SHARED_DATA / "templates", ctx / "container-templateflow")
    return ctx


def _torch_wheels(tmp: Path, env: dict[str, str]) -> Path:
    """The local CPU torch wheel, as pip resolves it on this machine."""
    wheels = tmp / "wheels"
    version = _dockerfile_arg("TORCH_VERSION")
    proc = _timed("pip download torch", [sys.executable, "-m", "pip", "download", f"torch=={version}",
                                         "--no-deps", "--only-binary", ":all:", "-d", str(wheels)],
                  env, 20 * 60, check=False)
    found = sorted(wheels.glob("torch-*+cpu-*.whl"))
    if proc.returncode != 0 or not found:
        pytest.skip(f"no local CPU wheel of torch {version} (the build would pull a CUDA build): "
                    f"{proc.stderr.strip()[-300:]}")
    return wheels


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("podman")
    env = _podman_env(tmp)
    reason = _why_podman_cannot_run(env)
    if reason:
        pytest.skip(reason)
    for needed in (DATASET / "sub-01", MESHNET / "model.bin", MESHNET.parent / "model21_104class" / "model.json"):
        if not needed.exists():
            missing_prerequisite(f"real data missing: {needed}")
    return env


@pytest.fixture(scope="module")
def core_image(podman_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    _base_image(podman_env, tmp)
    ctx = _build_context(tmp)
    wheels = _torch_wheels(tmp, podman_env)
    cmd = ["podman", "build", "--pull=never", "--target", "core", "--network", "host",
           "--build-arg", "WEIGHTS_SOURCE=context", "--build-arg", "TEMPLATES_SOURCE=context",
           # pypi.org instead of download.pytorch.org (not reachable from CI); the
           # +cpu wheel in the mounted folder outranks PyPI's CUDA build of the same version.
           "--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple",
           "-v", f"{wheels}:/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/wheels"]
    ca = next((Path(os.environ[v]) for v in CA_CANDIDATES if os.environ.get(v)), DEFAULT_CA)
    if ca.is_file():
        cmd += ["-v", f"{ca}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    cmd += ["-t", IMAGE, str(ctx)]
    _timed("podman build --target core", cmd, podman_env, BUILD_TIMEOUT_S)
    return IMAGE


def _run(env: dict[str, str], label: str, args: list[str], mounts: list[str] = (), timeout: int = RUN_TIMEOUT_S,
         check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["podman", "run", "--rm", "--network", "none"]
    for mount in mounts:
        cmd += ["-v", mount]
    return _timed(label, cmd + [IMAGE, *args], env, timeout, check=check)


def test_image_metadata(core_image, podman_env):
    proc = _timed("podman inspect", ["podman", "image", "inspect", core_image], podman_env, 120)
    config = json.loads(proc.stdout)[0]["Config"]
    assert config["Entrypoint"] == ["thalamus-bidsapp"]
    assert config["User"] not in ("", "root", "0", "0:0")
    labels = config["Labels"]
    for key in ("version", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["THALAMUS_CONTAINER"].startswith("docker:")


def test_version(core_image, podman_env):
    from thalamus_bidsapp import __version__

    proc = _run(podman_env, "--version", ["--version"])
    assert proc.stdout.strip() == f"thalamus-bidsapp {__version__}"


def test_check_tools(core_image, podman_env):
    """The image's tool check (the build ran it too): MeshNet can run, FIRST cannot in the core image."""
    proc = _run(podman_env, "--check-tools", ["--check-tools", "--methods", "meshnet"])
    logger.info("--check-tools in the core image:\n%s", proc.stdout)
    assert "[ok] method meshnet: can run" in proc.stdout
    assert "model.bin: /opt/models/meshnet/model30chan18cls/model.bin sha256" in proc.stdout
    assert "/opt/models/meshnet/model21_104class" in proc.stdout
    assert proc.stdout.rstrip().endswith("exit 0")
    missing = _run(podman_env, "--check-tools first", ["--check-tools", "--methods", "first"], check=False)
    assert missing.returncode == 66, missing.stdout + missing.stderr
    assert "[FAIL] method first: CANNOT RUN" in missing.stdout


def test_participant_and_group(core_image, podman_env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # The image's user (uid 1000) writes here; the input stays read-only.
    out.chmod(0o777)
    mounts = [f"{DATASET}:/bids:ro", f"{out}:/out"]
    participant = _run(podman_env, "participant sub-01", [
        "/bids", "/out", "participant", "--participant-label", "01", "-w", "/tmp/work", "--nprocs", "1"],
        mounts)
    logger.info("participant log tail:\n%s", participant.stderr[-2000:])
    _run(podman_env, "group", ["/bids", "/out", "group", "-w", "/tmp/work"], mounts)

    problems = tree_differences(out) + volume_differences(out)
    assert not problems, "\n".join(problems)
    description = json.loads((out / "dataset_description.json").read_text())
    container = description["GeneratedBy"][0]["Container"]
    assert container["Type"] == "docker" and container["Tag"].endswith("-core"), container
    owners = {p.stat().st_uid for p in out.rglob("*")}
    assert 0 not in owners, f"outputs written as root: {owners}"
