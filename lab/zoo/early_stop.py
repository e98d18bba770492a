#!/usr/bin/env python3
"""Scores early-stopping rules for the scan's trigger inversion offline, from
the per-window traces `scan_zoo.py --trace` keeps (`<model>.<export>.trace`:
every label's window share, mean mask and smallest mask every ten steps).

The inversion is deterministic and a stopped label's optimisation is the
same as a full one's up to the stop, so a patience P (stop a label once its
smallest mask has not shrunk by 1 % for P windows after first reaching the
goal; tried, not in the converter) is simulated exactly: its mask sizes, the
anomaly index, the verdict, the target named and the steps spent.

Usage: python3 lab/zoo/early_stop.py target/inversion-trace/dev [--consensus docs/zoo-results/scan/dev]
           [--patience 0,3,5,8,10,15] [--threshold 2.14] [--label-threshold 3.4]
Standard library only.
"""

import argparse
import glob
import json
import math
import os
import re
from collections import defaultdict

from inversion_tables import anomaly, auroc

GAIN = 0.01  # converter/src/inversion.rs EARLY_STOP_GAIN
LINE = re.compile(r"inversion trace: label (\d+) step (\d+) share \S+ mask \S+ best (\S+)")


def read_trace(path):
    """{label: [(step, best), ...]} in step order."""
    windows = defaultdict(list)
    with open(path) as f:
        for line in f:
            m = LINE.search(line)
            if m:
                windows[int(m.group(1))].append((int(m.group(2)), float(m.group(3))))
    return windows


def stop(windows, patience, budget=None):
    """(smallest mask, steps) of one label under patience P (0: no stopping)
    and a step budget (a multiple of ten, at most the traced one), as invert_one runs it."""
    best, stale = math.inf, 0
    for step, b in windows:
        if budget is not None and step > budget:
            return best, budget
        before = best
        best = b
        if math.isfinite(best):
            stale = 0 if not math.isfinite(before) or best < before * (1 - GAIN) else stale + 1
        if patience > 0 and stale >= patience:
            return best, step
    return best, windows[-1][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces")
    ap.add_argument("--consensus", help="plain scans of the same models (the runs' target below the label threshold)")
    ap.add_argument("--patience", default="0,3,5,8,10,15")
    ap.add_argument("--steps", default="300", help="step budgets to simulate (multiples of ten, ≤ the traced budget)")
    ap.add_argument("--threshold", type=float, default=2.14)
    ap.add_argument("--label-threshold", type=float, default=3.4)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    models = []
    for path in sorted(glob.glob(os.path.join(args.traces, "*.trace"))):
        with open(path[:-len(".trace")] + ".json") as f:
            r = json.load(f)
        consensus = None
        if args.consensus:
            plain = os.path.join(args.consensus, os.path.basename(path)[:-len(".trace")] + ".json")
            if os.path.exists(plain):
                with open(plain) as f:
                    consensus = json.load(f)["scan"]["consensus"]
        models.append((r, read_trace(path), consensus))
    for p, budget in ((int(v), int(n)) for v in args.patience.split(",") for n in args.steps.split(",")):
        rows = []
        for r, windows, consensus in models:
            found = [stop(windows[k], p, budget) for k in sorted(windows)]
            norms = [b if math.isfinite(b) else 1.0 for b, _ in found]
            label, score = anomaly(norms, "log")
            named = label if consensus is None or score >= args.label_threshold else consensus
            rows.append(dict(model=r["model"], attack=r["attack"], true=r["true_target"], score=score,
                             named=named if score >= args.threshold else None,
                             steps=sum(s for _, s in found), budget=r["scan"]["inversion"]["steps"] * len(found),
                             seconds=r["scan"]["inversion"]["seconds"]))
        clean = [x["score"] for x in rows if x["attack"] is None]
        one = [x for x in rows if x["attack"] is not None and x["true"] is not None]
        every = [x["score"] for x in rows if x["attack"] is not None]
        frac = sum(x["steps"] for x in rows) / sum(x["budget"] for x in rows)
        est = sum(x["seconds"] * x["steps"] / x["budget"] for x in rows)
        print(f"patience {p:2d}, {budget} steps: AUROC {auroc([x['score'] for x in one], clean):.3f}; clean flagged "
              f"{sum(s >= args.threshold for s in clean)}/{len(clean)}; backdoored flagged "
              f"{sum(s >= args.threshold for s in every)}/{len(every)}; target right "
              f"{sum(x['named'] == x['true'] for x in one)}/{len(one)}; steps {100 * frac:.0f}% of the budget "
              f"(inversion time ≈ {est:.0f} s of {sum(x['seconds'] for x in rows):.0f} s)")
        if args.verbose:
            for x in rows:
                print(f"    {x['model']:24s} anomaly {x['score']:5.2f} named {x['named']} (true {x['true']}) "
                      f"steps {x['steps']}/{x['budget']}")


if __name__ == "__main__":
    main()
