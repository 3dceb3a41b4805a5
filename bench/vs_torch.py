#!/usr/bin/env python3
"""Drives `scripts/bench.sh vs_torch`: alternates loom's step (loom_bench step_only) and the
PyTorch peer (bench/torch_step.py), each in its own process so that each process's peak resident
memory is measured the same way, and prints the medians side by side and a last JSON line."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run(cmd):
    """Runs cmd; returns (its last JSON line, its peak resident memory in bytes)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"vs_torch: {' '.join(cmd)} failed with exit code {proc.returncode}")
        out.seek(0)
        last = [line for line in out.read().splitlines() if line.startswith("{")][-1]
    return json.loads(last), usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loom-bench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    quick = ["--quick"] if args.quick else []
    peers = {
        "loom": [args.loom_bench, "step_only", f"--threads={args.threads}", "--repeats=3"] + quick,
        "torch": [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "torch_step.py"),
                  f"--threads={args.threads}", "--repeats=3"] + quick,
    }
    times = {name: [] for name in peers}
    rss = {name: [] for name in peers}
    version = ""
    for r in range(args.rounds):
        for name, cmd in peers.items():
            result, peak = run(cmd)
            times[name].append(result["step_s"])
            rss[name].append(peak)
            version = result.get("torch_version", version)
            print(f"round {r + 1}: {name:5s} step {result['step_s']:.4f} s, "
                  f"peak RSS {peak / 2**20:.0f} MiB", flush=True)
    ls, ts = statistics.median(times["loom"]), statistics.median(times["torch"])
    print(f"\n{'':16s}{'step s (median)':>16s}{'peak RSS MiB':>14s}")
    print(f"{'loom':16s}{ls:16.4f}{max(rss['loom']) / 2**20:14.0f}")
    print(f"{'torch ' + version:16s}{ts:16.4f}{max(rss['torch']) / 2**20:14.0f}")
    print(f"loom / torch step time: {ls / ts:.3f}")
    print(json.dumps({"benchmark": "vs_torch", "threads": args.threads, "loom_step_s": ls,
                      "torch_step_s": ts, "loom_over_torch": ls / ts,
                      "loom_peak_bytes": max(rss["loom"]), "torch_peak_bytes": max(rss["torch"]),
                      "torch_version": version}))


if __name__ == "__main__":
    main()
