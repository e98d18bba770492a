#!/usr/bin/env python3
"""The table of docs/zoo.md's scan exploration: for each variant directory
under docs/zoo-results/scan-explore (scan_zoo.py output, BN-kept exports of
the development part, 4 runs), the label each model's runs collapse onto
(consensus of the mean histogram at the collapse) and its share.

Usage: python3 lab/zoo/scan_explore.py [docs/zoo-results/scan-explore]
"""

import glob
import json
import os
import sys


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "docs/zoo-results/scan-explore"
    variants = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    cells, truth = {}, {}
    for v in variants:
        for p in glob.glob(os.path.join(root, v, "*.json")):
            row = json.load(open(p))
            runs = row["scan"]["runs"]
            k = len(runs[0]["snapshots"][0]["confusion"])
            mean = [0.0] * k
            for r in runs:
                first = r["snapshots"][0]["confusion"]
                h = [sum(line[c] for line in first) for c in range(k)]
                for c in range(k):
                    mean[c] += h[c] / max(1, sum(h)) / len(runs)
            c = max(range(k), key=lambda i: mean[i])
            cells[(row["model"], v)] = f"{c} ({mean[c]:.2f})"
            truth[row["model"]] = row["true_target"]
    models = sorted(truth, key=lambda m: (truth[m] is None, m))
    print("| model | true target | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for m in models:
        t = "clean" if truth[m] is None else truth[m]
        print(f"| {m} | {t} | " + " | ".join(cells.get((m, v), "—") for v in variants) + " |")


if __name__ == "__main__":
    main()
