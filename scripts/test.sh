#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs every test through ctest, the PyTorch
# reference tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir="${LOOM_BUILD_DIR:-build}"
# Ranks as processes and as threads share the 2 cores: run tests one at a time unless told more.
ctest --test-dir "$build_dir" --output-on-failure -j "${LOOM_TEST_JOBS:-2}" "$@"
