#!/usr/bin/env python3
"""Converts every zoo model with the real command-line tools and scores the
guard on the zoo's evaluation slice, as a user would.

For each model of the chosen part and each export (folded, bn, dynamo):
  badexpert-convert bundle --model <export> --reserve <zoo reserve>   (no tuning flag)
  badexpert-guard eval --bundle ... --clean <zoo clean slice> --triggered <model's triggered slice>
with the default (automatic) rates, and optionally with the paper's fixed
rates (--expert-lr 1e-4 --aux-lr 0.1) beside them. Writes results.json and
results.md (one table per part) under --out.

Every zoo model shares one reserve, so with one --seed every conversion
calibrates τ on the same held-out frames: the realised FPRs of all models are
one draw of that split, not independent ones. Each row therefore also gives
`fpr_expected`, the mean realised FPR over random calibration draws of the
same size from the calibration and evaluation frames pooled (the bundle keeps
its calibration frames, --store-clean), and `split_percentile`, where this
split's realised FPR falls among those draws.

Standard library only; needs the release binaries
(cargo build --release --workspace --bins) and, for the converter, the
libtorch that scripts/env.sh sets up.

Usage: python3 lab/zoo/evaluate.py --part dev --out target/zoo-dev [--rates both]
"""

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The paper's recipe: B at 1e-4; M′ at 0.1 for 10 epochs, ×0.1 after epochs 2, 4, 6, 8.
PAPER_AUXILIARY = ["--aux-epochs", "10", "--aux-schedule", "step:2,4,6,8"]
PAPER_RATES = ["--expert-lr", "1e-4", "--aux-lr", "0.1"] + PAPER_AUXILIARY
# The acceptance bar of issue 13.
BAR = dict(auroc=0.995, asr_defended=0.01, ca_drop=0.015, fpr=0.023)
# More than any calibration part: the bundle stores all of it.
STORE_ALL = 100000
CALIBRATION_DRAWS = 4000


def idx_labels(path):
    with gzip.open(path) as f:
        return list(f.read()[8:])


