#!/usr/bin/env python3
"""Draws `loom simulate`'s comparison of strategies (DIR/summary.json from --out) as a PNG: the
median step time of each strategy with its p99 as a whisker and its speedup over `static` above
the bar, and beside it each strategy's MFU and the bubble (time ranks spend waiting or on
messages their compute does not hide, over their compute).

usage: plot_sim.py SUMMARY.json OUT.png
"""
import argparse
import json
import sys

try:
    import matplotlib
except ImportError:
    sys.exit(f"plot_sim: {sys.executable} has no matplotlib: install python3-matplotlib "
             "(scripts/setup.sh does) and run this with /usr/bin/python3")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_summary(path):
    try:
        with open(path) as f:
            summary = json.load(f)
    except OSError as e:
        sys.exit(f"plot_sim: {e}")
    except json.JSONDecodeError as e:
        sys.exit(f"plot_sim: {path}: not JSON: {e}")
    if not isinstance(summary, dict) or not isinstance(summary.get("strategies"), list):
        sys.exit(f"plot_sim: {path}: no strategies list (not a summary from `loom simulate`?)")
    rows = [s for s in summary["strategies"] if "step_s_median" in s]
    if not rows:
        sys.exit(f"plot_sim: {path}: no strategy has figures (every one failed to plan)")
    return summary, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary")
    parser.add_argument("out")
    args = parser.parse_args()
    summary, rows = read_summary(args.summary)
    names = [r["strategy"] for r in rows]
    median = [r["step_s_median"] for r in rows]
    p99 = [max(0.0, r["step_s_p99"] - r["step_s_median"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    bars = left.bar(names, median, yerr=[[0] * len(p99), p99], capsize=4, color="#4C72B0")
    for bar, r, whisker in zip(bars, rows, p99):
        label = f"{r['speedup_vs_static']:.2f}x" if r.get("speedup_vs_static") else ""
        if not r.get("fits_memory", True):
            label += " (OOM)"
        left.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height() + whisker),
                      ha="center", va="bottom", fontsize=9, xytext=(0, 3),
                      textcoords="offset points")
    left.set_ylabel("step time, s (median; whisker: p99)")
    left.set_title("step time and speedup over static")
    left.tick_params(axis="x", rotation=30)
    x = range(len(rows))
    width = 0.4
    right.bar([i - width / 2 for i in x], [100 * r["mfu"] for r in rows], width, label="MFU %",
              color="#55A868")
    right.bar([i + width / 2 for i in x], [100 * r["bubble"] for r in rows], width,
              label="bubble %", color="#C44E52")
    right.set_xticks(list(x))
    right.set_xticklabels(names, rotation=30)
    right.set_title("MFU and bubble")
    right.legend()
    fig.suptitle(f"{summary.get('model')} on {summary.get('gpus')} x {summary.get('gpu')}, "
                 f"{summary.get('lengths')} lengths, context {summary.get('context_tokens')}, "
                 f"{summary.get('global_batch_tokens')} tokens per step")
    fig.tight_layout()
    try:
        fig.savefig(args.out, dpi=110)
    except OSError as e:
        sys.exit(f"plot_sim: cannot write {args.out}: {e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
