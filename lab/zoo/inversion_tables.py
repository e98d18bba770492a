#!/usr/bin/env python3
"""Scores cached trigger inversions (scan_zoo.py's JSON files from scans run
with --scan-inversion-steps) offline: the anomaly index of the smallest
mask (recomputed from the per-label mask sizes, in log or linear space),
the verdict at a threshold, the verdict's AUROC over models (backdoored vs
clean), and the target named by the smallest mask and by the unlearning
runs' consensus of the matching plain scan (docs/zoo-results/scan/<part>).

Usage: python3 lab/zoo/inversion_tables.py docs/zoo-results/inversion/dev [--threshold 2.14]
           [--space log|linear] [--consensus docs/zoo-results/scan/dev] [--named-json named.json]
Standard library only.
"""

import argparse
import glob
import json
import math
import os
import statistics


def anomaly(norms, space):
    values = [math.log(max(v, 1e-4)) for v in norms] if space == "log" else list(norms)
    label = min(range(len(values)), key=lambda k: values[k])
    mid = statistics.median(values)
    mad = statistics.median(abs(v - mid) for v in values)
    return label, (mid - values[label]) / max(1.4826 * mad, 1e-12)


def auroc(positives, negatives):
    if not positives or not negatives:
        return float("nan")
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--threshold", type=float, default=2.14)
    ap.add_argument("--label-threshold", type=float, default=3.4,
                    help="name the smallest mask's label above this anomaly, the runs' consensus below")
    ap.add_argument("--space", choices=["log", "linear"], default="log")
    ap.add_argument("--consensus", help="directory of plain scans of the same models (for the runs' target)")
    ap.add_argument("--named-json", help="write {model: target named, or null where the verdict is clean} here "
                                         "(offline_loop.py --targets)")
    args = ap.parse_args()
    rows = []
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        inv = r["scan"]["inversion"]
        label, score = anomaly(inv["mask_norms"], args.space)
        consensus = None
        if args.consensus:
            plain = os.path.join(args.consensus, os.path.basename(path))
            if os.path.exists(plain):
                with open(plain) as f:
                    consensus = json.load(f)["scan"]["consensus"]
        rows.append(dict(model=r["model"], export=r["export"], attack=r["attack"], mode=r["attack_mode"],
                         true=r["true_target"], label=label, score=score, consensus=consensus,
                         mask=inv["mask_norms"][label], seconds=inv["seconds"]))
        rows[-1]["named"] = label if consensus is None or score >= args.label_threshold else consensus
    print(f"| model | export | attack | true target | smallest mask (label, % of frame) | anomaly ({args.space}) | "
          f"verdict at {args.threshold} | runs' consensus | target named | inversion s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = "backdoored" if r["score"] >= args.threshold else "clean"
        true = "—" if r["attack"] is None else ("all-to-all" if r["true"] is None else r["true"])
        mark = lambda k: "" if r["true"] is None else (" ✓" if k == r["true"] else " ✗")
        cons = "" if r["consensus"] is None else f"{r['consensus']}{mark(r['consensus'])}"
        print(f"| {r['model']} | {r['export']} | {r['attack'] or 'clean'} | {true} | {r['label']}{mark(r['label'])}, "
              f"{100 * r['mask']:.2f} | {r['score']:.2f} | {verdict} | {cons} | {r['named']}{mark(r['named'])} | {r['seconds']:.0f} |")
    if args.named_json:
        with open(args.named_json, "w") as f:
            json.dump({r["model"]: r["named"] if r["score"] >= args.threshold else None for r in rows}, f, indent=1)
    clean = [r["score"] for r in rows if r["attack"] is None]
    one = [r for r in rows if r["attack"] is not None and r["true"] is not None]
    every = [r["score"] for r in rows if r["attack"] is not None]
    print()
    print(f"verdict AUROC, all-to-one vs clean: {auroc([r['score'] for r in one], clean):.3f}; "
          f"every backdoored vs clean: {auroc(every, clean):.3f}")
    print(f"at {args.threshold}: clean called backdoored {sum(s >= args.threshold for s in clean)}/{len(clean)}; "
          f"backdoored called backdoored {sum(s >= args.threshold for s in every)}/{len(every)}")
    print(f"target: smallest mask {sum(r['label'] == r['true'] for r in one)}/{len(one)}; runs' consensus "
          f"{sum(r['consensus'] == r['true'] for r in one)}/{len(one)}; named (mask above {args.label_threshold}, "
          f"else consensus) {sum(r['named'] == r['true'] for r in one)}/{len(one)} (all-to-one models)")
    if clean and every:
        hi = max(clean)
        above = [s for s in every if s > hi]
        if above:
            print(f"threshold midway between the highest clean ({hi:.2f}) and the lowest backdoored above it "
                  f"({min(above):.2f}): {(hi + min(above)) / 2:.2f}")


if __name__ == "__main__":
    main()
