#!/usr/bin/env bash
# loom vs PyTorch on the same model, batch and thread count, interleaved in one run.
# The PyTorch peer is the current release from PyPI, installed into .venv-bench on first use
# (LOOM_BENCH_VENV names another virtual environment).
#   scripts/bench.sh vs_torch [--threads=N] [--rounds=N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${LOOM_BUILD_DIR:-build}"
venv="${LOOM_BENCH_VENV:-.venv-bench}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "vs_torch: installing PyTorch from PyPI into $venv (first run only)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q torch numpy >&2
fi
[ -x "$build_dir/bench/loom_bench" ] || bash scripts/setup.sh >&2
exec "$venv/bin/python" bench/vs_torch.py --loom-bench "$build_dir/bench/loom_bench" "$@"
