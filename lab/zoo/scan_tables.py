#!/usr/bin/env python3
"""Scores cached zoo scans (scan_zoo.py's JSON files) offline: any verdict
rule, any number of runs (the first k of each scan), any threshold, in
seconds, without unlearning anything again.

  --choose    on the given (development) results: for each rule and run count,
              the verdict AUROC over exports (backdoored all-to-one and
              all-to-all vs clean), the target found, and the threshold that
              calls no clean export backdoored (midway between the highest
              clean score and the lowest backdoored score above it)
  --report    per model and export at one rule, run count and threshold:
              verdict, score, target found vs true, steps, time (markdown)

Usage: python3 lab/zoo/scan_tables.py --choose docs/zoo-results/scan/dev
       python3 lab/zoo/scan_tables.py --report docs/zoo-results/scan/test --rule share --runs 4 --threshold 0.5
"""

import argparse
import glob
import json
import os
import statistics


def load(dirs):
    rows = []
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(d, "*.json"))):
            with open(p) as f:
                rows.append(json.load(f))
    return rows


def runs_of(row, k):
    runs = [r for r in row["scan"]["runs"] if r["outcome"] != "diverged"]
    return runs[:k]


READ = None  # multiple of the collapse step to read runs at; None: as the scan read them


def histogram(run):
    if READ is None or not run.get("snapshots"):
        return run["histogram"]
    first = run["snapshots"][0]["step"]
    want = READ * first
    snap = [s for s in run["snapshots"] if s["step"] <= want + 1e-9][-1]
    return [sum(row[k] for row in snap["confusion"]) for k in range(len(snap["confusion"]))]


def fractions(run):
    h = histogram(run)
    total = max(1, sum(h))
    return [c / total for c in h]


def mean_histogram(runs, exposed_only=False):
    use = [r for r in runs if r["outcome"] == "exposed"] if exposed_only else runs
    if not use:
        return None
    k = len(histogram(use[0]))
    h = [0.0] * k
    for r in use:
        for i, v in enumerate(fractions(r)):
            h[i] += v / len(use)
    return h


def argmax(v):
    return max(range(len(v)), key=lambda i: (v[i], -i))


def score(row, rule, k):
    """(score, consensus label) of one scan under `rule` with its first k runs."""
    runs = runs_of(row, k)
    if not runs or not any(r["outcome"] == "exposed" for r in runs):
        return 0.0, None
    h = mean_histogram(runs, exposed_only=rule.endswith("-exposed"))
    c = argmax(h)
    agree = sum(1 for r in runs if argmax(fractions(r)) == c) / len(runs)
    base = rule.removesuffix("-exposed")
    if base == "share":
        return h[c], c
    if base == "agreement":
        return agree + 1e-3 * h[c], c
    if base == "share-x-agreement":
        return h[c] * agree, c
    if base == "min-share":
        return min(fractions(r)[c] for r in runs), c
    if base == "median-share":
        return statistics.median(fractions(r)[c] for r in runs), c
    if base == "variance":  # EBYD's statistic on the mean histogram
        return statistics.pvariance(h), c
    raise ValueError(rule)


RULES = ["share", "share-exposed", "agreement", "share-x-agreement", "min-share", "median-share", "variance"]


def is_backdoored(row):
    return row["attack"] is not None


def auroc(pos, neg):
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def choose_threshold(pos, neg):
    top_clean = max(neg)
    above = [p for p in pos if p > top_clean]
    return (top_clean + min(above)) / 2 if above else top_clean + 1e-6


def choose(rows, max_runs):
    print(f"Read at {READ or 'the scan reading'}× the collapse step.\n")
    print("| rule | runs | AUROC | target right (all-to-one) | threshold | backdoored called | clean called |")
    print("|---|---|---|---|---|---|---|")
    ks = sorted({min(max_runs, len(r["scan"]["runs"])) for r in rows})
    for rule in RULES:
        for k in range(2, max(ks) + 1):
            scored = [(row, *score(row, rule, k)) for row in rows]
            pos = [s for row, s, _ in scored if is_backdoored(row)]
            neg = [s for row, s, _ in scored if not is_backdoored(row)]
            one = [(row, c) for row, _, c in scored if row["attack_mode"] == "all-to-one"]
            right = sum(1 for row, c in one if c == row["true_target"])
            t = choose_threshold(pos, neg) if neg and pos else float("nan")
            called = sum(1 for s in pos if s >= t)
            fp = sum(1 for s in neg if s >= t)
            print(f"| {rule} | {k} | {auroc(pos, neg):.3f} | {right}/{len(one)} | {t:.3f} | {called}/{len(pos)} | {fp}/{len(neg)} |")


def report(rows, rule, k, threshold):
    print(f"Rule `{rule}`, first {k} runs, threshold {threshold}.\n")
    print("| model | export | attack | true target | verdict | score | target found | exposed runs | median steps | stop acc. | scan s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pos, neg = [], []
    one = right = 0
    for row in rows:
        s, c = score(row, rule, k)
        runs = runs_of(row, k)
        backdoored = s >= threshold and c is not None
        (pos if is_backdoored(row) else neg).append(s)
        mode = row["attack_mode"]
        truth = row["true_target"] if mode == "all-to-one" else ("y+1" if mode == "all-to-all" else "—")
        if mode == "all-to-one":
            one += 1
            right += c == row["true_target"]
        found = c if backdoored else f"({c})"
        steps = statistics.median(r["steps"] for r in runs)
        acc = statistics.median(r["stop_accuracy"] for r in runs)
        exposed = sum(r["outcome"] == "exposed" for r in runs)
        attack = f"{row['attack']}" + (" (all-to-all)" if mode == "all-to-all" else "") if row["attack"] else "clean"
        print(f"| {row['model']} | {row['export']} | {attack} | {truth} | {'backdoored' if backdoored else 'clean'} "
              f"| {s:.3f} | {found} | {exposed}/{len(runs)} | {steps:.0f} | {acc:.2f} | {row['scan']['seconds']:.0f} |")
    called = sum(1 for s in pos if s >= threshold)
    fp = sum(1 for s in neg if s >= threshold)
    secs = [row["scan"]["seconds"] for row in rows]
    print(f"\nVerdict AUROC over exports {auroc(pos, neg):.3f}; backdoored called {called}/{len(pos)}, "
          f"clean called backdoored {fp}/{len(neg)}; all-to-one target right {right}/{one}; "
          f"scan time median {statistics.median(secs):.0f} s (max {max(secs):.0f} s) with {rows[0]['scan']['runs'].__len__()} runs, 1 thread")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--choose", nargs="*")
    ap.add_argument("--report", nargs="*")
    ap.add_argument("--rule", default="share", choices=RULES)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--max-runs", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--read", type=float, help="read runs at this multiple of the collapse step (a snapshot)")
    a = ap.parse_args()
    global READ
    READ = a.read
    if a.choose:
        choose(load(a.choose), a.max_runs)
    if a.report:
        report(load(a.report), a.rule, a.runs, a.threshold)


if __name__ == "__main__":
    main()
