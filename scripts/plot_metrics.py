#!/usr/bin/env python3
"""Draws a run's loss curve from <run_dir>/metrics.jsonl to a PNG.

usage: plot_metrics.py RUN_DIR [--out FILE]   (default FILE: RUN_DIR/loss.png)
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    steps, loss, val_steps, val = [], [], [], []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")
                # A skipped step (optimizer.on_nonfinite) has a NaN loss, written as null.
                if r.get("loss") is None:
                    continue
                steps.append(r["step"])
                loss.append(r["loss"])
                if "val_loss" in r:
                    val_steps.append(r["step"])
                    val.append(r["val_loss"])
    except OSError as e:
        sys.exit(f"plot_metrics: {e}")
    if not steps:
        sys.exit(f"plot_metrics: {path} has no steps")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, loss, lw=1, alpha=0.8, label="train loss")
    if val:
        ax.plot(val_steps, val, "o-", lw=2, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("mean token loss (nats)")
    ax.set_title(f"loom: {os.path.normpath(args.run_dir)}")
    ax.grid(alpha=0.3)
    ax.legend()
    out = args.out or os.path.join(args.run_dir, "loss.png")
    tmp = out + ".tmp.png"
    fig.tight_layout()
    fig.savefig(tmp)
    os.replace(tmp, out)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
