#!/usr/bin/env python3
"""Fine-tune once, score many times (issue 30's offline loop, first half).

For each zoo model of a part, each rate set and each seed, converts one export
with the real converter and caches, per frame, M's class and the confidences
c_B and c_A of that B/M′ pair in M's class, on the bundle's calibration
frames, the zoo's clean evaluation slice and the model's triggered slice.
Every conversion of a model shares one reserve split (--split-seed 0): the
seeds change only the frame orders and augmentations of the fine-tunes, so
the pairs calibrate on the same held-out frames and can be compared or
combined frame by frame (offline_loop.py).

One directory per conversion under --out, `<model>.<export>.<rates>.s<seed>/`
with `cache.json` written when it is complete; a rerun skips finished ones.
The bundles are kept beside (plans for weight soups); commit summaries only.

Standard library only; needs the release binaries and scripts/env.sh's libtorch.

Usage:
  python3 lab/zoo/expert_cache.py --part dev --out target/expert-cache --seeds 0,1,2 --rates paper,default
"""

import argparse
import json
import os
import subprocess
import sys
import time

from evaluate import PAPER_AUXILIARY, PAPER_RATES, ROOT, STORE_ALL, idx_labels, is_all_to_all

RATES = {"paper": PAPER_RATES, "default": []}
# M′'s schedule by the letter before its rate: a, the paper's (10 epochs, stepwise);
# c, the cosine one over 20 epochs (an option of the converter, not its default).
AUXILIARY_RECIPES = {"a": PAPER_AUXILIARY, "c": ["--aux-epochs", "20", "--aux-schedule", "cosine"]}


def rate_flags(rates):
    """paper, default (the automatic rates), or e<B's lr>_a<M′'s lr> (the paper's
    M′ schedule) or e<B's lr>_c<M′'s lr> (the cosine one), e.g. e3e-4_a0.03."""
    if rates in RATES:
        return RATES[rates]
    expert, _, aux = rates.partition("_")
    if not (expert.startswith("e") and aux[:1] in AUXILIARY_RECIPES):
        raise ValueError(f"rate set {rates!r} is not paper, default, e<lr>_a<lr> or e<lr>_c<lr>")
    return ["--expert-lr", expert[1:], "--aux-lr", aux[1:]] + AUXILIARY_RECIPES[aux[0]]


def confidences(binaries, bundle, images):
    """[[M's class, c_B, c_A], ...] per frame (null where the guard could not score one)."""
    p = subprocess.run([os.path.join(binaries, "badexpert-guard"), "run", "--bundle", bundle, images],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"badexpert-guard run {images}: {p.stderr.strip()[-300:]}")
    return [[r.get("class"), r.get("confidence_expert"), r.get("confidence_auxiliary")]
            for r in map(json.loads, p.stdout.splitlines())]


def build(zoo_dir, model, export, rates, seed, out, binaries, threads, extra):
    name = f"{model['name']}.{export}.{rates}.s{seed}"
    work = os.path.join(out, name)
    cache = os.path.join(work, "cache.json")
    if os.path.exists(cache):
        return name, None
    os.makedirs(work, exist_ok=True)
    bundle = os.path.join(work, "bundle")
    cmd = [os.path.join(binaries, "badexpert-convert"), "--quiet", "--threads", str(threads), "bundle",
           "--model", os.path.join(zoo_dir, model["files"][export]),
           "--reserve", os.path.join(zoo_dir, "reserve-images-idx3-ubyte.gz"),
           "--out", bundle, "--overwrite", "--split-seed", "0", "--seed", str(seed),
           "--store-clean", str(STORE_ALL)] + rate_flags(rates) + extra
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.time() - t0
    with open(os.path.join(work, "convert.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + p.stdout)
    if p.returncode != 0:
        return name, f"convert failed: {p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.returncode}"
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    ft = manifest["fine_tune"]
    z = lambda f: os.path.join(zoo_dir, f)
    slices = {"calibration": (os.path.join(bundle, "clean-images-idx3-ubyte.gz"),
                              os.path.join(bundle, "clean-labels-idx1-ubyte.gz")),
              "clean": (z("eval-clean-images-idx3-ubyte.gz"), z("eval-clean-labels-idx1-ubyte.gz"))}
    if model["attack"]:
        slices["triggered"] = (z(model["files_triggered"]["images"]), z(model["files_triggered"]["labels"]))
    record = dict(model=model["name"], part=model["part"], architecture=model["architecture"],
                  attack=model["attack"], target=model["target"], export=export, rates=rates, seed=seed,
                  split_seed=0, convert_seconds=round(seconds, 1), extra=extra,
                  decision=manifest["decision"],
                  expert=dict(lr=ft["expert"]["learning_rate"], holdout_accuracy=ft["expert"]["holdout_accuracy"]),
                  auxiliary=dict(lr=ft["auxiliary"]["learning_rate"],
                                 holdout_accuracy=ft["auxiliary"]["holdout_accuracy"]),
                  slices={})
    for part, (images, labels) in slices.items():
        record["slices"][part] = dict(labels=idx_labels(labels), rows=confidences(binaries, bundle, images))
    tmp = cache + ".partial"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, cache)
    return name, f"{seconds:.0f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=os.path.join(ROOT, "models/zoo"))
    ap.add_argument("--part", choices=["dev", "test", "all"], default="dev")
    ap.add_argument("--export", default="bn")
    ap.add_argument("--rates", default="paper", help="comma-separated: paper, default, e<lr>_a<lr>, e<lr>_c<lr>")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--clean-models", action="store_true", help="also the clean models (FPR and CA only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th job from the i-th")
    ap.add_argument("--convert-args", default="", help="extra bundle flags, space-separated")
    a = ap.parse_args()
    zoo = json.load(open(os.path.join(a.zoo, "zoo.json")))["models"]
    only = set(a.only.split(",")) if a.only else None
    models = [m for m in zoo if (a.part == "all" or m["part"] == a.part) and (not only or m["name"] in only)
              and not is_all_to_all(m) and (m["attack"] or a.clean_models)]
    # Seed-major: every model gets its first pair before any gets its second.
    jobs = [(m, r, int(s)) for s in a.seeds.split(",") for r in a.rates.split(",") for m in models]
    i, n = map(int, a.shard.split("/"))
    for m, r, s in jobs[i::n]:
        try:
            name, note = build(a.zoo, m, a.export, r, s, a.out, a.bin, a.threads, a.convert_args.split())
        except Exception as e:  # one model's failure must not stop the others
            name, note = f"{m['name']}.{a.export}.{r}.s{s}", f"error: {e}"
        if note:
            print(f"{name}: {note}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
