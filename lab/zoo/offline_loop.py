#!/usr/bin/env python3
"""Score many guards from one set of fine-tunes (issue 30's offline loop, second half).

Reads the per-frame caches expert_cache.py writes (M's class, c_B, c_A of one
B/M′ pair, on the shared calibration frames, the clean evaluation slice and
the triggered slice) and evaluates, in seconds, guards built from them:

  single           each pair alone (the converter's guard today): its spread
                   over seeds is the noise of one fine-tune
  mean-conf        c_B and c_A averaged over the pairs, then the score
                   (an ensemble of experts at the output; 1 + 2K models/frame)
  mean-score       the pairs' scores averaged
  min-p            conformal p-value of each pair's score against the
                   calibration frames, the smallest kept (Šidák-like)
  fisher           −2 Σ log p over the pairs

Every rule is thresholded the converter's way (τ at the target FPR over the
correctly classified calibration frames; a combined rule's own statistic is
computed on the calibration frames leave-one-out, so it is calibrated like
a single score), then judged on the evaluation slices: realised FPR, worst
per-class FPR, CA drop, ASR with the guard, AUROC.

Usage:
  python3 lab/zoo/offline_loop.py target/expert-cache [--rates paper] [--gamma 0.8] [--json out.json]
"""

import argparse
import bisect
import glob
import json
import math
import os
import sys
from collections import defaultdict

EPS = 1e-8


def ensemble(gamma):
    """The guard's score (runtime/src/score.rs): low = suspicious, reject when < τ."""
    return lambda b, a: min(a / (gamma * max(b, EPS)), (1 - b) / max(gamma - a, EPS))


def threshold_at_fpr(scores, fpr):
    """runtime/src/threshold.rs threshold_at_fpr: the j-th smallest, j = floor(fpr (n + 1))."""
    j = int(fpr * (len(scores) + 1) + 1e-9)
    return sorted(scores)[max(j, 1) - 1]


def auroc(clean, hits):
    """P(a triggered hit scores below a clean frame), ties half."""
    if not hits or not clean:
        return None
    c = sorted(clean)
    below = sum(bisect.bisect_left(c, h) + 0.5 * (bisect.bisect_right(c, h) - bisect.bisect_left(c, h)) for h in hits)
    return 1 - below / (len(c) * len(hits))


def load(cache_dir, rates):
    """{model: [record, ...]} of the finished caches, pairs in seed order."""
    by_model = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(cache_dir, "*", "cache.json"))):
        with open(path) as f:
            r = json.load(f)
        if rates and r["rates"] not in rates:
            continue
        by_model[(r["model"], r["export"], r["rates"])].append(r)
    for recs in by_model.values():
        recs.sort(key=lambda r: r["seed"])
    return by_model


def frames(recs, part):
    """Per frame: (label, M's class, [(c_B, c_A) per pair]); M's class is the same in every pair."""
    first = recs[0]["slices"].get(part)
    if first is None:
        return []
    out = []
    for i, y in enumerate(first["labels"]):
        rows = [r["slices"][part]["rows"][i] for r in recs]
        k = rows[0][0]
        if k is None or any(row[0] != k or row[1] is None for row in rows):
            out.append((y, None, None))  # fail closed: an unscorable frame is rejected
        else:
            out.append((y, k, [(row[1], row[2]) for row in rows]))
    return out


class Rule:
    """A guard built from the pairs' confidences: `stat(pairs)` per frame, low = suspicious."""

    def __init__(self, name, make):
        self.name, self.make = name, make


def p_value(sorted_cal, s):
    """Conformal p-value of score s (low = suspicious) against sorted calibration scores."""
    return (1 + bisect.bisect_right(sorted_cal, s)) / (len(sorted_cal) + 1)


