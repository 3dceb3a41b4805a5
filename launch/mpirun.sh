#!/usr/bin/env bash
# loom under Open MPI's mpirun, one rank per process:
#
#   launch/mpirun.sh -np 4 train --config configs/tiny.yaml logging.run_dir=runs/mpi
#   launch/mpirun.sh -np 8 --host a:4,b:4 train --config exp.yaml   # two machines
#   launch/mpirun.sh -np 4 -- train --resume runs/mpi                # "--" ends mpirun's flags
#
# Everything before the loom command (train, plan, eval, prep, inspect; or before "--") goes to
# mpirun, everything after it to loom. For `train --config`, the rank count is passed on as
# `runtime.backend=mpi parallel.world_size=N` (N from -np / -n / --np), ahead of your own
# overrides, so the config need not repeat it; `train --resume` reuses the run's saved config.
#
# Placement: one rank per core, each bound to it (--map-by core --bind-to core), so that loom's
# runtime.threads: 0 gives every rank its own core's worth of kernel threads. Any --map-by,
# --bind-to or --oversubscribe of yours replaces that. More ranks than cores needs --oversubscribe
# (ranks then share cores, unbound: slower, but fine for tests); that is your call, not the
# script's, since on a real machine it usually means a wrong -np. GPU ranks (runtime.backend: nccl)
# want one rank per GPU: -np = GPUs per host x hosts; each rank takes GPU local_rank % GPUs.
#
# LOOM_BIN: the loom program (default: build/launch/loom of this checkout). MPIRUN: the mpirun to
# use (default: mpirun on PATH).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
loom="${LOOM_BIN:-$repo/build/launch/loom}"
if [[ ! -x "$loom" ]]; then
  echo "mpirun.sh: no loom program at $loom (build it, or set LOOM_BIN)" >&2
  exit 2
fi

mpi_args=()
ranks=""
placement=""  # set when the user chose placement themselves
while (($#)); do
  case "$1" in
    --) shift; break ;;
    train | plan | eval | prep | inspect) break ;;
    -np | -n | --n | --np | -c)
      [[ $# -ge 2 ]] || { echo "mpirun.sh: $1 needs a number" >&2; exit 2; }
      ranks="$2"; mpi_args+=("$1" "$2"); shift 2; continue ;;
    --map-by | --bind-to | --oversubscribe | --map-by=* | --bind-to=*) placement=1 ;;
  esac
  mpi_args+=("$1")
  shift
done
if (($# == 0)); then
  echo "usage: mpirun.sh [mpirun flags] [--] train|plan|eval|prep|inspect [loom flags]" >&2
  exit 2
fi

loom_args=("$1")
shift
# Only a new training run takes overrides; --resume refuses them (the saved config rules).
new_run=""
[[ "${loom_args[0]}" != train ]] || new_run=1
for a in "$@"; do
  [[ "$a" != --resume && "$a" != --resume=* ]] || new_run=""
done
if [[ -n "$new_run" && -n "$ranks" ]]; then
  loom_args+=(runtime.backend=mpi "parallel.world_size=$ranks")
fi
loom_args+=("$@")

[[ -n "$placement" ]] || mpi_args+=(--map-by core --bind-to core)
# Open MPI refuses to run as root unless told twice; containers and CI often are root.
if [[ "$(id -u)" == 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec "${MPIRUN:-mpirun}" "${mpi_args[@]}" "$loom" "${loom_args[@]}"
