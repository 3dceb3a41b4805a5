#!/usr/bin/env bash
# The ring benchmark: balance and the overlap of 2 ranks as threads (local backend) in one
# process, then the overlap of 2 processes on the mpi backend under mpirun, 8K tokens per rank.
# Prints each run's table, then one last line of JSON: the balance figures, the mpi overlap as
# overlap_ratio and hidden_comm_fraction, and every run's own figures under "local" and "mpi".
#   scripts/bench.sh ring [--repeats=N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_bench_common.sh

"$bench" ring "$@" | tee "$out/local"
run_mpi 2 ring "$@" | tee "$out/mpi2"

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def last_json(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
local, mpi = last_json("local"), last_json("mpi2")
balance_keys = ("zigzag_balance", "contiguous_balance", "zigzag_balance_measured",
                "contiguous_balance_measured", "balance_members", "balance_tokens")
result = {"benchmark": "ring"}
result.update({k: local[k] for k in balance_keys})
result.update({"overlap_ratio": mpi["overlap_ratio"],
               "hidden_comm_fraction": mpi["hidden_comm_fraction"],
               "overlap_backend": "mpi",
               "local_overlap_ratio": local["overlap_ratio"],
               "local_hidden_comm_fraction": local["hidden_comm_fraction"],
               "local": local, "mpi": mpi})
print(json.dumps(result))
PY
