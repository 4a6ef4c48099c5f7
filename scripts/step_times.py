#!/usr/bin/env python3
"""Summarise the engine's per-step trace (`AISLE_LOG=aisle::engine::core=trace aisle serve ...`).

Each `step` line carries the step's decodes, prompt tokens and duration. Prints the
percentiles of the step durations and of the intervals between step ends: an interval is the
time every decoding stream waits for its next token, the engine's side of inter-token latency.
Usage: scripts/step_times.py SERVE.log [--skip N]   (--skip: ignore the first N steps, warm-up)
"""
import re
import sys
from datetime import datetime

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELD = re.compile(r"(decodes|prefill|ms)=([0-9.]+)")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    skip = int(args[args.index("--skip") + 1]) if "--skip" in args else 0
    steps = []
    with open(args[0], encoding="utf-8", errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            if " step " not in line:
                continue
            fields = dict(FIELD.findall(line))
            if {"decodes", "prefill", "ms"} <= fields.keys():
                at = datetime.fromisoformat(line.split()[0].rstrip("Z"))
                steps.append((at, int(fields["decodes"]), int(fields["prefill"]), float(fields["ms"])))
    steps = steps[skip:]
    if len(steps) < 2:
        sys.exit("fewer than two step lines: was the server run with AISLE_LOG=aisle::engine::core=trace?")
    ms = [s[3] for s in steps]
    gaps = [(b[0] - a[0]).total_seconds() * 1e3 for a, b in zip(steps, steps[1:])]
    rows = sum(s[1] + s[2] for s in steps)
    print(f"steps {len(steps)}, decodes {sum(s[1] for s in steps)}, prompt tokens {sum(s[2] for s in steps)}, "
          f"{rows / (sum(ms) / 1e3):.0f} rows/s while stepping")
    for name, xs in (("step ms", ms), ("interval ms", gaps)):
        print(f"{name:12} p50 {pct(xs, .5):7.1f}  p90 {pct(xs, .9):7.1f}  p99 {pct(xs, .99):7.1f}  max {max(xs):7.1f}")


if __name__ == "__main__":
    main()
