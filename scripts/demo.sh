#!/usr/bin/env bash
# The main job on the shipped default: convert the demo backdoored model in
# models/ into a guard bundle, then guard the shipped clean and triggered
# frames and print CA, ASR (with and without the guard), AUROC and latency.
# Installs CPU libtorch on first use (cached outside the clone).
set -euo pipefail
source "$(dirname "$0")/env.sh"
setup_build_env
cd "$badexpert_root"
demo=models/badnet-fmnist
out=target/demo
log "building (release)"
cargo build --release --quiet --workspace --bins
mkdir -p "$out"
log "converting $demo/model.onnx with its 2,000-image clean reserve"
target/release/badexpert-convert --quiet bundle \
    --model "$demo/model.onnx" \
    --reserve "$demo/reserve-images-idx3-ubyte.gz" \
    --classes "t-shirt/top,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot" \
    --out "$out/bundle" --overwrite
log "guarding the shipped evaluation slice (clean + BadNet-triggered)"
target/release/badexpert-guard eval \
    --bundle "$out/bundle" \
    --clean "$demo/eval-clean-images-idx3-ubyte.gz" \
    --triggered "$demo/eval-badnet-images-idx3-ubyte.gz" \
    --target 0 --json "$out/eval.json"