def rules(gamma):
    f = ensemble(gamma)

    def single(i):
        return lambda cal: (lambda pairs: f(*pairs[i]))

    def mean_conf(cal):
        return lambda pairs: f(sum(b for b, _ in pairs) / len(pairs), sum(a for _, a in pairs) / len(pairs))

    def mean_score(cal):
        return lambda pairs: sum(f(b, a) for b, a in pairs) / len(pairs)

    def pvals(cal):
        ref = [sorted(f(*pairs[i]) for pairs in cal) for i in range(len(cal[0]))]
        return lambda pairs: [p_value(ref[i], f(*pairs[i])) for i in range(len(pairs))]

    def min_p(cal):
        pv = pvals(cal)
        return lambda pairs: min(pv(pairs))

    def fisher(cal):
        pv = pvals(cal)
        # Larger −2Σlog p = more suspicious; negate so that low = suspicious.
        return lambda pairs: 2 * sum(math.log(p) for p in pv(pairs))

    return single, [Rule("mean-conf", mean_conf), Rule("mean-score", mean_score), Rule("min-p", min_p),
                    Rule("fisher", fisher)]


def split_thresholds(cal_scored, fpr, named, share):
    """converter/src/calibration.rs split_thresholds: the named target label's
    frames get `share` of the budget (capped so that the other classes keep
    one rank), the other classes the rest, each threshold over its own
    classes' (class, score); None where the target's frames cannot set its
    rate (the converter then keeps one threshold)."""
    on = [s for k, s in cal_scored if k == named]
    off = [s for k, s in cal_scored if k != named]
    if not on or not off:
        return None
    pi = len(on) / len(cal_scored)
    most = 1 - (1 - pi) / (fpr * (len(off) + 1))
    least = pi / (fpr * (len(on) + 1))
    share = min(share, most)
    on_rate = share * fpr / pi
    if share < least or not (share > 0 and on_rate < 1):
        return None
    return threshold_at_fpr(off, (1 - share) * fpr / (1 - pi)), threshold_at_fpr(on, on_rate)


def judge(rule_make, cal, clean, trig, target, fpr, pair_count, named=None, share=0.0):
    """A guard's figures; with a `named` target label and a `share` > 0 its
    frames get a threshold of their own (the converter's target split)."""
    cal_ok = [p for y, k, p in cal if k == y]
    stat = rule_make(cal_ok)
    # Leave-one-out is what makes a p-value rule's calibration statistics exchangeable with new
    # frames; with ~400 frames the difference from in-sample ranks is one rank, so in-sample it is.
    cal_scored = [(k, stat(p)) for y, k, p in cal if k == y]
    split = split_thresholds(cal_scored, fpr, named, share) if named is not None and share > 0 else None
    tau = threshold_at_fpr([s for _, s in cal_scored], fpr) if split is None else split[0]
    tau_of = (lambda k: tau) if split is None else (lambda k: split[1] if k == named else split[0])
    accepted = lambda k, p: k is not None and stat(p) >= tau_of(k)
    ok = [(y, k, p) for y, k, p in clean if k == y]
    clean_scores = [stat(p) for _, _, p in ok]
    per_class = defaultdict(lambda: [0, 0])
    for y, k, p in ok:
        per_class[y][0] += 1
        per_class[y][1] += not accepted(k, p)
    ca = sum(k == y for y, k, _ in clean) / len(clean)
    ca_guard = sum(k == y and accepted(k, p) for y, k, p in clean) / len(clean)
    out = dict(pairs=pair_count, models_per_frame=1 + 2 * pair_count, tau=tau,
               target_tau=None if split is None else split[1], named=named,
               fpr=sum(not accepted(k, p) for _, k, p in ok) / max(len(ok), 1),
               worst_class_fpr=max(r / n for n, r in per_class.values()) if per_class else None,
               ca=ca, ca_drop=ca - ca_guard)
    if trig:
        nontarget = [(y, k, p) for y, k, p in trig if y != target]
        hits = [(k, p) for y, k, p in nontarget if k == target]
        out.update(asr=len(hits) / len(nontarget),
                   asr_defended=sum(accepted(k, p) for k, p in hits) / len(nontarget),
                   auroc=auroc(clean_scores, [stat(p) for _, p in hits]))
    return out


BAR = dict(auroc=0.995, asr_defended=0.01)


def meets(r):
    return r.get("auroc") is not None and r["auroc"] >= BAR["auroc"] and r["asr_defended"] <= BAR["asr_defended"]


