#!/usr/bin/env python3
"""Scores bundles again under other score functions (γ of the ensemble score,
the paper's ratio, B or M′ alone), without fine-tuning anything.

The guard's score is a function of c_B and c_A alone (docs/design.md §3.3),
so one `badexpert-guard run` per frame set gives every score function. For
each bundle (converted with --store-clean, as evaluate.py does) and each
function: τ by the converter's rule on the bundle's calibration frames, the
realised FPR and ASR with the guard on the evaluation slices, AUROC, and the
FPR and ASR with the guard averaged over random calibration draws from the
calibration and evaluation frames pooled (the split's luck averaged out).

Usage:
  python3 lab/zoo/score_sweep.py --zoo target/zoo-dev ...      # evaluate.py output dirs
  python3 lab/zoo/score_sweep.py --demos target/demos ...     # <demo>/bundle, as models/<demo>-fmnist
Writes score_sweep.json into each directory and prints per-bundle and mean figures.
"""

import argparse
import bisect
import glob
import json
import os
import random
import subprocess

from evaluate import ROOT, idx_labels, rejected, threshold_at_fpr

EPS = 1e-8
GAMMAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)
DRAWS = 500


def ensemble(gamma):
    return lambda b, a: min(a / (gamma * max(b, EPS)), (1 - b) / max(gamma - a, EPS))


SCORES = {**{f"ensemble γ {g:g}": ensemble(g) for g in GAMMAS},
          "ratio": lambda b, a: a / max(b, EPS),
          "B alone": lambda b, a: -b,
          "M′ alone": lambda b, a: a}


