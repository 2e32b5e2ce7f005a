#!/usr/bin/env bash
# Set up a fresh machine and run the test suite: the README's test command.
# Creates .venv beside this repository, installs the CPU build of PyTorch first
# (an unpinned torch would pull gigabytes of CUDA packages), then the app with
# its test extras, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the report tests (Debian packages; skipped where apt-get cannot run as root).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; } || echo "chromium could not be installed: the browser checks will skip"
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[test,mindglide]"
# podman, runc and debootstrap for the container build test (it skips with the reason where podman cannot run).
bash tests/container/setup_podman.sh || echo "podman setup failed; tests/container/test_container_build.py will skip" >&2
export HF_HUB_OFFLINE=1 NIPYPE_NO_ET=1 MPLBACKEND=Agg
# --durations: the slowest tests are listed at the end, to keep the command within its time.
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=30 "$@"
