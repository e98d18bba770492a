#!/usr/bin/env python3
"""Guard latency: badexpert (tract) against ONNX Runtime on the same three
ONNX models, measured back to back in one run, same thread count (1).

    python3 -m pip install onnxruntime numpy
    python3 lab/bench/compare_onnxruntime.py --dir target/bench/demo --dir target/bench/resnet18

The speed suite of foreign shapes (issue 16):

    torchenv/bin/python lab/bench/speed_models.py        # full-width ResNet18, MobileNetV2
    python3 lab/bench/compare_onnxruntime.py --suite models/zoo --onnx target/speed/models/resnet18.onnx \
        --onnx target/speed/models/mobilenetv2.onnx

--suite adds every export of every zoo model and --onnx any ONNX file: each
gets a timing bundle (`badexpert-lab timing-bundle`: the model's plan as
M, B and M′, no fine-tuning) in target/speed/, and ONNX Runtime runs that
same file three times — B and M′ share M's architecture, so the costs are
those of a real guard.

Each --dir holds a guard bundle (bundle/, and bundle-int8/) and the ONNX
files of its three models (model.onnx, expert.onnx, auxiliary.onnx), as
`cargo bench --bench guard` prepares them. The int8 rows put badexpert's
int8 bundle beside ONNX Runtime running its own static int8 quantization of
the same three models (`quantize_static`, QDQ, per-channel int8 weights,
uint8 activations; ranges from 32 random frames: timing only), written to
--dir as *.int8.onnx. ONNX Runtime runs M, B and M' in turn on one frame
(batch 1) and on 8 frames (batch 8) with intra- and inter-op threads set to
1 and all graph optimisations on; badexpert is timed by `badexpert-guard
bench`. The two take turns for --rounds rounds, so that load drifting on a
shared machine hits both alike; each round gives one ratio per mode. Prints
a markdown table with the median latencies and the median [min–max] ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


class OrtGuard:
    """M, B and M' as ONNX Runtime sessions, 1 thread each, all graph optimisations."""

    def __init__(self, paths):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in paths]
        self.names = [s.get_inputs()[0].name for s in self.sessions]

    def latency(self, models, batch, shape, runs):
        """Mean µs per frame of running the first `models` sessions in turn."""
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        pairs = list(zip(self.sessions, self.names))[:models]
        for _ in range(max(runs // 10, 3)):
            for s, n in pairs:
                s.run(None, {n: x})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            for s, n in pairs:
                s.run(None, {n: x})
            times.append((time.perf_counter() - start) * 1e6 / batch)
        return sum(times) / len(times)


MODES = [("M alone, batch 1", (1, 1), ("model alone", 1)),
         ("M alone, batch 1, tract ops only", (1, 1), ("model alone, tract ops only", 1)),
         ("guard (M+B+M'), batch 1", (3, 1), ("guard, sequential", 1)),
         ("guard (M+B+M'), batch 1, tract ops only", (3, 1), ("guard, sequential, tract ops only", 1)),
         ("guard (M+B+M'), batch 8", (3, 8), ("guard, batched", 8))]
INT8_MODES = [("M alone, batch 1, int8", (1, 1), ("model alone", 1)),
              ("guard (M+B+M'), batch 1, int8", (3, 1), ("guard, sequential", 1))]


def quantized(path, shape):
    """ONNX Runtime's static int8 quantization of the model at `path` (cached beside it)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = path[:-len(".onnx")] + ".int8.onnx"
    if os.path.exists(out):
        return out
    name = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Frames(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.frames = iter([{name: rng.standard_normal((1, *shape)).astype(np.float32)} for _ in range(32)])

        def get_next(self):
            return next(self.frames, None)

    prepared = path[:-len(".onnx")] + ".prep.onnx"
    quant_pre_process(path, prepared)
    quantize_static(prepared, out, Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.remove(prepared)
    return out


def compare(guard, bundle, theirs_guard, modes, shape, rounds, per_round):
    """Per mode: badexpert's and ONNX Runtime's latency and their ratio, one value per round."""
    rows = {mode: ([], [], []) for mode, _, _ in modes}
    parallel = {2: [], 3: []}
    for _ in range(rounds):
        ours = json.loads(subprocess.run(
            [guard, "bench", "--bundle", bundle, "--runs", str(per_round), "--batches", "8"],
            check=True, capture_output=True, text=True).stdout)
        by_mode = {(r["mode"], r["batch"]): r for r in ours["modes"]}
        measured = {}
        for mode, (models, batch), key in modes:
            if (models, batch) not in measured:
                runs = per_round if batch == 1 else max(per_round // batch, 10)
                measured[(models, batch)] = theirs_guard.latency(models, batch, shape, runs)
            mine, theirs = by_mode[key]["mean_us"], measured[(models, batch)]
            for column, value in zip(rows[mode], (mine, theirs, mine / theirs)):
                column.append(value)
        for threads in parallel:
            parallel[threads].append(by_mode[(f"guard, {threads} threads", 1)]["mean_us"])
    return rows, parallel


# The suite compares what the bar reads: batch 1, f32, one thread.
SUITE_MODES = [MODES[0], MODES[2], MODES[3]]


def suite(args):
    """(name, timing bundle, the ONNX file three times) for every --suite export and --onnx file."""
    files = []
    if args.suite:
        zoo = json.load(open(os.path.join(args.suite, "zoo.json")))
        for m in zoo["models"]:
            for export in ("folded", "bn", "dynamo"):
                files.append((f"{m['name']}.{export}", os.path.join(args.suite, m["files"][export])))
    files += [(os.path.splitext(os.path.basename(p))[0], p) for p in args.onnx]
    out = []
    for name, path in files:
        if args.only and not any(o in name for o in args.only):
            continue
        bundle = os.path.join("target", "speed", name, "bundle")
        if not os.path.exists(os.path.join(bundle, "manifest.json")):
            subprocess.run([args.lab, "--quiet", "timing-bundle", "--model", path, "--out", bundle],
                           check=True, capture_output=True)
        out.append((name, bundle, [path] * 3))
    return out


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--suite", help="a model zoo (zoo.json): every model, every export")
    ap.add_argument("--onnx", action="append", default=[], help="an ONNX classifier to add to the suite")
    ap.add_argument("--lab", default="target/release/badexpert-lab")
    ap.add_argument("--only", action="append", help="only suite entries whose name contains this")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per mode, over all rounds")
    ap.add_argument("--rounds", type=int, default=5,
                    help="badexpert and ONNX Runtime take turns this many times; ratios are per round")
    ap.add_argument("--guard", default="target/release/badexpert-guard")
    args = ap.parse_args()
    version = getattr(ort, "__version__", None) or __import__("importlib.metadata").metadata.version("onnxruntime")
    per_round = max(args.runs // args.rounds, 10)
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp") if f in flags]
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {model}; ISA: {', '.join(isa) or 'none of the listed'}")
    print(f"onnxruntime {version}, 1 thread; per-frame mean latency (µs), median of {args.rounds} rounds "
          f"of {per_round} runs; ratio: median [min–max] of the per-round ratios\n")
    print("| model | mode | badexpert (tract) | ONNX Runtime | badexpert / ORT |")
    print("|---|---|---|---|---|")
    entries = [(os.path.basename(os.path.normpath(d)), os.path.join(d, "bundle"),
                [os.path.join(d, f) for f in ("model.onnx", "expert.onnx", "auxiliary.onnx")]) for d in args.dir]
    entries += suite(args)
    for name, bundle, paths in entries:
        manifest = json.load(open(os.path.join(bundle, "manifest.json")))
        s = manifest["input"]["shape"]
        shape = (s["channels"], s["height"], s["width"])
        modes = MODES if args.dir and bundle.startswith(tuple(args.dir)) else SUITE_MODES
        rows, parallel = compare(args.guard, bundle, OrtGuard(paths), modes, shape, args.rounds, per_round)
        d = os.path.dirname(bundle)
        for mode, _, _ in modes:
            print_row(name, mode, *rows[mode])
        for threads, values in parallel.items() if modes is MODES else ():
            print(f"| {name} | guard on {threads} threads, batch 1 (badexpert only) | {median(values):.0f} | | |")
        int8 = os.path.join(d, "bundle-int8")
        if os.path.isdir(int8):
            theirs = OrtGuard([quantized(p, shape) for p in paths])
            rows, _ = compare(args.guard, int8, theirs, INT8_MODES, shape, args.rounds, per_round)
            for mode, _, _ in INT8_MODES:
                print_row(name, mode, *rows[mode])


def print_row(name, mode, mine, theirs, ratios):
    print(f"| {name} | {mode} | {median(mine):.0f} | {median(theirs):.0f} | "
          f"{median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}] |")


if __name__ == "__main__":
    sys.exit(main())
