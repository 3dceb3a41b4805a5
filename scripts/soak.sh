#!/usr/bin/env bash
# Soak test: `mpirun -np 4` training killed at random moments and resumed, until it has trained
# as many steps as an uninterrupted run of the same config; then the final weights and every
# step's loss must equal the uninterrupted run's bit for bit, and no resume may have started
# before the newest checkpoint written before its kill.
#
#   bash scripts/soak.sh                 # SOAK_MINUTES=30 of killing and resuming (default)
#   SOAK_MINUTES=5 bash scripts/soak.sh  # a short one
#
# The run length is chosen from the measured step time of the reference run so that the killed
# run takes about SOAK_MINUTES; kills come every SOAK_KILL_MIN..SOAK_KILL_MAX seconds (default
# 20..90) to a random rank with SIGKILL. Needs a built checkout (scripts/setup.sh) and writes
# under SOAK_DIR (default runs/soak). Prints a summary and a last line of JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
loom="${LOOM_BUILD_DIR:-build}/launch/loom"
dir="${SOAK_DIR:-runs/soak}"
minutes="${SOAK_MINUTES:-30}"
kill_min="${SOAK_KILL_MIN:-20}"
kill_max="${SOAK_KILL_MAX:-90}"
[[ -x "$loom" ]] || { echo "soak: no $loom; run scripts/setup.sh first" >&2; exit 2; }
export LOOM_BIN="$PWD/$loom"

rm -rf "$dir"
mkdir -p "$dir/corpus"
cp /usr/share/common-licenses/* "$dir/corpus/" 2>/dev/null || true
"$loom" prep --input "$dir/corpus" --output "$dir/data" > /dev/null
common=(--config configs/tiny.yaml "data.train=$dir/data/train" "data.val=\"\"" logging.val_every=0
        checkpoint.every=25 checkpoint.keep_last=2 runtime.timeout_s=20)

# Step time of an uninterrupted run, from a short probe.
launch/mpirun.sh -np 4 --oversubscribe train "${common[@]}" schedule.total_steps=20 \
  schedule.warmup_steps=2 "logging.run_dir=$dir/probe" > "$dir/probe.log" 2>&1
step_s=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; \
print(sorted(x['step_s'] for x in r)[len(r)//2])" "$dir/probe/metrics.jsonl")
steps=$(python3 -c "print(max(100, int($minutes * 60 / (1.3 * $step_s))))")
echo "soak: $steps steps (median step ${step_s} s), killing for about $minutes minutes"
run=("${common[@]}" "schedule.total_steps=$steps" schedule.warmup_steps=20)

echo "== uninterrupted reference"
launch/mpirun.sh -np 4 --oversubscribe train "${run[@]}" "logging.run_dir=$dir/ref" \
  > "$dir/ref.log" 2>&1

echo "== killed and resumed"
start=$(date +%s)
kills=0
lost_checkpoints=0
first=1
while true; do
  # Killed before its first checkpoint: start afresh, as the batch template does.
  if ! ls -d "$dir"/soak/checkpoints/step-* > /dev/null 2>&1; then
    first=1
    rm -rf "$dir/soak"
  fi
  if ((first)); then
    launch/mpirun.sh -np 4 --oversubscribe train "${run[@]}" "logging.run_dir=$dir/soak" \
      >> "$dir/soak.log" 2>&1 &
    first=0
  else
    launch/mpirun.sh -np 4 --oversubscribe -- train --resume "$dir/soak" >> "$dir/soak.log" 2>&1 &
  fi
  job=$!
  wait_s=$((kill_min + RANDOM % (kill_max - kill_min + 1)))
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "$job" 2>/dev/null; then
    wait "$job" && break  # finished every step
    echo "soak: a run failed on its own; see $dir/soak.log" >&2
    exit 1
  fi
  # The newest complete checkpoint before the kill: the resume must start from it (or later).
  before=$(ls -d "$dir"/soak/checkpoints/step-* 2>/dev/null | sort | tail -n 1 || true)
  # The ranks: loom processes (mpirun and the wrapper have other program names).
  ranks=($(pgrep -f -- "^$LOOM_BIN train" || true))
  ((${#ranks[@]})) || { wait "$job" && break; }
  victim=${ranks[$((RANDOM % ${#ranks[@]}))]}
  kill -9 "$victim" 2>/dev/null || true
  kills=$((kills + 1))
  wait "$job" || true
  after=$(ls -d "$dir"/soak/checkpoints/step-* 2>/dev/null | sort | tail -n 1 || true)
  if [[ -n "$before" && "$after" < "$before" ]]; then lost_checkpoints=$((lost_checkpoints + 1)); fi
  echo "soak: kill $kills at $(( $(date +%s) - start )) s (pid $victim), newest checkpoint $(basename "${after:-none}")"
done
elapsed=$(( $(date +%s) - start ))

echo "== compare"
python3 - "$dir" "$steps" "$kills" "$lost_checkpoints" "$elapsed" <<'EOF'
import filecmp, json, sys
d, steps, kills, lost, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def metrics(run):
    return [json.loads(l) for l in open(f"{d}/{run}/metrics.jsonl") if l.strip()]
ref, soak = metrics("ref"), metrics("soak")
last = f"checkpoints/step-{steps:08d}/model.safetensors"
weights_equal = filecmp.cmp(f"{d}/ref/{last}", f"{d}/soak/{last}", shallow=False)
losses_equal = len(ref) == len(soak) == steps and all(
    a["step"] == b["step"] and a["loss"] == b["loss"] for a, b in zip(ref, soak))
print(f"steps {steps}, kills {kills}, minutes {elapsed / 60:.1f}, final weights equal: "
      f"{weights_equal}, every loss equal: {losses_equal}, lost checkpoints: {lost}")
print(json.dumps({"benchmark": "soak", "steps": steps, "kills": kills, "minutes": elapsed / 60,
                  "final_weights_equal": weights_equal, "losses_equal": losses_equal,
                  "lost_checkpoints": lost}))
sys.exit(0 if weights_equal and losses_equal and lost == 0 else 1)
EOF
