#!/usr/bin/env python3
"""Scans zoo models for a backdoor with the real command-line tool, as a user
would (`badexpert-convert scan`), one JSON result per model and export.

Each result is written as the scan finishes (`<out>/<model>.<export>.json`)
and skipped when it is already there, so the job can be stopped and resumed;
several jobs run at once (--jobs, each with --threads libtorch threads and
--scan-jobs 1). Run with more unlearning runs than the shipped default
(--runs) and score any rule, run count or threshold offline from the cached
per-run histograms with scan_tables.py.

Standard library only; needs the release binary
(cargo build --release -p badexpert-convert) and the libtorch of scripts/env.sh.

Usage: python3 lab/zoo/scan_zoo.py --part dev --out docs/zoo-results/scan [--runs 6] [--jobs 2]
       python3 lab/zoo/scan_zoo.py --models models/architectures/... (any ONNX files) --out DIR
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, "models", "zoo")


def jobs_for(part, exports, names):
    with open(os.path.join(ZOO, "zoo.json")) as f:
        zoo = json.load(f)
    for m in zoo["models"]:
        if part != "all" and m["part"] != part:
            continue
        if names and m["name"] not in names:
            continue
        for export in exports:
            path = m["files"].get(export)
            if path:
                yield m, export, os.path.join(ZOO, path)


def scan_one(binary, model, export, onnx, out, args):
    dest = os.path.join(out, f"{model['name']}.{export}.json")
    if os.path.exists(dest):
        return dest, "cached"
    reserve = os.path.join(ZOO, "reserve-images-idx3-ubyte.gz")
    cmd = [binary, "--quiet", "--threads", str(args.threads), "scan", "--model", onnx, "--reserve", reserve,
           "--scan-runs", str(args.runs), "--scan-jobs", "1", "--scan-lr", str(args.lr),
           "--scan-floor", str(args.floor), "--json", dest + ".scan"] + args.extra
    started = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE",
                                RUST_LOG="warn,badexpert_converter::inversion=debug" if args.trace else "warn"))
    if p.returncode != 0:
        return dest, f"FAILED ({p.returncode}): {p.stderr.strip()[-400:]}"
    with open(dest + ".scan") as f:
        record = json.load(f)
    os.remove(dest + ".scan")
    if args.trace:
        # Every label's smallest mask every ten steps: early stopping rules are scored offline from it.
        with open(dest[:-len(".json")] + ".trace", "w") as f:
            f.writelines(line + "\n" for line in p.stderr.splitlines() if "inversion trace:" in line)
    result = dict(model=model["name"], part=model["part"], export=export, architecture=model["architecture"],
                  attack=model["attack"], attack_mode=model.get("attack_mode") or (
                      "all-to-one" if model["attack"] else None),
                  true_target=model["target"], wall_seconds=round(time.time() - started, 1),
                  command=" ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd),
                  scan=record)
    with open(dest + ".partial", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(dest + ".partial", dest)
    lines = [line for line in p.stderr.strip().splitlines() if "inversion trace:" not in line]
    return dest, lines[-1] if lines else "done"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="dev", choices=["dev", "test", "all"])
    ap.add_argument("--only", nargs="*", help="model names")
    ap.add_argument("--exports", nargs="*", default=["folded", "bn", "dynamo"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--floor", type=float, default=0.2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", action="store_true", help="keep the inversion's per-window trace (<model>.<export>.trace)")
    ap.add_argument("--binaries", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("extra", nargs="*", help="further scan flags, after --")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    binary = os.path.join(args.binaries, "badexpert-convert")
    todo = list(jobs_for(args.part, args.exports, args.only))
    print(f"{len(todo)} scan(s) into {args.out}", flush=True)
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(scan_one, binary, m, e, p, args.out, args) for m, e, p in todo]
        for fut in futures:
            dest, what = fut.result()
            failed += what.startswith("FAILED")
            print(f"{os.path.basename(dest)}: {what}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
