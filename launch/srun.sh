#!/usr/bin/env bash
# loom under Slurm's srun, one rank per task:
#
#   launch/srun.sh -n 8 train --config exp.yaml logging.run_dir=runs/a    # in an allocation
#   launch/srun.sh train --resume runs/a       # inside sbatch: all the job's tasks (SLURM_NTASKS)
#   launch/srun.sh -N 2 --ntasks-per-node=4 --gpus-per-task=1 -- train --config gpu.yaml
#
# Everything before the loom command (train, plan, eval, prep, inspect; or before "--") goes to
# srun, everything after it to loom. For `train --config`, the task count (-n / --ntasks, else
# -N x --ntasks-per-node, else the allocation's SLURM_NTASKS) is passed on as
# `runtime.backend=mpi parallel.world_size=N`, ahead of your own overrides.
#
# Placement: one rank per core (--cpu-bind=cores) unless you pass --cpu-bind yourself; give each
# task several cores with --cpus-per-task=C and loom's runtime.threads: 0 uses them. GPU ranks
# (runtime.backend: nccl): --gpus-per-task=1 gives every task its own GPU (Slurm sets
# CUDA_VISIBLE_DEVICES per task, so each sees one device). loom's mpi backend is Open MPI, which
# srun starts through PMIx: pass --mpi=pmix where the cluster's MpiDefault is not already pmix.
#
# LOOM_BIN: the loom program (default: build/launch/loom of this checkout).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
loom="${LOOM_BIN:-$repo/build/launch/loom}"
if [[ ! -x "$loom" ]]; then
  echo "srun.sh: no loom program at $loom (build it, or set LOOM_BIN)" >&2
  exit 2
fi

srun_args=()
ntasks="" nodes="" per_node="" bind=""
while (($#)); do
  case "$1" in
    --) shift; break ;;
    train | plan | eval | prep | inspect) break ;;
    -n | --ntasks | -N | --nodes | --ntasks-per-node)
      [[ $# -ge 2 ]] || { echo "srun.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        -n | --ntasks) ntasks="$2" ;;
        -N | --nodes) nodes="$2" ;;
        *) per_node="$2" ;;
      esac
      srun_args+=("$1" "$2"); shift 2; continue ;;
    --ntasks=*) ntasks="${1#*=}" ;;
    --nodes=*) nodes="${1#*=}" ;;
    --ntasks-per-node=*) per_node="${1#*=}" ;;
    --cpu-bind=* | --cpu-bind) bind=1 ;;
  esac
  srun_args+=("$1")
  shift
done
if (($# == 0)); then
  echo "usage: srun.sh [srun flags] [--] train|plan|eval|prep|inspect [loom flags]" >&2
  exit 2
fi
# srun's own default is the allocation's task count; -N x --ntasks-per-node when both are given.
if [[ -z "$ntasks" && -n "$nodes" && -n "$per_node" ]]; then ntasks=$((nodes * per_node)); fi
ntasks="${ntasks:-${SLURM_NTASKS:-}}"

loom_args=("$1")
shift
# Only a new training run takes overrides; --resume refuses them (the saved config rules).
new_run=""
[[ "${loom_args[0]}" != train ]] || new_run=1
for a in "$@"; do
  [[ "$a" != --resume && "$a" != --resume=* ]] || new_run=""
done
if [[ -n "$new_run" && -n "$ntasks" ]]; then
  loom_args+=(runtime.backend=mpi "parallel.world_size=$ntasks")
fi
loom_args+=("$@")

[[ -n "$bind" ]] || srun_args+=(--cpu-bind=cores)
exec "${SRUN:-srun}" "${srun_args[@]}" "$loom" "${loom_args[@]}"
