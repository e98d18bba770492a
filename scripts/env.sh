# Sourced by the project's scripts: makes libtorch (for the converter) and the
# Fashion-MNIST data available, installing them once into a cache outside the
# clone. Idempotent; safe to source repeatedly.
#
#   BADEXPERT_CACHE   where libtorch is kept (default ~/.cache/badexpert)
#   LIBTORCH          use this libtorch instead (must be 2.13.0 for tch 0.26)
#   BADEXPERT_TORCH   cpu (default) or cuda: a CUDA libtorch from PyPI's torch
#                     wheel and its NVIDIA libraries (~3 GB, once), built into
#                     target/cuda so the CPU build stays as it is (docs/gpu.md)

badexpert_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BADEXPERT_CACHE="${BADEXPERT_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/badexpert}"
TORCH_VERSION=2.13.0

log() { printf '[badexpert] %s\n' "$*" >&2; }

# CPU libtorch assembled from the PyPI wheels (docs/design.md §7): headers, the CPU
# libraries, the two small CUDA runtime libraries libtorch_cpu links against,
# and an empty libtorch.so stub in place of the wheel's CUDA shim.
install_libtorch() {
    local dest="$BADEXPERT_CACHE/libtorch-$TORCH_VERSION-cpu"
    if [ -f "$dest/build-version" ] && [ -f "$dest/lib/libtorch_cpu.so" ]; then
        echo "$dest"; return 0
    fi
    log "installing CPU libtorch $TORCH_VERSION into $dest (one time, ~515 MB download)"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps -d "$tmp" \
        "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2 || {
        log "pip download of torch==$TORCH_VERSION failed"; return 1; }
    rm -rf "$dest.partial"; mkdir -p "$dest.partial/lib" "$dest.partial/include"
    python3 - "$tmp" "$dest.partial" <<'PY' >&2 || return 1
import sys, zipfile, glob, os, shutil
tmp, dest = sys.argv[1], sys.argv[2]
torch = glob.glob(os.path.join(tmp, "torch-*.whl"))[0]
want_libs = {"libc10.so", "libtorch_cpu.so", "libtorch_global_deps.so"}
with zipfile.ZipFile(torch) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("torch/include/") and not n.endswith("/"):
            out = os.path.join(dest, "include", n[len("torch/include/"):])
        elif n.startswith("torch/lib/") and (base in want_libs or base.startswith("libgomp")):
            out = os.path.join(dest, "lib", base)
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(n) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
for whl in glob.glob(os.path.join(tmp, "nvidia_cuda_*.whl")):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            base = os.path.basename(n)
            if base.startswith("libcudart.so.13") or base.startswith("libcupti.so.13"):
                with z.open(n) as src, open(os.path.join(dest, "lib", base), "wb") as dst:
                    shutil.copyfileobj(src, dst)
PY
    # Empty shim: the link asks for -ltorch; the real one NEEDs libtorch_cuda.
    echo 'void badexpert_libtorch_stub(void) {}' > "$tmp/stub.c"
    cc -shared -fPIC -o "$dest.partial/lib/libtorch.so" "$tmp/stub.c" || return 1
    echo "$TORCH_VERSION" > "$dest.partial/build-version"
    rm -rf "$tmp" "$dest"; mv "$dest.partial" "$dest"
    echo "$dest"
}

# CUDA libtorch (docs/gpu.md): PyPI's torch wheel (a CUDA build on x86-64
# Linux) with the NVIDIA wheels it depends on, installed side by side with
# `pip install --target` so that torch/lib finds ../../nvidia/*/lib through
# its own RUNPATH. The converter's build.rs links libtorch_cuda with
# --no-as-needed when it is there.
install_libtorch_cuda() {
    local dest="$BADEXPERT_CACHE/torch-$TORCH_VERSION-cuda"
    if [ -f "$dest/torch/lib/libtorch_cuda.so" ] && [ -f "$dest/build-version" ]; then
        echo "$dest/torch"; return 0
    fi
    log "installing CUDA libtorch $TORCH_VERSION (PyPI torch wheel and NVIDIA libraries, ~3 GB) into $dest"
    rm -rf "$dest.partial"
    python3 -m pip install -q --no-compile --target "$dest.partial" "torch==$TORCH_VERSION" >&2 || {
        log "pip install of torch==$TORCH_VERSION failed"; return 1; }
    [ -f "$dest.partial/torch/lib/libtorch_cuda.so" ] || {
        log "the torch==$TORCH_VERSION wheel pip chose has no libtorch_cuda.so (not a CUDA build)"; return 1; }
    echo "$TORCH_VERSION" > "$dest.partial/build-version"
    rm -rf "$dest"; mv "$dest.partial" "$dest"
    echo "$dest/torch"
}

