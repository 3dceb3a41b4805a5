#!/usr/bin/env bash
# Runs one benchmark: prints a readable table, then a last line that is one JSON object.
#   scripts/bench.sh NAME [--threads=N] [--repeats=N] [--quick]
# Names: the list printed by `scripts/bench.sh` with no argument.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${LOOM_BUILD_DIR:-build}"
if [ ! -x "$build_dir/bench/loom_bench" ]; then
  bash scripts/setup.sh >&2
fi
name="${1:-}"
# Some benchmarks have a driver script (for example one that sets up a PyTorch peer).
if [ -n "$name" ] && [ -f "scripts/bench_${name}.sh" ]; then
  shift
  exec bash "scripts/bench_${name}.sh" "$@"
fi
exec "$build_dir/bench/loom_bench" "$@"
