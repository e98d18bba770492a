#!/usr/bin/env python3
"""Guard latency: badexpert (tract) against ONNX Runtime on the same three
ONNX models, measured back to back in one run, same thread count (1).

    python3 -m pip install onnxruntime numpy
    python3 benches/compare_onnxruntime.py --dir target/bench/demo --dir target/bench/resnet18

Each --dir holds a guard bundle (bundle/) and the ONNX files of its three
models (model.onnx, expert.onnx, auxiliary.onnx), as `cargo bench --bench
guard` prepares them. ONNX Runtime runs M, B and M' in turn on one frame
(batch 1) and on 8 frames (batch 8) with intra- and inter-op threads set to
1 and all graph optimisations on; badexpert is timed by `badexpert-guard
bench` on the same frames. Prints a markdown table with the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def ort_latency(paths, batch, shape, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in paths]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    names = [s.get_inputs()[0].name for s in sessions]
    for _ in range(max(runs // 10, 3)):
        for s, n in zip(sessions, names):
            s.run(None, {n: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for s, n in zip(sessions, names):
            s.run(None, {n: x})
        times.append((time.perf_counter() - start) * 1e6 / batch)
    times.sort()
    return {"mean_us": sum(times) / len(times), "p50_us": times[len(times) // 2]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", action="append", required=True)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--guard", default="target/release/badexpert-guard")
    args = ap.parse_args()
    version = getattr(ort, "__version__", None) or __import__("importlib.metadata").metadata.version("onnxruntime")
    print(f"onnxruntime {version}, 1 thread; per-frame mean latency (µs)\n")
    print("| model | mode | badexpert (tract) | ONNX Runtime | badexpert / ORT |")
    print("|---|---|---|---|---|")
    for d in args.dir:
        bundle = os.path.join(d, "bundle")
        manifest = json.load(open(os.path.join(bundle, "manifest.json")))
        s = manifest["input"]["shape"]
        shape = (s["channels"], s["height"], s["width"])
        ours = json.loads(subprocess.run(
            [args.guard, "bench", "--bundle", bundle, "--runs", str(args.runs), "--batches", "8"],
            check=True, capture_output=True, text=True).stdout)
        by_mode = {(r["mode"], r["batch"]): r for r in ours}
        three = [os.path.join(d, f) for f in ("model.onnx", "expert.onnx", "auxiliary.onnx")]
        one = ort_latency(three[:1], 1, shape, args.runs)
        seq = ort_latency(three, 1, shape, args.runs)
        batched = ort_latency(three, 8, shape, max(args.runs // 8, 10))
        name = os.path.basename(os.path.normpath(d))
        for mode, theirs, key in [("M alone, batch 1", one, ("model alone", 1)),
                                  ("M alone, batch 1, tract ops only", one, ("model alone, tract ops only", 1)),
                                  ("guard (M+B+M'), batch 1", seq, ("guard, sequential", 1)),
                                  ("guard (M+B+M'), batch 1, tract ops only", seq, ("guard, sequential, tract ops only", 1)),
                                  ("guard (M+B+M'), batch 8", batched, ("guard, batched", 8))]:
            mine = by_mode[key]["mean_us"]
            print(f"| {name} | {mode} | {mine:.0f} | {theirs['mean_us']:.0f} | {mine / theirs['mean_us']:.2f}x |")
        for threads in (2, 3):
            par = by_mode[(f"guard, {threads} threads", 1)]["mean_us"]
            print(f"| {name} | guard on {threads} threads, batch 1 (badexpert only) | {par:.0f} | | |")


if __name__ == "__main__":
    sys.exit(main())
