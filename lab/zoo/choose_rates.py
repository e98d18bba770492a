#!/usr/bin/env python3
"""Scores candidate rate-selection rules on rate grids (converter/examples/rate_grid.rs).

Each grid file holds, for one model, every (B rate, M′ rate) pair with what a
rule may read (held-out clean accuracies of M, B and M′, B's accuracy on its
wrong labels, M′'s accuracy after epoch 1) and what it may not (AUROC, ASR
with the guard, CA drop on the evaluation slice). A rule maps the readable
columns to one pair; this script prints, per grid, the pair each rule picks
and its outcome, and a summary per rule (models meeting the bar, worst
AUROC, mean ASR with guard). Rules are chosen on the development part.

Usage: python3 lab/zoo/choose_rates.py GRID.json [GRID.json ...]
"""

import json
import os
import sys

BAR_AUROC, BAR_ASR, BAR_CA_DROP = 0.995, 0.01, 0.015


def expert_rule(forgetting, relearn=0.5, start=1e-4):
    """1e-4 unless it did not unlearn (held-out within `forgetting` of M): up; relearned: down."""

    def pick(rows):
        rates = sorted({r["expert_lr"] for r in rows})
        stats = {r["expert_lr"]: r for r in rows}
        m = rows[0]["model_holdout"]
        at = min(range(len(rates)), key=lambda i: abs(rates[i] - start))
        direction = None
        below = None
        while True:
            s = stats[rates[at]]
            if s["expert_relearned"] >= relearn:
                if direction == "up":
                    return below
                if at == 0:
                    return rates[at]
                direction, at = "down", at - 1
            elif s["expert_holdout"] > m - forgetting:
                if direction == "down" or at + 1 == len(rates):
                    return rates[at]
                direction, below, at = "up", rates[at], at + 1
            else:
                return rates[at]

    return pick


def expert_target(limit):
    """The smallest rate whose B falls to ≤ `limit` held-out clean accuracy (the previous default: 0.3)."""

    def pick(rows):
        rates = sorted({r["expert_lr"] for r in rows})
        stats = {r["expert_lr"]: r for r in rows}
        for lr in rates:
            if stats[lr]["expert_holdout"] <= limit:
                return lr
        return rates[-1]

    return pick


old_expert_rule = expert_target(0.3)


def aux_rule(margin, collapse=None):
    """Largest M′ rate whose final held-out accuracy is within `margin` of M's;
    with `collapse`, the search from 0.1 upwards stops at the first rate whose
    epoch-1 accuracy fell to ≤ collapse·M (and recovered)."""

    def pick(rows):
        rates = sorted({r["aux_lr"] for r in rows})
        stats = {r["aux_lr"]: r for r in rows}
        m = rows[0]["model_holdout"]
        ok = [lr for lr in rates if stats[lr]["aux_holdout"] >= m - margin]
        if not ok:
            return max(rates, key=lambda lr: stats[lr]["aux_holdout"])
        if collapse is not None:
            for lr in rates:
                if lr >= 0.1 and lr in ok and stats[lr]["aux_first_epoch"] <= collapse * m:
                    return lr
        return max(ok)

    return pick


def fixed(lr):
    return lambda rows: lr


RULES = {
    "paper 1e-4/0.1": (fixed(1e-4), fixed(0.1)),
    "old B ≤30% / M′ 0.1": (old_expert_rule, fixed(0.1)),
}
for f in (0.02, 0.05, 0.1, 0.3):
    for margin in (0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25):
        RULES[f"B forget {f:g} / M′ margin {margin:g}"] = (expert_rule(f), aux_rule(margin))
    for margin in (0.05, 0.1, 0.15):
        RULES[f"B forget {f:g} / M′ collapse .5 margin {margin:g}"] = (expert_rule(f), aux_rule(margin, 0.5))
for limit in (0.15, 0.2, 0.3, 0.5):
    for margin in (0.05, 0.1, 0.12, 0.15, 0.2):
        RULES[f"B ≤{limit:g} / M′ margin {margin:g}"] = (expert_target(limit), aux_rule(margin))
    RULES[f"B ≤{limit:g} / M′ 0.1"] = (expert_target(limit), fixed(0.1))
for margin in (0.12, 0.15, 0.2):
    RULES[f"B forget 0.02 / M′ margin {margin:g}"] = (expert_rule(0.02), aux_rule(margin))


def main():
    grids = {os.path.basename(p).removesuffix(".json"): json.load(open(p)) for p in sys.argv[1:]}
    summary = {}
    for name, rows in grids.items():
        if not rows:
            continue
        best = max(rows, key=lambda r: (r["auroc"] or 0) - r["asr_defended"])
        print(f"\n{name}: M {rows[0]['model_holdout']:.3f}; best pair B {best['expert_lr']:g} M′ {best['aux_lr']:g}: "
              f"AUROC {best['auroc']:.4f} ASR-g {best['asr_defended']:.4f}")
        for rule, (pick_b, pick_a) in RULES.items():
            b = pick_b(rows)
            a = pick_a(rows)
            r = next((r for r in rows if r["expert_lr"] == b and r["aux_lr"] == a), None)
            if r is None:
                print(f"  {rule:45s} B {b} M′ {a}: not on the grid")
                continue
            meets = (r["auroc"] or 0) >= BAR_AUROC and r["asr_defended"] <= BAR_ASR and r["ca_drop"] <= BAR_CA_DROP
            summary.setdefault(rule, []).append((meets, r["auroc"] or 0, r["asr_defended"], r["ca_drop"]))
            print(f"  {rule:45s} B {b:g} M′ {a:g}: AUROC {r['auroc']:.4f} ASR-g {r['asr_defended']:.4f} "
                  f"CA drop {r['ca_drop']:.4f} {'ok' if meets else 'MISS'}")
    print("\nrule summary (meets bar / worst AUROC / mean ASR-g / mean CA drop):")
    for rule, v in sorted(summary.items(), key=lambda kv: (-sum(m for m, *_ in kv[1]), -min(a for _, a, *_ in kv[1]))):
        n = len(v)
        print(f"  {rule:45s} {sum(m for m, *_ in v)}/{n}  {min(a for _, a, *_ in v):.4f}  "
              f"{sum(x[2] for x in v) / n:.4f}  {sum(x[3] for x in v) / n:.4f}")


if __name__ == "__main__":
    main()
