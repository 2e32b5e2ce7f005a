#!/usr/bin/env bash
# Install what tests/container/test_container_build.py needs to build and run
# the `core` image with podman (Debian packages only; no Docker engine).
# Idempotent; needs root (apt-get). Without root it only reports and exits 0,
# and the build test then skips with its reason.
set -euo pipefail
packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup_podman: all present (${packages[*]})"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_podman: missing ${missing[*]} and cannot apt-get here (not root or not Debian); the podman test will skip"
    exit 0
fi
# A second apt user on the machine (unattended upgrades, another job) holds the
# dpkg lock for a while: wait for it instead of failing. Recommends stay on:
# podman needs some of them (catatonit, containers-storage helpers).
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
echo "setup_podman: installed ${missing[*]}"