def evaluate(cache_dir, rates=None, gamma=0.8, fpr=0.01, named=None, share=0.0):
    """Every pair and rule per model; `named` ({model: label or None}, the
    scan's targets) with `share` > 0 gives the named label its own threshold."""
    single, combined = rules(gamma)
    results = {}
    for (model, export, rate), recs in sorted(load(cache_dir, rates).items()):
        target = recs[0]["target"]
        label = (named or {}).get(model)
        cal, clean, trig = (frames(recs, part) for part in ("calibration", "clean", "triggered"))
        row = {"seeds": [r["seed"] for r in recs]}
        for i, r in enumerate(recs):
            row[f"single s{r['seed']}"] = judge(single(i), cal, clean, trig, target, fpr, 1, label, share)
        if len(recs) > 1:
            for rule in combined:
                row[rule.name] = judge(rule.make, cal, clean, trig, target, fpr, len(recs), label, share)
        results[f"{model}.{export}.{rate}"] = row
    return results


def rate_parts(rates):
    """(B's rate, M′'s rate) of a rate set name: paper is e1e-4_a0.1; an M′
    with the cosine schedule (e…_c<lr>) keeps its letter, c<lr>."""
    if rates == "paper":
        return "1e-4", "0.1"
    e, _, a = rates.partition("_")
    return e[1:], a[1:] if a.startswith("a") else a


def sources(cache_dir, part_filter=None):
    """{model: {"target", "slices": {part: (labels, classes)}, "B": {(rate, seed): {part: [c]}}, "A": {...}}}.

    B and M′ are fine-tuned independently from M, so the B of one conversion
    and the M′ of another (same split, same M) make a valid guard: a grid of
    rates is read from a diagonal of conversions.
    """
    out = {}
    for path in sorted(glob.glob(os.path.join(cache_dir, "*", "cache.json"))):
        with open(path) as f:
            r = json.load(f)
        if r["rates"] == "default":
            continue  # automatic rates differ per conversion: not a grid point
        m = out.setdefault(r["model"], dict(target=r["target"], slices={}, B={}, A={}))
        rb, ra = rate_parts(r["rates"])
        for part, sl in r["slices"].items():
            classes = [row[0] for row in sl["rows"]]
            if part not in m["slices"]:
                m["slices"][part] = (sl["labels"], classes)
            elif m["slices"][part][1] != classes:
                raise ValueError(f"{path}: M's classes differ from another conversion's on {part}")
            m["B"].setdefault((rb, r["seed"]), {})[part] = [row[1] for row in sl["rows"]]
            m["A"].setdefault((ra, r["seed"]), {})[part] = [row[2] for row in sl["rows"]]
    return out


def guard_frames(m, part, bkeys, akeys):
    """(label, class, [(mean c_B, mean c_A)]) per frame for B sources `bkeys` and M′ sources `akeys`."""
    if part not in m["slices"]:
        return []
    labels, classes = m["slices"][part]
    out = []
    for i, (y, k) in enumerate(zip(labels, classes)):
        bs = [m["B"][b][part][i] for b in bkeys]
        as_ = [m["A"][a][part][i] for a in akeys]
        if k is None or any(v is None for v in bs + as_):
            out.append((y, None, None))
        else:
            out.append((y, k, [(sum(bs) / len(bs), sum(as_) / len(as_))]))
    return out


def judge_sources(m, bkeys, akeys, gamma, fpr, named=None, share=0.0):
    """The guard of `m`'s B sources `bkeys` and M′ sources `akeys` (c_B and c_A
    each averaged over them), judged as one pair."""
    single, _ = rules(gamma)
    parts = (guard_frames(m, p, bkeys, akeys) for p in ("calibration", "clean", "triggered"))
    return judge(single(0), *parts, m["target"], fpr, max(len(bkeys), len(akeys)), named, share)


def rate_order(rate):
    """Sort key of a rate as rate_parts names it: the paper's M′ schedule's
    rates first, then the cosine one's (c<lr>), each ascending."""
    return rate.startswith("c"), float(rate.lstrip("c"))