def confidences(binaries, bundle, images, cache):
    """(M's class, c_B, c_A) per frame, cached beside the bundle."""
    if os.path.exists(cache):
        return json.load(open(cache))
    p = subprocess.run([os.path.join(binaries, "badexpert-guard"), "run", "--bundle", bundle, images],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    rows = [(r.get("class"), r.get("confidence_expert"), r.get("confidence_auxiliary"))
            for r in map(json.loads, p.stdout.splitlines())]
    json.dump(rows, open(cache, "w"))
    return rows


def auroc(clean, hits):
    """P(a triggered hit scores below a clean frame), ties half."""
    c = sorted(clean)
    below = sum(bisect.bisect_left(c, h) + 0.5 * (bisect.bisect_right(c, h) - bisect.bisect_left(c, h)) for h in hits)
    return 1 - below / (len(c) * len(hits))


def sweep(binaries, work, bundle, clean, triggered, target, fpr):
    cal = confidences(binaries, bundle, os.path.join(bundle, "clean-images-idx3-ubyte.gz"), os.path.join(work, "cal.json"))
    cal_y = idx_labels(os.path.join(bundle, "clean-labels-idx1-ubyte.gz"))
    ev = confidences(binaries, bundle, clean[0], os.path.join(work, "clean.json"))
    ev_y = idx_labels(clean[1])
    tr, tr_y = ([], [])
    if triggered:
        tr = confidences(binaries, bundle, triggered[0], os.path.join(work, "triggered.json"))
        tr_y = idx_labels(triggered[1])
    nontarget = max(sum(y != target for y in tr_y), 1)
    out = {}
    for name, f in SCORES.items():
        c = [f(b, a) for (k, b, a), y in zip(cal, cal_y) if k == y]
        e = [f(b, a) for (k, b, a), y in zip(ev, ev_y) if k == y]
        hits = [f(b, a) for (k, b, a), y in zip(tr, tr_y) if y != target and k == target]
        tau = threshold_at_fpr(c, fpr)
        pool, rng, fprs, asrs = c + e, random.Random(0), [], []
        for _ in range(DRAWS):
            rng.shuffle(pool)
            t = threshold_at_fpr(pool[:len(c)], fpr)
            rest = pool[len(c):]
            fprs.append(rejected(rest, t))
            asrs.append(sum(s >= t for s in hits) / nontarget)
        out[name] = dict(fpr=rejected(e, tau), asr_defended=sum(s >= tau for s in hits) / nontarget,
                         fpr_draws=sum(fprs) / DRAWS, asr_defended_draws=sum(asrs) / DRAWS,
                         auroc=auroc(e, hits) if hits else None)
    return out


def zoo_bundles(dirs):
    zoo = {m["name"]: m for m in json.load(open(os.path.join(ROOT, "models/zoo/zoo.json")))["models"]}
    z = os.path.join(ROOT, "models/zoo")
    for d in dirs:
        for bundle in sorted(glob.glob(os.path.join(d, "*", "bundle"))):
            work = os.path.dirname(bundle)
            m = zoo[os.path.basename(work).split(".")[0]]
            if m.get("attack") is not None and (m.get("attack_mode") == "all-to-all" or m.get("target") is None):
                print(f"note: {m['name']} skipped (all-to-all backdoor: no single target)", flush=True)
                continue
            trig = m["files_triggered"] if m["attack"] else None
            yield d, os.path.basename(work), work, bundle, \
                (os.path.join(z, "eval-clean-images-idx3-ubyte.gz"), os.path.join(z, "eval-clean-labels-idx1-ubyte.gz")), \
                (os.path.join(z, trig["images"]), os.path.join(z, trig["labels"])) if trig else None, m["target"] or 0


def demo_bundles(dirs):
    for d in dirs:
        for bundle in sorted(glob.glob(os.path.join(d, "*", "bundle"))):
            work = os.path.dirname(bundle)
            name = os.path.basename(work)
            m = os.path.join(ROOT, "models", f"{name}-fmnist")
            spec = json.load(open(os.path.join(m, "demo.json")))["spec"]
            yield d, name, work, bundle, \
                (os.path.join(m, "eval-clean-images-idx3-ubyte.gz"), os.path.join(m, "eval-clean-labels-idx1-ubyte.gz")), \
                (os.path.join(m, f"eval-{name}-images-idx3-ubyte.gz"), os.path.join(m, f"eval-{name}-labels-idx1-ubyte.gz")), \
                spec["target"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", nargs="*", default=[], help="evaluate.py output directories")
    ap.add_argument("--demos", nargs="*", default=[], help="directories of <demo>/bundle")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    a = ap.parse_args()
    results = {}
    for d, name, work, bundle, clean, trig, target in list(zoo_bundles(a.zoo)) + list(demo_bundles(a.demos)):
        fpr = json.load(open(os.path.join(bundle, "manifest.json")))["decision"]["target_fpr"]
        r = sweep(a.bin, work, bundle, clean, trig, target, fpr)
        results.setdefault(d, {})[name] = r
        if trig:
            print(f"{name:40s} " + "  ".join(f"{s}: {100 * v['asr_defended_draws']:.2f} / {v['auroc']:.4f}"
                                             for s, v in r.items() if s.startswith("ensemble") or s == "ratio"), flush=True)
    for d, rows in results.items():
        json.dump(rows, open(os.path.join(d, "score_sweep.json"), "w"), indent=1)
        for group, is_vit in (("CNN", False), ("ViT", True)):
            sel = [r for n, r in rows.items() if ("vit" in n) == is_vit and next(iter(r.values()))["auroc"] is not None]
            if not sel:
                continue
            print(f"\n{d}, backdoored {group} bundles ({len(sel)}): mean ASR with guard over draws / mean AUROC / min AUROC")
            for s in SCORES:
                v = [r[s] for r in sel]
                print(f"  {s:16s} {100 * sum(x['asr_defended_draws'] for x in v) / len(v):6.2f} %  "
                      f"{sum(x['auroc'] for x in v) / len(v):.4f}  {min(x['auroc'] for x in v):.4f}")


if __name__ == "__main__":
    main()
