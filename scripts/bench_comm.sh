#!/usr/bin/env bash
# The comm benchmark: the local backend (2 and 4 ranks as threads) in one process, then the mpi
# backend under mpirun with 2 and 4 processes. Prints each run's table, then one last line of JSON
# holding every run's figures.
#   scripts/bench.sh comm [--repeats=N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${LOOM_BUILD_DIR:-build}"
bench="$build_dir/bench/loom_bench"
if [ ! -x "$bench" ]; then
  bash scripts/setup.sh >&2
fi
# Containers often run as root; 4 ranks may outnumber the cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

"$bench" comm "$@" | tee "$out/local"
for np in 2 4; do
  # Every rank measures; only rank 0 reports.
  mpirun --oversubscribe -np "$np" bash -c \
    'if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then exec "$@"; else exec "$@" >/dev/null; fi' \
    rank "$bench" comm "$@" | tee "$out/mpi$np"
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def last_json(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
print(json.dumps({"benchmark": "comm", "local": last_json("local"),
                  "mpi": {np: last_json("mpi" + np) for np in ("2", "4")}}))
PY