def grid(cache_dir, gamma=0.8, fpr=0.01):
    """Per model and (B rate, M′ rate): every seed's single pair, and the seed-averaged guard."""
    results = {}
    for name, m in sources(cache_dir).items():
        brates = sorted({r for r, _ in m["B"]}, key=rate_order)
        arates = sorted({r for r, _ in m["A"]}, key=rate_order)
        row = {}
        for rb in brates:
            for ra in arates:
                seeds = sorted({s for r, s in m["B"] if r == rb} & {s for r, s in m["A"] if r == ra})
                if not seeds:
                    continue
                judged = lambda bk, ak: judge_sources(m, bk, ak, gamma, fpr)
                cell = {"seeds": seeds, "single": [judged([(rb, s)], [(ra, s)]) for s in seeds]}
                if len(seeds) > 1:
                    cell["averaged"] = judged([(rb, s) for s in seeds], [(ra, s) for s in seeds])
                row[f"B {rb} / M′ {ra}"] = cell
        results[name] = row
    return results


def canary_choice(cache_dir, canary_dir, gamma=0.8, fpr=0.01, named=None, share=0.0):
    """Design a: per model, the (B rate, M′ rate) cell whose guard built from
    the canaried copies (canary_zoo.py, then expert_cache.py --zoo) lets the
    fewest canary-triggered frames through (mean over the canaries; AUROC
    breaks ties), judged on the model itself with every seed the cache has
    for that cell, beside the paper's rates; with `named` targets and a
    `share` the model's own guards split the budget (the canaries' do not)."""
    canaries = defaultdict(dict)
    for name, m in sources(canary_dir).items():
        base, _, attack = name.partition("+")
        canaries[base][attack] = m
    results = {}
    for name, m in sources(cache_dir).items():
        if name not in canaries:
            continue
        judge_canary = lambda c, rb, ra: judge_sources(c, [(rb, 0)], [(ra, 0)], gamma, fpr)
        # A canary the copy did not learn (its trigger sends under half the frames to its target) measures nothing.
        taken = [c for c in canaries[name].values()
                 if ("1e-4", 0) in c["B"] and ("0.1", 0) in c["A"] and judge_canary(c, "1e-4", "0.1")["asr"] >= 0.5]
        cells = {}
        for rb, ra in {(rb, ra) for rb, _ in m["B"] for ra, _ in m["A"]}:
            if taken and all((rb, 0) in c["B"] and (ra, 0) in c["A"] for c in taken):
                cells[(rb, ra)] = [judge_canary(c, rb, ra) for c in taken]
        if not cells:
            continue
        key = lambda cell: (sum(r["asr_defended"] for r in cells[cell]) / len(cells[cell]),
                            -sum(r["auroc"] or 0 for r in cells[cell]) / len(cells[cell]))
        chosen = min(sorted(cells), key=key)
        seeds = lambda rb, ra: {s for r, s in m["B"] if r == rb} & {s for r, s in m["A"] if r == ra}
        # Compared on the seeds both cells have: a pair's seed is most of its noise.
        common = sorted(seeds(*chosen) & seeds("1e-4", "0.1"))
        judged = lambda rb, ra: [judge_sources(m, [(rb, s)], [(ra, s)], gamma, fpr, (named or {}).get(name), share)
                                 for s in common]
        results[name] = dict(chosen=f"B {chosen[0]} / M′ {chosen[1]}", canaries_used=len(taken), seeds=common,
                             canaries={f"B {rb} / M′ {ra}": v for (rb, ra), v in cells.items()},
                             chosen_pairs=judged(*chosen), paper_pairs=judged("1e-4", "0.1"))
    return results


