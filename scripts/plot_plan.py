#!/usr/bin/env python3
"""Draws a step plan's Chrome trace (from `loom plan`) as a Gantt chart: one row per rank, one bar
per action, coloured by kind (forward, backward, ring exchange, gradient sync).

usage: plot_plan.py TRACE.json OUT.png

The trace lays each rank's actions end to end with the cost model's durations (see
parallel/chrome_trace.h), so the chart shows how much work each rank has; the title gives the
balance, max/mean over ranks of forward + backward time, the figure the balance scheduler
minimises.
"""
import argparse
import json
import os
import sys

try:
    import matplotlib
except ImportError:
    sys.exit(f"plot_plan: {sys.executable} has no matplotlib: install python3-matplotlib "
             "(scripts/setup.sh does) and run this with /usr/bin/python3")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# Kinds as parallel/step_plan.cc names them, in legend order.
COLOURS = {
    "forward": "#4C72B0",
    "backward": "#DD8452",
    "ring_exchange": "#55A868",
    "grad_sync": "#8172B2",
    "recompute": "#C44E52",
}
LABELS = {
    "forward": "forward",
    "backward": "backward",
    "ring_exchange": "ring exchange",
    "grad_sync": "gradient sync",
    "recompute": "recompute (ChunkFlow)",
}


def read_trace(path):
    try:
        with open(path) as f:
            trace = json.load(f)
    except OSError as e:
        sys.exit(f"plot_plan: {e}")
    except json.JSONDecodeError as e:
        sys.exit(f"plot_plan: {path}: not JSON: {e}")
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        sys.exit(f"plot_plan: {path}: no traceEvents list (not a Chrome trace from `loom plan`?)")
    title = "step plan"
    bars = {}  # rank -> [(start_ms, duration_ms, kind)]
    for n, e in enumerate(events):
        if e.get("ph") == "M" and e.get("name") == "process_name":
            title = e.get("args", {}).get("name", title)
        elif e.get("ph") == "X":
            try:
                rank, kind = int(e["tid"]), e["cat"]
                start, dur = float(e["ts"]) / 1e3, float(e["dur"]) / 1e3
            except (KeyError, TypeError, ValueError) as err:
                sys.exit(f"plot_plan: {path}: traceEvents[{n}]: bad slice ({err})")
            if kind not in COLOURS:
                sys.exit(f"plot_plan: {path}: traceEvents[{n}]: unknown action kind '{kind}'")
            bars.setdefault(rank, []).append((start, dur, kind))
    if not bars:
        sys.exit(f"plot_plan: {path}: the trace has no actions")
    return title, bars


def balance(bars):
    compute = [sum(d for _, d, k in slices if k in ("forward", "backward"))
               for slices in bars.values()]
    mean = sum(compute) / len(compute)
    return max(compute) / mean if mean > 0 else 1.0


def main():
    ap = argparse.ArgumentParser(description="Chrome trace of a step plan -> Gantt chart PNG")
    ap.add_argument("trace")
    ap.add_argument("out")
    args = ap.parse_args()
    title, bars = read_trace(args.trace)
    ranks = sorted(bars)
    # A row per rank, up to a figure a screen can still show.
    fig, ax = plt.subplots(figsize=(11, min(1.5 + 0.4 * len(ranks), 30)), dpi=100)
    for rank in ranks:
        for kind in COLOURS:
            spans = [(s, d) for s, d, k in bars[rank] if k == kind]
            if spans:
                ax.broken_barh(spans, (rank - 0.4, 0.8), facecolors=COLOURS[kind],
                               edgecolors="white", linewidth=0.5)
    if len(ranks) <= 32:
        ax.set_yticks(ranks)
        ax.set_yticklabels([f"rank {r}" for r in ranks])
    else:
        ax.set_ylabel("rank")
    ax.invert_yaxis()  # rank 0 on top, as trace viewers show it
    ax.set_xlabel("cost-model time (ms), actions end to end")
    ax.set_title(f"{title}: {len(ranks)} ranks, balance {balance(bars):.3f} "
                 "(max/mean forward+backward)")
    ax.grid(axis="x", alpha=0.3)
    used = {k for slices in bars.values() for _, _, k in slices}
    # Outside, right of the rows: it covers no bar whatever the number of ranks.
    ax.legend(handles=[Patch(color=COLOURS[k], label=LABELS[k]) for k in COLOURS if k in used],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    tmp = args.out + ".tmp.png"
    fig.tight_layout()
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