# Fashion-MNIST from Debian (only needed to rebuild demo models or for the
# full-data tests; the shipped demo runs from models/ alone).
FASHION_MNIST_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
install_fashion_mnist() {
    if [ -f "$FASHION_MNIST_DIR/t10k-images-idx3-ubyte.gz" ]; then return 0; fi
    log "installing dataset-fashion-mnist with apt"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq dataset-fashion-mnist >&2
}

# ONNX's backend node tests (a model, inputs and expected outputs per case),
# from the onnx wheel on PyPI, for the interpreter's conformance test
# (converter/tests/onnx_node.rs). Prints the node directory.
ONNX_NODE_VERSION=1.17.0
install_onnx_node_tests() {
    local dest="$BADEXPERT_CACHE/onnx-node-tests-$ONNX_NODE_VERSION"
    if [ -f "$dest/complete" ]; then echo "$dest/node"; return 0; fi
    log "installing ONNX $ONNX_NODE_VERSION's backend node tests into $dest (one time, 16 MB download)"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_17_x86_64 -d "$tmp" "onnx==$ONNX_NODE_VERSION" >&2 || {
        log "pip download of onnx==$ONNX_NODE_VERSION failed"; return 1; }
    rm -rf "$dest.partial"; mkdir -p "$dest.partial"
    python3 - "$tmp" "$dest.partial" <<'PY' >&2 || return 1
import sys, zipfile, glob, os
tmp, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "onnx-*.whl"))[0]) as z:
    for n in z.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            out = os.path.join(dest, "node", n[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
    touch "$dest.partial/complete"
    rm -rf "$tmp" "$dest"; mv "$dest.partial" "$dest"
    echo "$dest/node"
}

# The toolchain rust-toolchain.toml pins. Where it is missing but the
# machine's stable toolchain is that very version (machines that cannot
# download toolchains), stable is linked under the pinned name; otherwise
# rustup installs it on first use as usual.
ensure_toolchain() {
    local pinned
    pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$badexpert_root/rust-toolchain.toml")"
    [ -n "$pinned" ] && command -v rustup >/dev/null || return 0
    rustup run "$pinned" rustc --version >/dev/null 2>&1 && return 0
    if rustup run stable rustc --version 2>/dev/null | grep -q "^rustc $pinned "; then
        # `rustup toolchain link` refuses release names, so the link is made
        # as rustup itself names an installed release: <version>-<host>.
        local stable host
        stable="$(rustup run stable rustc --print sysroot)"
        host="$(basename "$stable")"; host="${host#stable-}"
        log "using the installed stable toolchain (rustc $pinned) as the pinned $pinned"
        ln -s "$stable" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
    fi
}

# What the camera tests need: GStreamer (headers for the element, the tools
# and the base/good plugins for the test pipelines) and ffmpeg.
install_camera_tools() {
    local missing=()
    command -v gst-launch-1.0 >/dev/null || missing+=(gstreamer1.0-tools)
    pkg-config --exists gstreamer-video-1.0 2>/dev/null || missing+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
    gst-inspect-1.0 rawvideoparse >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
    gst-inspect-1.0 videotestsrc >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-base)
    command -v ffmpeg >/dev/null || missing+=(ffmpeg)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} with apt"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

setup_build_env() {
    ensure_toolchain
    case "${BADEXPERT_TORCH:-cpu}" in
        cpu) [ -n "${LIBTORCH:-}" ] || { LIBTORCH="$(install_libtorch)" || return 1; } ;;
        cuda)
            [ -n "${LIBTORCH:-}" ] || { LIBTORCH="$(install_libtorch_cuda)" || return 1; }
            export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$badexpert_root/target/cuda}" ;;
        *) log "BADEXPERT_TORCH=${BADEXPERT_TORCH} (expected cpu or cuda)"; return 1 ;;
    esac
    export LIBTORCH
    # libtorch's OpenMP workers spin while idle; on a shared 2-core box that
    # collapses throughput. Passive waiting costs nothing measurable here.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    export BADEXPERT_FASHION_MNIST="$FASHION_MNIST_DIR"
}