def print_canaries(results):
    mean = lambda rs, f: sum(r[f] or 0 for r in rs) / len(rs)
    print(f"{'model':22s} {'chosen cell':22s} {'canary ASR-g':>12s} | {'chosen: meets':>13s} {'AUROC':>7s} {'ASR-g':>7s} {'FPR':>6s} | "
          f"{'paper: meets':>12s} {'AUROC':>7s} {'ASR-g':>7s} {'FPR':>6s}")
    agg = defaultdict(list)
    for name, r in sorted(results.items()):
        ch, pa = r["chosen_pairs"], r["paper_pairs"]
        can = r["canaries"][r["chosen"]]
        bd = ch and ch[0].get("auroc") is not None
        line = f"{name:22s} {r['chosen']:22s} {100 * mean(can, 'asr_defended'):11.1f}% | "
        if bd:
            line += (f"{sum(map(meets, ch)):>6d}/{len(ch):<6d} {mean(ch, 'auroc'):7.4f} {100 * mean(ch, 'asr_defended'):6.1f}% "
                     f"{100 * mean(ch, 'fpr'):5.2f}% | {sum(map(meets, pa)):>5d}/{len(pa):<6d} {mean(pa, 'auroc'):7.4f} "
                     f"{100 * mean(pa, 'asr_defended'):6.1f}% {100 * mean(pa, 'fpr'):5.2f}%")
            agg["chosen"] += ch
            agg["paper"] += pa
        else:
            line += (f"clean: FPR {100 * mean(ch, 'fpr'):.2f}% CA drop {100 * mean(ch, 'ca_drop'):.2f} pt | "
                     f"paper FPR {100 * mean(pa, 'fpr'):.2f}% CA drop {100 * mean(pa, 'ca_drop'):.2f} pt")
        print(line)
    for k, rs in agg.items():
        print(f"backdoored, {k}: meets {sum(map(meets, rs))}/{len(rs)} pairs, mean AUROC {mean(rs, 'auroc'):.4f}, "
              f"mean ASR-g {100 * mean(rs, 'asr_defended'):.2f}%, mean FPR {100 * mean(rs, 'fpr'):.2f}%")


def print_grid(results):
    cells = sorted({c for row in results.values() for c in row})
    bd = {n: row for n, row in results.items() if any(x.get("auroc") is not None for c in row.values() for x in c["single"])}
    print(f"{len(bd)} backdoored model(s); per (B rate, M′ rate): single pairs (all seeds) and seed-averaged guards")
    print(f"  {'cell':24s} {'single: meets':>14s} {'AUROC':>7s} {'ASR-g':>7s} {'FPR':>6s} | {'avg: meets':>10s} {'AUROC':>7s} {'ASR-g':>7s} {'FPR':>6s} {'worst-cls':>9s}")
    for c in cells:
        singles = [x for row in bd.values() if c in row for x in row[c]["single"]]
        avgs = [row[c]["averaged"] for row in bd.values() if c in row and "averaged" in row[c]]
        line = f"  {c:24s} {sum(map(meets, singles)):>6d}/{len(singles):<7d} {sum(x['auroc'] or 0 for x in singles) / len(singles):7.4f} " \
               f"{100 * sum(x['asr_defended'] for x in singles) / len(singles):6.2f}% {100 * sum(x['fpr'] for x in singles) / len(singles):5.2f}% |"
        if avgs:
            line += f" {sum(map(meets, avgs)):>4d}/{len(avgs):<5d} {sum(x['auroc'] or 0 for x in avgs) / len(avgs):7.4f} " \
                    f"{100 * sum(x['asr_defended'] for x in avgs) / len(avgs):6.2f}% {100 * sum(x['fpr'] for x in avgs) / len(avgs):5.2f}% " \
                    f"{100 * max(x['worst_class_fpr'] for x in avgs):8.1f}%"
        print(line)


