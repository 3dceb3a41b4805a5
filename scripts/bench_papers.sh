#!/usr/bin/env bash
# The published-results table: every study in configs/sim/ that names a paper's figure
# (`reference:`), simulated with `loom simulate`, one row per study: the paper's speedup over its
# static baseline, loom's for the same setting (the study's reference.strategy, `best`), and
# megatron-hybrid-cp's. Prints the table and, last, one JSON line with a `rows` list.
#   scripts/bench.sh papers [--out DIR] [--steps N]
# DIR (default build/sim-papers) gets each study's summary, traces and chart (DIR/NAME/).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${LOOM_BUILD_DIR:-build}"
loom="$build_dir/launch/loom"
if [ ! -x "$loom" ]; then
  bash scripts/setup.sh >&2
fi
out="$build_dir/sim-papers"
steps=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --steps) steps="$2"; shift 2 ;;
    --steps=*) steps="${1#--steps=}"; shift ;;
    *) echo "bench papers: unknown argument '$1' (known: --out DIR, --steps N)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
python=/usr/bin/python3
[ -x "$python" ] || python=python3
lines="$out/rows.jsonl"
: > "$lines"
for config in configs/sim/*.yaml; do
  grep -q '^reference:' "$config" || continue
  name="$(basename "$config" .yaml)"
  args=(simulate --config "$config" --out "$out/$name")
  [ -n "$steps" ] && args+=("train.steps=$steps")
  echo "== $config" >&2
  start=$(date +%s.%N)
  "$loom" "${args[@]}" > "$out/$name.txt"
  end=$(date +%s.%N)
  tail -n 1 "$out/$name.txt" >> "$lines"
  "$python" scripts/plot_sim.py "$out/$name/summary.json" "$out/$name/strategies.png" >&2 || true
  printf '   %.1f s\n' "$(echo "$end - $start" | bc)" >&2
done
"$python" - "$lines" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    s = json.loads(line)
    ref = s.get("reference")
    if not ref:
        continue
    row = {"setting": ref["setting"], "config": s["config"],
           "paper_ratio": ref["paper_ratio"], "loom_ratio": ref["loom_ratio"],
           "loom_strategy": ref["loom_strategy"],
           "megatron_hybrid_cp_ratio": ref["megatron_hybrid_cp_ratio"],
           "ceiling_ratio": ref.get("ceiling_ratio", 0.0)}
    if "paper_naive_ratio" in ref:
        row["paper_naive_ratio"] = ref["paper_naive_ratio"]
        row["loom_naive_ratio"] = ref["loom_naive_ratio"]
    row["meets_paper"] = row["loom_ratio"] >= row["paper_ratio"]
    row["beats_megatron_hybrid_cp"] = row["loom_ratio"] > row["megatron_hybrid_cp_ratio"]
    rows.append(row)
# ceiling: static's step over the ideal step (every GPU at the assumed efficiency, nothing else),
# the most any strategy could gain over this static baseline.
print(f"{'setting':<62} {'paper':>7} {'loom':>7} {'megatron':>9} {'ceiling':>8}  goal")
for r in rows:
    goal = "met" if r["meets_paper"] and r["beats_megatron_hybrid_cp"] else (
        "below paper" if r["beats_megatron_hybrid_cp"] else "MISSED: megatron ahead")
    print(f"{r['setting']:<62} {r['paper_ratio']:>6.2f}x {r['loom_ratio']:>6.2f}x "
          f"{r['megatron_hybrid_cp_ratio']:>8.2f}x {r['ceiling_ratio']:>7.2f}x  {goal}")
    if "paper_naive_ratio" in r:
        print(f"{'  naive HDP over static':<62} {r['paper_naive_ratio']:>6.2f}x "
              f"{r['loom_naive_ratio']:>6.2f}x")
print(json.dumps({"rows": rows}))
PY
