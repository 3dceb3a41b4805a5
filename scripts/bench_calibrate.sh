#!/usr/bin/env bash
# Calibration: the cost model fitted on this machine and the simulator checked against real runs.
#  1. `calibrate`: T(s) = a s^2 + b s + c per layer from single documents (the planners'
#     parallel.cost_* lines for configs/tiny.yaml);
#  2. `calibrate_plans` on the local backend (2 ranks as threads) and under mpirun -np 2 (the mpi
#     backend): plans run for real, coefficients fitted to single-rank plans, and the simulator's
#     step time for held-out plans (every planner, rings, chunks, the gradient all-reduce) compared
#     with the measured one.
# Prints each run's table, then one JSON line: the document fit, both backends' held-out errors,
# and their median over every held-out plan (the figure held to <= 15%).
#   scripts/bench.sh calibrate [--repeats=N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_bench_common.sh

"$bench" calibrate "$@" | tee "$out/documents"
"$bench" calibrate_plans "$@" | tee "$out/local"
run_mpi 2 calibrate_plans "$@" | tee "$out/mpi"

python3 - "$out" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
def last_json(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
documents, local, mpi = last_json("documents"), last_json("local"), last_json("mpi")
errors = [row["error"] for run in (local, mpi) for row in run["holdout"]]
median = statistics.median(errors)
print(f"simulator against measured step time, held-out plans of both backends: median error "
      f"{100 * median:.1f}% over {len(errors)} plans (target <= 15%)")
print(json.dumps({"benchmark": "calibrate",
                  "holdout_median_rel_error": median,
                  "holdout_max_rel_error": max(errors),
                  "holdout_plans": len(errors),
                  "local_holdout_median_rel_error": local["holdout_median_rel_error"],
                  "mpi_holdout_median_rel_error": mpi["holdout_median_rel_error"],
                  "documents": documents, "local": local, "mpi": mpi}))
PY