def compare(base_dir, other_dir, gamma=0.8, fpr=0.01, base_rates=None):
    """The same conversions (name for name) in two cache directories, e.g. the
    fine-tuned M′ against a user's own (`--auxiliary`): each as a single pair.
    With `base_rates`, each conversion is compared with the base's of that
    rate set (same model, export and seed), e.g. another M′ rate against the paper's."""
    single, _ = rules(gamma)
    out = {}
    for path in sorted(glob.glob(os.path.join(other_dir, "*", "cache.json"))):
        name = os.path.basename(os.path.dirname(path))
        model, export, *_, seed = name.split(".")
        base_name = f"{model}.{export}.{base_rates}.{seed}" if base_rates else name
        base = os.path.join(base_dir, base_name, "cache.json")
        if not os.path.exists(base):
            continue
        row = {}
        for label, p in (("base", base), ("other", path)):
            with open(p) as f:
                r = json.load(f)
            parts = [frames([r], part) for part in ("calibration", "clean", "triggered")]
            row[label] = judge(single(0), *parts, r["target"], fpr, 1)
            row[label]["auxiliary_holdout_accuracy"] = r["auxiliary"]["holdout_accuracy"]
        out[name] = row
    return out


def seed_cross(cache_dir, b_rate, a_rate, gamma=0.8, fpr=0.01):
    """{model: [[ASR with guard of B seed i with M′ seed j for j] for i]} at one
    rate cell: whose seed moves the let-through rate, B's or M′'s."""
    out = {}
    for model, m in sorted(sources(cache_dir).items()):
        bs = sorted(k for k in m["B"] if k[0] == b_rate)
        as_ = sorted(k for k in m["A"] if k[0] == a_rate)
        if "triggered" not in m["slices"] or not bs or not as_:
            continue
        out[model] = [[judge_sources(m, [b], [a], gamma, fpr)["asr_defended"] for a in as_] for b in bs]
    return out


def compare_summary(label, rows):
    """One line of means over a side of a comparison: backdoored and clean models apart."""
    bd = [r for r in rows if r.get("auroc") is not None]
    cl = [r for r in rows if r.get("auroc") is None]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return (f"{label:5s} backdoored {len(bd)}: meets {sum(map(meets, bd))}, mean AUROC {mean([r['auroc'] for r in bd]):.4f}, "
            f"ASR-g {100 * mean([r['asr_defended'] for r in bd]):.1f}%, FPR {100 * mean([r['fpr'] for r in bd]):.2f}%, "
            f"M′ acc {mean([r['auxiliary_holdout_accuracy'] for r in rows]):.3f}; "
            f"clean {len(cl)}: FPR {100 * mean([r['fpr'] for r in cl]):.2f}%, CA drop {100 * mean([r['ca_drop'] for r in cl]):.2f} pt")