def correct_scores(binaries, bundle, images, labels):
    """Guard scores of the frames M classifies correctly (calibration's population)."""
    p = subprocess.run([os.path.join(binaries, "badexpert-guard"), "run", "--bundle", bundle, images],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    return [r["score"] for r, y in zip(rows, labels) if r.get("class") == y and "score" in r]


def threshold_at_fpr(scores, fpr):
    """runtime/src/threshold.rs threshold_at_fpr: the j-th smallest, j = floor(fpr (n + 1))."""
    j = int(fpr * (len(scores) + 1) + 1e-9)
    return sorted(scores)[j - 1]


def rejected(scores, tau):
    return sum(s < tau for s in scores) / len(scores)


def split_spread(binaries, bundle, clean_images, clean_labels, target_fpr):
    """(realised FPR on the evaluation slice, mean over random calibration draws, this split's percentile)."""
    cal = correct_scores(binaries, bundle, os.path.join(bundle, "clean-images-idx3-ubyte.gz"),
                         idx_labels(os.path.join(bundle, "clean-labels-idx1-ubyte.gz")))
    ev = correct_scores(binaries, bundle, clean_images, idx_labels(clean_labels))
    actual = rejected(ev, threshold_at_fpr(cal, target_fpr))
    pool, rng, draws = cal + ev, random.Random(0), []
    for _ in range(CALIBRATION_DRAWS):
        rng.shuffle(pool)
        draws.append(rejected(pool[len(cal):], threshold_at_fpr(pool[:len(cal)], target_fpr)))
    return actual, sum(draws) / len(draws), sum(d < actual for d in draws) / len(draws)


def run(cmd, log):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n" + p.stdout)
    return p.returncode, p.stdout, time.time() - t0


def convert_and_eval(zoo_dir, model, export, rates, out, binaries, threads, env_note, seed=0, convert_args=()):
    variant = "+".join(a.lstrip("-") for a in convert_args)
    name = f"{model['name']}.{export}.{rates}" + (f".seed{seed}" if seed else "") + (f".{variant}" if variant else "")
    work = os.path.join(out, name)
    os.makedirs(work, exist_ok=True)
    bundle = os.path.join(work, "bundle")
    onnx = os.path.join(zoo_dir, model["files"][export])
    cmd = [os.path.join(binaries, "badexpert-convert"), "--quiet", "--threads", str(threads), "bundle",
           "--model", onnx, "--reserve", os.path.join(zoo_dir, "reserve-images-idx3-ubyte.gz"),
           "--out", bundle, "--overwrite", "--seed", str(seed), "--store-clean", str(STORE_ALL)] \
        + (PAPER_RATES if rates == "paper" else []) + list(convert_args)
    rc, text, seconds = run(cmd, os.path.join(work, "convert.log"))
    row = dict(model=model["name"], part=model["part"], architecture=model["architecture"], attack=model["attack"],
               export=export, rates=rates + (f" {variant}" if variant else ""), seed=seed, convert_seconds=round(seconds, 1), env=env_note)
    if rc != 0:
        row["error"] = text.strip().splitlines()[-1] if text.strip() else f"exit {rc}"
        return row
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    ft = manifest["fine_tune"]
    row.update(expert_lr=ft["expert"]["learning_rate"], aux_lr=ft["auxiliary"]["learning_rate"],
               expert_holdout=ft["expert"]["holdout_accuracy"], aux_holdout=ft["auxiliary"]["holdout_accuracy"],
               restored_norms=ft.get("restored_norms", 0), tau=manifest["decision"]["threshold"],
               calibration_fpr=manifest["decision"]["calibration_fpr"],
               expert_search=ft["expert"]["rate_search"], aux_search=ft["auxiliary"]["rate_search"])
    clean = os.path.join(zoo_dir, "eval-clean-images-idx3-ubyte.gz")
    # A clean model has no trigger: its clean slice stands in, only CA and FPR are read.
    triggered = os.path.join(zoo_dir, model["files_triggered"]["images"]) if model["attack"] else clean
    target = model["target"] if model["attack"] else 0
    report = os.path.join(work, "eval.json")
    cmd = [os.path.join(binaries, "badexpert-guard"), "eval", "--bundle", bundle, "--clean", clean,
           "--triggered", triggered, "--target", str(target), "--json", report]
    rc, text, _ = run(cmd, os.path.join(work, "eval.log"))
    if rc != 0:
        row["error"] = "eval: " + (text.strip().splitlines()[-1] if text.strip() else f"exit {rc}")
        return row
    e = json.load(open(report))
    row.update(ca=e["clean_accuracy"], ca_defended=e["clean_accuracy_defended"],
               ca_drop=e["clean_accuracy"] - e["clean_accuracy_defended"], fpr=e["clean_fpr"])
    actual, expected, percentile = split_spread(binaries, bundle, clean, os.path.join(zoo_dir, "eval-clean-labels-idx1-ubyte.gz"),
                                                manifest["decision"]["target_fpr"])
    if abs(actual - e["clean_fpr"]) > 1e-9:
        row["error"] = f"run and eval disagree on the realised FPR ({actual} vs {e['clean_fpr']})"
        return row
    row.update(fpr_expected=expected, split_percentile=percentile,
               selection_size=ft.get("selection_size", 0), calibration_size=ft["holdout_size"])
    if model["attack"]:
        row.update(asr=e["attack_success_rate"], asr_defended=e["attack_success_rate_defended"], auroc=e["auroc"])
    return row


def is_all_to_all(m):
    """A zoo model poisoned all-to-all (target null): the guard's eval needs one target."""
    return m.get("attack") is not None and (m.get("attack_mode") == "all-to-all" or m.get("target") is None)


def is_vit(r):
    return "vit" in r["architecture"]


def meets_bar(r):
    """Issue 13's bar for a CNN (a clean model: CA drop and FPR only). A
    backdoored ViT is compared with the plain-PyTorch reference instead."""
    if "error" in r:
        return False
    # Rates of whole frames: a drop of exactly 1.5 pt meets the bar, whatever the rounding.
    def at_most(v, bound):
        return v <= bound + 1e-9

    ok = at_most(r["ca_drop"], BAR["ca_drop"]) and at_most(r["fpr"], BAR["fpr"])
    if r["attack"]:
        ok = ok and r["auroc"] >= BAR["auroc"] and at_most(r["asr_defended"], BAR["asr_defended"])
    return ok


def verdict(r):
    if r["attack"] and is_vit(r):
        return "ViT: vs reference"
    return "yes" if meets_bar(r) else "**miss**"


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}"


