#!/usr/bin/env bash
# The converter on CUDA against the CPU (docs/gpu.md), on a machine with an
# NVIDIA GPU: builds badexpert-convert against a CUDA libtorch (into
# target/cuda; the CPU build is untouched), converts the demo and the
# ResNet18-layout model of models/architectures/ on CUDA and on the CPU, and
# prints each conversion's time with AUROC, CA and ASR with the guard and τ
# on the model's evaluation slice. Fails — never passes quietly on the CPU —
# unless the binary NEEDs libtorch_cuda.so, CUDA is available at run time,
# the CUDA bundles record a CUDA device, and the demo's CUDA bundle is within
# 0.002 AUROC and 0.5 pt of CA and ASR with the guard of its CPU bundle.
#
#   scripts/gpu-check.sh [OUT]      (default OUT: target/gpu-check)
#   LIBTORCH=/path/to/site-packages/torch scripts/gpu-check.sh   # an installed CUDA torch 2.13.0
set -euo pipefail
export BADEXPERT_TORCH=cuda
source "$(dirname "$0")/env.sh"
setup_build_env
cd "$badexpert_root"
out="${1:-target/gpu-check}"
mkdir -p "$out"
fail() { log "FAILED: $*"; exit 1; }

log "building badexpert-convert and badexpert-guard against $LIBTORCH"
cargo build --release --quiet -p badexpert-convert -p badexpert-guard
bin="$CARGO_TARGET_DIR/release"
readelf -d "$bin/badexpert-convert" | grep -q 'NEEDED.*\[libtorch_cuda.so\]' \
    || fail "$bin/badexpert-convert does not NEED libtorch_cuda.so: CUDA would stay unused"
log "libtorch_cuda.so is NEEDED by badexpert-convert"

results="$out/results.jsonl"
: > "$results"
for dir in models/badnet-fmnist models/architectures/resnet18-badnet-fmnist; do
    name="$(basename "$dir")"
    target="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spec"]["target"])' "$dir/demo.json")"
    for device in cuda cpu; do
        bundle="$out/$name.$device"
        log "$name on $device"
        start=$(date +%s.%N)
        "$bin/badexpert-convert" --quiet --device "$device" bundle --model "$dir/model.onnx" \
            --reserve "$dir/reserve-images-idx3-ubyte.gz" --out "$bundle" --overwrite \
            || fail "converting $name on $device"
        seconds=$(python3 -c "import sys; print(round($(date +%s.%N) - $start, 1))")
        "$bin/badexpert-guard" eval --bundle "$bundle" --clean "$dir/eval-clean-images-idx3-ubyte.gz" \
            --triggered "$dir/eval-badnet-images-idx3-ubyte.gz" --target "$target" --json "$bundle.eval.json" \
            >/dev/null 2>&1 || fail "evaluating $bundle"
        python3 - "$name" "$device" "$seconds" "$bundle" >>"$results" <<'PY'
import json, sys
name, device, seconds, bundle = sys.argv[1:]
m = json.load(open(f"{bundle}/manifest.json"))
e = json.load(open(f"{bundle}.eval.json"))
print(json.dumps(dict(model=name, device=device, recorded_device=m["fine_tune"]["device"], seconds=float(seconds),
                      auroc=e["auroc"], ca_guard=e["clean_accuracy_defended"], asr_guard=e["attack_success_rate_defended"],
                      tau=m["decision"]["threshold"])))
PY
    done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | device (manifest) | conversion s | AUROC | CA with guard | ASR with guard | τ |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['device']} ({r['recorded_device']}) | {r['seconds']:.1f} | {r['auroc']:.4f} | "
          f"{100 * r['ca_guard']:.2f} % | {100 * r['asr_guard']:.2f} % | {r['tau']:.4g} |")
bad = [r for r in rows if r["device"] == "cuda" and "Cuda" not in r["recorded_device"]]
if bad:
    sys.exit(f"FAILED: CUDA bundles record {[r['recorded_device'] for r in bad]}")
by = {(r["model"], r["device"]): r for r in rows}
c, g = by[("badnet-fmnist", "cpu")], by[("badnet-fmnist", "cuda")]
d_auroc, d_ca, d_asr = abs(g["auroc"] - c["auroc"]), 100 * abs(g["ca_guard"] - c["ca_guard"]), 100 * abs(g["asr_guard"] - c["asr_guard"])
print(f"demo, CUDA vs CPU: |ΔAUROC| {d_auroc:.4f} (≤ 0.002), |ΔCA| {d_ca:.2f} pt, |ΔASR| {d_asr:.2f} pt (≤ 0.5)")
for m in ("badnet-fmnist", "resnet18-badnet-fmnist"):
    print(f"{m}: conversion {by[(m, 'cpu')]['seconds']:.1f} s on the CPU, {by[(m, 'cuda')]['seconds']:.1f} s on CUDA")
if d_auroc > 0.002 or d_ca > 0.5 or d_asr > 0.5:
    sys.exit("FAILED: the CUDA bundle's quality differs from the CPU bundle's")
print("gpu-check: OK")
PY