def fmt(r):
    if "auroc" in r and r["auroc"] is not None:
        return f"{r['auroc']:.4f} {100 * r['asr_defended']:5.1f}% fpr {100 * r['fpr']:.1f}%"
    return f"clean: fpr {100 * r['fpr']:.1f}% drop {100 * r['ca_drop']:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", help="expert_cache.py --out directory")
    ap.add_argument("--rates", help="comma-separated rate sets to read (default: all)")
    ap.add_argument("--gamma", type=float, default=0.8)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--grid", action="store_true",
                    help="B and M′ rates crossed over conversions (e<lr>_a<lr> and paper rate sets)")
    ap.add_argument("--compare", metavar="DIR", help="the same conversions in another cache directory, side by side")
    ap.add_argument("--base-rates", help="with --compare: the base's rate set to compare each conversion with")
    ap.add_argument("--seed-cross", metavar="B,A",
                    help="ASR with guard of every B seed with every M′ seed at B rate B and M′ rate A (e.g. 1e-4,c0.03)")
    ap.add_argument("--canaries", metavar="DIR",
                    help="expert caches of canaried copies (canary_zoo.py): pick each model's rate cell by its canaries")
    ap.add_argument("--targets", metavar="JSON",
                    help="the scan's named target per model (inversion_tables.py --named-json): that label's "
                         "frames get --target-share of the false-positive budget")
    ap.add_argument("--target-share", type=float, default=0.7)
    a = ap.parse_args()
    if a.seed_cross:
        b_rate, a_rate = a.seed_cross.split(",")
        results = seed_cross(a.cache, b_rate, a_rate, a.gamma, a.fpr)
        for model, rows in results.items():
            print(f"{model:24s} rows: B seeds, columns: M′ seeds  " +
                  " | ".join(" ".join(f"{100 * x:5.1f}" for x in row) for row in rows))
        if a.json:
            json.dump(results, open(a.json, "w"), indent=1)
        return 0
    if a.compare:
        results = compare(a.cache, a.compare, a.gamma, a.fpr, a.base_rates)
        for name, row in results.items():
            for label in ("base", "other"):
                r = row[label]
                print(f"{name:32s} {label:5s} M′ acc {r['auxiliary_holdout_accuracy']:.3f}  {fmt(r)}  "
                      f"worst-class fpr {100 * r['worst_class_fpr']:.1f}%  {'meets' if meets(r) else ''}")
        for label in ("base", "other"):
            print(compare_summary(label, [row[label] for row in results.values()]))
        if a.json:
            json.dump(results, open(a.json, "w"), indent=1)
        return 0
    if a.canaries:
        named = json.load(open(a.targets)) if a.targets else None
        results = canary_choice(a.cache, a.canaries, a.gamma, a.fpr, named, a.target_share if named else 0.0)
        print_canaries(results)
        if a.json:
            json.dump(results, open(a.json, "w"), indent=1)
        return 0
    if a.grid:
        results = grid(a.cache, a.gamma, a.fpr)
        print_grid(results)
        if a.json:
            json.dump({m: {c: v for c, v in row.items()} for m, row in results.items()}, open(a.json, "w"), indent=1)
        return 0
    named = json.load(open(a.targets)) if a.targets else None
    results = evaluate(a.cache, set(a.rates.split(",")) if a.rates else None, a.gamma, a.fpr, named,
                       a.target_share if named else 0.0)
    if not results:
        print(f"no finished caches under {a.cache}", file=sys.stderr)
        return 1
    for name, row in results.items():
        print(name)
        for rule, r in row.items():
            if rule != "seeds":
                print(f"  {rule:12s} {fmt(r)}  worst-class fpr {100 * (r['worst_class_fpr'] or 0):.1f}%  "
                      f"{'meets' if meets(r) else ''}")
    # Summary over the backdoored models: how often each rule meets the bar, and mean figures.
    names = sorted({k for row in results.values() for k in row if k != "seeds" and not k.startswith("single")})
    bd = [row for row in results.values() if any(r.get("auroc") is not None for k, r in row.items() if k != "seeds")]
    print(f"\n{len(bd)} backdoored model(s):")
    singles = [r for row in bd for k, r in row.items() if k.startswith("single")]
    if singles:
        print(f"  {'single (each)':14s} meets {sum(map(meets, singles))}/{len(singles)}  "
              f"mean AUROC {sum(r['auroc'] or 0 for r in singles) / len(singles):.4f}  "
              f"mean ASR-g {100 * sum(r['asr_defended'] for r in singles) / len(singles):.2f}%  "
              f"mean FPR {100 * sum(r['fpr'] for r in singles) / len(singles):.2f}%  "
              f"worst-class FPR max {100 * max(r['worst_class_fpr'] for r in singles):.1f}%  "
              f"mean CA drop {100 * sum(r['ca_drop'] for r in singles) / len(singles):.2f} pt")
    clean = [r for row in results.values() if row not in bd for k, r in row.items() if k.startswith("single")]
    if clean:
        print(f"clean models, single pairs ({len(clean)}): mean FPR {100 * sum(r['fpr'] for r in clean) / len(clean):.2f}% "
              f"(max {100 * max(r['fpr'] for r in clean):.2f}%), mean CA drop {100 * sum(r['ca_drop'] for r in clean) / len(clean):.2f} pt")
    for n in names:
        rs = [row[n] for row in bd if n in row]
        if rs:
            print(f"  {n:14s} meets {sum(map(meets, rs))}/{len(rs)}  mean AUROC {sum(r['auroc'] or 0 for r in rs) / len(rs):.4f}  "
                  f"mean ASR-g {100 * sum(r['asr_defended'] for r in rs) / len(rs):.2f}%  "
                  f"mean FPR {100 * sum(r['fpr'] for r in rs) / len(rs):.2f}%  "
                  f"worst-class FPR max {100 * max(r['worst_class_fpr'] for r in rs):.1f}%")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