def markdown(rows):
    lines = []
    for part in ("dev", "test"):
        sel = [r for r in rows if r["part"] == part]
        if not sel:
            continue
        lines += [f"### {part} part", "",
                  "| model | export | rates | B lr | M′ lr | BN restored | CA | CA drop | FPR | FPR over draws | ASR | ASR guard | AUROC | bar | s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['export']} | {r['rates']} | | | | | | | | | | | **error**: {r['error']} | {r['convert_seconds']} |")
                continue
            auroc = f"{r['auroc']:.4f}" if r.get("auroc") is not None else "—"
            lines.append(
                f"| {r['model']} | {r['export']} | {r['rates']}{' s' + str(r['seed']) if r.get('seed') else ''} | {r['expert_lr']:.0e} | {r['aux_lr']:g} | {r['restored_norms']} "
                f"| {pct(r['ca'])} | {pct(r['ca_drop'])} | {pct(r['fpr'])} | {pct(r.get('fpr_expected'))} | {pct(r.get('asr'))} | {pct(r.get('asr_defended'))} "
                f"| {auroc} | {verdict(r)} | {r['convert_seconds']} |")
        ok = [r for r in sel if "error" not in r]
        if ok:
            for rates in sorted({r["rates"] for r in ok}):
                rr = [r for r in ok if r["rates"] == rates]
                judged = [r for r in sel if r["rates"] == rates and not (r["attack"] and is_vit(r))]
                lines.append("")
                lines.append(
                    f"{part}, {rates} rates: {sum(meets_bar(r) for r in judged)}/{len(judged)} CNN and clean exports meet the bar; "
                    f"mean CA drop {pct(sum(r['ca_drop'] for r in rr) / len(rr))} pt, "
                    f"mean FPR {pct(sum(r['fpr'] for r in rr) / len(rr))} % "
                    f"(over calibration draws {pct(sum(r['fpr_expected'] for r in rr) / len(rr))} %)")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=os.path.join(ROOT, "models/zoo"))
    ap.add_argument("--part", choices=["dev", "test", "all"], default="dev")
    ap.add_argument("--rates", choices=["default", "paper", "both"], default="default")
    ap.add_argument("--exports", default="folded,bn,dynamo")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", default="0",
                    help="comma-separated --seed values (reserve split, shuffles, augmentation): each is one conversion")
    ap.add_argument("--convert-args", default="",
                    help="further badexpert-convert bundle options, space-separated (e.g. '--selection 0.1'); named in the rows")
    args = ap.parse_args()
    zoo = json.load(open(os.path.join(args.zoo, "zoo.json")))
    models = [m for m in zoo["models"] if args.part in ("all", m["part"])]
    if args.only:
        keep = set(args.only.split(","))
        models = [m for m in models if m["name"] in keep]
    # `badexpert-guard eval --target` takes one target class: an all-to-all model has none
    for m in [m for m in models if is_all_to_all(m)]:
        print(f"note: {m['name']} skipped (all-to-all backdoor, no single target for the guard's eval)", flush=True)
    models = [m for m in models if not is_all_to_all(m)]
    rates = ["default", "paper"] if args.rates == "both" else [args.rates]
    env_note = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY",) if k in os.environ}
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for m in models:
        for export in args.exports.split(","):
            for r, seed in [(r, int(s)) for r in rates for s in args.seeds.split(",")]:
                row = convert_and_eval(args.zoo, m, export, r, args.out, args.bin, args.threads, env_note, seed,
                                       args.convert_args.split())
                rows.append(row)
                brief = row.get("error") or (f"AUROC {row.get('auroc')} ASR-guard {row.get('asr_defended')} "
                                             f"CA-drop {row['ca_drop']:.4f} FPR {row['fpr']:.4f} "
                                             f"(draws {row['fpr_expected']:.4f}, split at p{100 * row['split_percentile']:.0f}) "
                                             f"B {row['expert_lr']:g} M′ {row['aux_lr']:g}")
                print(f"{m['name']:>20} {export:>6} {r:>7} seed {seed}: {brief} ({row['convert_seconds']} s)", flush=True)
                with open(os.path.join(args.out, "results.json"), "w") as f:
                    json.dump(rows, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(rows))
    print(markdown(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
