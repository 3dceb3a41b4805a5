#!/usr/bin/env bash
# A one-machine Slurm cluster on loopback, to try launch/srun.sh and launch/loom.sbatch for real:
#
#   bash scripts/slurm_local.sh          # as root, after scripts/setup.sh built build/launch/loom
#
# Installs Debian's slurmctld, slurmd and munge, writes a minimal slurm.conf for this host, starts
# the daemons, then trains configs/tiny.yaml's model on a few steps with `launch/srun.sh -n 4`
# and with `sbatch launch/loom.sbatch` (resubmitted once to show it resuming), and stops the
# daemons again. Not part of CI: it installs packages and runs system daemons.
#
# LOOM_BIN: the loom program (default: build/launch/loom). WORK: scratch folder (default: a new
# one under /tmp).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LOOM_BIN="${LOOM_BIN:-$repo/build/launch/loom}"
work="${WORK:-$(mktemp -d /tmp/loom_slurm.XXXXXX)}"
if [[ "$(id -u)" != 0 ]]; then
  echo "slurm_local.sh: run as root (it installs and starts daemons)" >&2
  exit 2
fi
[[ -x "$LOOM_BIN" ]] || { echo "slurm_local.sh: no loom at $LOOM_BIN (build first)" >&2; exit 2; }

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  slurmd slurmctld slurm-client munge > /dev/null

# Stopped by their pid files: other Slurm or munge daemons on the machine are left alone.
stop_daemons() {
  for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid" /run/munge/munged.pid; do
    [[ -s "$pidfile" ]] && kill "$(cat "$pidfile")" 2> /dev/null || true
  done
}

# munge authenticates slurmd to slurmctld; Debian ships a key, made here if it is missing.
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
trap stop_daemons EXIT
runuser -u munge -- /usr/sbin/munged --force

host="$(hostname -s)"
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
# Daemons as root and no cgroups: a container has neither a slurm user nor a writable cgroup
# tree. Four CPUs declared whatever the machine has (config_overrides), so that 4 ranks fit a
# 2-core test machine; task/none because binding to cores that do not exist would fail.
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=loomlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for _ in $(seq 50); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo

# A small corpus and a short run of the tiny model.
"$LOOM_BIN" prep --input /usr/share/common-licenses --output "$work/data" > /dev/null
cat > "$work/exp.yaml" <<EOF
model: {d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 128}
data: {train: $work/data/train, tokens_per_step: 4096, max_doc_tokens: 1024}
schedule: {max_lr: 1e-2, min_lr: 1e-3, warmup_steps: 2, total_steps: 20}
parallel: {capacity_tokens: 512}
runtime: {threads: 1, timeout_s: 60}
logging: {val_every: 0}
checkpoint: {every: 5}
EOF

echo "== launch/srun.sh -n 4 (from the login shell: srun makes its own allocation)"
"$repo/launch/srun.sh" -n 4 train --config "$work/exp.yaml" "logging.run_dir=$work/srun"
tail -n 1 "$work/srun/metrics.jsonl"

echo "== sbatch launch/loom.sbatch, twice: the second job finds the checkpoint and resumes"
cd "$repo"
for round in 1 2; do
  job="$(sbatch --parsable -N 1 --ntasks-per-node=4 --cpus-per-task=1 --time=10:00 \
    --output="$work/sbatch-%j.out" \
    --export="ALL,CONFIG=$work/exp.yaml,RUN_DIR=$work/sbatch,LOOM_BIN=$LOOM_BIN" \
    launch/loom.sbatch)"
  while squeue -h -j "$job" 2>/dev/null | grep -q .; do sleep 0.5; done
  echo "-- job $job (round $round):"
  grep -E "^(starting|resuming)|^checkpoint at" "$work/sbatch-$job.out"
done
echo "slurm_local.sh: ok (files in $work)"
