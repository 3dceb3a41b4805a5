#!/usr/bin/env bash
# The first command on a fresh Debian machine: installs and builds loom, turns text that every
# Debian system has (the license texts in /usr/share/common-licenses and the copyright files in
# /usr/share/doc) into token shards, trains the small model of configs/tiny.yaml on 4 simulated
# ranks (threads, hybrid data parallelism planned afresh every step) with the loss and each step's
# balance printed as they go, evaluates the final checkpoint, draws the loss curve, and plans one
# step with `loom plan` and draws its trace.
#   QUICKSTART_DIR  where data and the run go (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
loom="${LOOM_BUILD_DIR:-build}/launch/loom"
dir="${QUICKSTART_DIR:-runs/quickstart}"

echo "== corpus: Debian's license texts and package copyright files"
rm -rf "$dir/corpus" "$dir/data" "$dir/run"
mkdir -p "$dir/corpus"
cp /usr/share/common-licenses/* "$dir/corpus/" 2>/dev/null || true
find /usr/share/doc -name copyright -type f | sort | while read -r f; do
  pkg="$(basename "$(dirname "$f")")"
  cp "$f" "$dir/corpus/$pkg.copyright"
done
echo "$(ls "$dir/corpus" | wc -l) documents, $(du -sh "$dir/corpus" | cut -f1)"

echo "== prep"
"$loom" prep --input "$dir/corpus" --output "$dir/data" --val-fraction 0.05
"$loom" inspect "$(ls "$dir"/data/train_*.bin | head -n 1)" | head -n 20

echo "== train"
"$loom" train --config configs/tiny.yaml \
  "data.train=$dir/data/train" "data.val=$dir/data/val" "logging.run_dir=$dir/run"

echo "== eval"
ckpt="$(ls -d "$dir"/run/checkpoints/step-* | tail -n 1)"
"$loom" eval --checkpoint "$ckpt" --data "$dir/data/val" --tokens 65536

echo "== plot"
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" scripts/plot_metrics.py "$dir/run"

echo "== plan: the first step's plan on the 4-rank mesh, as JSON, Chrome trace and picture"
rm -rf "$dir/plans"
"$loom" plan --config configs/tiny.yaml --steps 1 --out "$dir/plans" \
  "data.train=$dir/data/train" "data.val=$dir/data/val"
"$py" scripts/plot_plan.py "$dir/plans/step-000001.trace.json" "$dir/plans/step-000001.png"
