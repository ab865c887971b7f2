#!/usr/bin/env bash
# Installs the Debian packages pnn's build, tests and examples need, if any are missing (clang and its
# runtime libraries build the libFuzzer targets of tests/fuzz; cmake builds the CMake project of
# tests/packaging; python3-matplotlib draws scripts/plot_metrics.py's curves).
# Usage: scripts/install-deps.sh [extra packages...]
set -euo pipefail

packages=(meson ninja-build g++ pkg-config python3 libeigen3-dev doctest-dev zlib1g-dev libcli11-dev
          libbenchmark-dev nlohmann-json3-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin clang-format-16
          clang libclang-rt-14-dev cmake python3-matplotlib "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
