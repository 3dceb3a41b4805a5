#!/usr/bin/env bash
# Installs what loom needs from Debian's packages (only what is missing), then configures and
# builds into build/. Safe to run again: a second run only rebuilds what changed.
#   LOOM_BUILD_DIR   build folder (default: build)
#   LOOM_CMAKE_ARGS  extra arguments for cmake's configure step
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  libopenblas-openmp-dev libyaml-cpp-dev libabsl-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  openmpi-bin libopenmpi-dev
  python3 python3-torch python3-numpy python3-matplotlib
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir="${LOOM_BUILD_DIR:-build}"
jobs="$(nproc)"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja ${LOOM_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$jobs"
echo "setup: built into $build_dir"
