#!/usr/bin/env bash
# Installs the Debian packages pnn's build, tests and examples need, if any are missing (clang and its
# runtime libraries build the libFuzzer targets of tests/fuzz; cmake builds the CMake project of
# tests/packaging). Debian's PyTorch, NumPy and Matplotlib, with safetensors from PyPI, make the Python
# environment .venv that pnn's Python scripts and tests run in (tests/io/check_pytorch_interop.py,
# scripts/plot_metrics.py).
# Usage: scripts/install-deps.sh [extra packages...]
set -euo pipefail

packages=(meson ninja-build g++ pkg-config python3 libeigen3-dev doctest-dev zlib1g-dev libcli11-dev
          libbenchmark-dev nlohmann-json3-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin clang-format-16
          clang libclang-rt-14-dev cmake python3-venv python3-torch python3-numpy python3-matplotlib "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyTorch's safetensors package is not in Debian 12: it comes from PyPI, into a virtual environment that
# also sees Debian's packages. (A python3 earlier on PATH than Debian's, such as pyenv's, sees neither.)
venv="$(dirname "$0")/../.venv"
if ! "$venv/bin/python3" -c 'import safetensors.torch, torch, matplotlib' 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'safetensors>=0.4'
fi
