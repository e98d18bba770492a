#!/usr/bin/env python3
"""Canaried copies of zoo models (issue 30, design a), as a zoo of their own.

For each zoo model of a part (not all-to-all) and each canary trigger, implants
the trigger toward the canary's target into a copy of the model
(`badexpert-lab implant`: a short fine-tune on the fine-tuning part of the
reserve, split as the conversions with --split-seed 0 split it), stamps the
zoo's clean evaluation slice with the trigger, and writes `zoo.json` so that
expert_cache.py (--zoo) converts the copies over a rate grid like any zoo
model. offline_loop.py --canaries then picks, per model, the rate pair that
detects its canaries best and judges that pair on the model itself.

Each copy is written as it finishes and skipped when present.

Usage: python3 lab/zoo/canary_zoo.py --part dev --out target/canary-zoo [--canaries badnet:1,blend:4]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, "models", "zoo")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="dev", choices=["dev", "test", "all"])
    ap.add_argument("--export", default="bn")
    ap.add_argument("--canaries", default="badnet:1,blend:4", help="attack:target pairs")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--epochs", default="10")
    ap.add_argument("--poison-rate", default="0.1")
    ap.add_argument("--backdoored-only", action="store_true", help="skip the clean zoo models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    for f in ("reserve-images-idx3-ubyte.gz", "reserve-labels-idx1-ubyte.gz",
              "eval-clean-images-idx3-ubyte.gz", "eval-clean-labels-idx1-ubyte.gz"):
        if not os.path.exists(os.path.join(out, f)):
            os.symlink(os.path.join(ZOO, f), os.path.join(out, f))
    lab = os.path.join(a.bin, "badexpert-lab")
    canaries = [(c.split(":")[0], int(c.split(":")[1])) for c in a.canaries.split(",")]
    for attack, _ in canaries:
        images = os.path.join(out, f"eval-{attack}-images-idx3-ubyte.gz")
        if not os.path.exists(images):
            subprocess.run([lab, "--quiet", "trigger", "--attack", attack, "--input",
                            os.path.join(out, "eval-clean-images-idx3-ubyte.gz"), "--output", images], check=True)
    with open(os.path.join(ZOO, "zoo.json")) as f:
        zoo = json.load(f)["models"]
    entries = []
    for m in zoo:
        if a.part != "all" and m["part"] != a.part:
            continue
        if m.get("attack") and (m.get("attack_mode") == "all-to-all" or m.get("target") is None):
            continue
        if a.backdoored_only and not m.get("attack"):
            continue
        for attack, target in canaries:
            if target == m.get("target"):
                print(f"{m['name']}: canary target {target} is the backdoor's; skipped", file=sys.stderr)
                continue
            name = f"{m['name']}+{attack}"
            onnx = os.path.join(out, f"{name}.{a.export}.onnx")
            report = onnx[:-len(".onnx")] + ".json"
            if not os.path.exists(report):
                p = subprocess.run([lab, "--quiet", "--threads", a.threads, "implant", "--model",
                                    os.path.join(ZOO, m["files"][a.export]), "--reserve",
                                    os.path.join(out, "reserve-images-idx3-ubyte.gz"), "--out", onnx,
                                    "--attack", attack, "--target", str(target), "--lr", a.lr, "--epochs", a.epochs,
                                    "--poison-rate", a.poison_rate], stdout=subprocess.PIPE, text=True)
                if p.returncode != 0:
                    print(f"{name}: implant failed ({p.returncode})", file=sys.stderr)
                    continue
                with open(report, "w") as f:
                    f.write(p.stdout)
            with open(report) as f:
                r = json.load(f)
            print(f"{name}: clean accuracy {r['clean_accuracy_before']:.3f} -> {r['clean_accuracy']:.3f}, "
                  f"canary success {r['attack_success']:.3f}", flush=True)
            if r["attack_success"] < 0.5:
                print(f"{name}: the copy did not learn the canary; left out", flush=True)
                continue
            entries.append(dict(name=name, part=m["part"], architecture=m["architecture"], attack=f"canary-{attack}",
                                attack_mode="all-to-one", target=target, canary_of=m["name"],
                                backdoor=dict(attack=m.get("attack"), target=m.get("target")),
                                files={a.export: onnx},
                                files_triggered=dict(images=os.path.join(out, f"eval-{attack}-images-idx3-ubyte.gz"),
                                                     labels=os.path.join(out, "eval-clean-labels-idx1-ubyte.gz")),
                                canary=r))
    with open(os.path.join(out, "zoo.json"), "w") as f:
        json.dump(dict(models=entries), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
