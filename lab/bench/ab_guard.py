#!/usr/bin/env python3
"""Two builds of badexpert-guard against each other, interleaved: `bench` on
each bundle, alternating which binary goes first, `--reps` rounds; prints the
median p50 per bundle and mode, and new/old. For a kernel change: build,
copy the binary aside, stash the change, build again.

Usage: python3 lab/bench/ab_guard.py OLD_BIN NEW_BIN BUNDLE:FRAMES [BUNDLE:FRAMES ...] [--reps 6]
"""

import argparse
import json
import statistics
import subprocess

MODES = ("model alone", "guard, sequential")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("bundles", nargs="+", help="BUNDLE_DIR:FRAMES")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--runs", type=int, default=300)
    a = ap.parse_args()
    res = {}
    for rep in range(a.reps):
        for spec in a.bundles:
            bundle, frames = spec.split(":")
            for name, binary in ([("old", a.old), ("new", a.new)] if rep % 2 == 0 else [("new", a.new), ("old", a.old)]):
                out = subprocess.run([binary, "bench", "--bundle", bundle, "--frames", frames, "--runs", str(a.runs),
                                      "--batches", "8"], capture_output=True, text=True, check=True).stdout
                for mode in json.loads(out)["modes"]:
                    if mode["mode"] in MODES:
                        res.setdefault((bundle, mode["mode"]), {}).setdefault(name, []).append(mode["p50_us"])
    print(f"| bundle | mode | old p50 µs | new p50 µs | new/old |\n|---|---|---|---|---|")
    for (bundle, mode), v in res.items():
        o, n = statistics.median(v["old"]), statistics.median(v["new"])
        print(f"| {bundle} | {mode} | {o:.1f} | {n:.1f} | {n / o:.3f} |")


if __name__ == "__main__":
    main()
