#!/usr/bin/env bash
# The comm benchmark: the local backend (2 and 4 ranks as threads) in one process, then the mpi
# backend under mpirun with 2 and 4 processes. Prints each run's table, then one last line of JSON
# holding every run's figures.
#   scripts/bench.sh comm [--repeats=N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_bench_common.sh

"$bench" comm "$@" | tee "$out/local"
for np in 2 4; do
  run_mpi "$np" comm "$@" | tee "$out/mpi$np"
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
