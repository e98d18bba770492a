#!/usr/bin/env bash
# The runtime on ARM, from this x86-64 host: its test suite cross-built for
# aarch64 (Raspberry Pi 3/4/5 and Jetson with a 64-bit OS) and run under
# qemu-user, then an armv7 build (32-bit Raspberry Pi OS). Outputs are checked
# against the stored x86-64 reference (runtime/tests/reference.rs).
# Skips with a message when the cross toolchain or qemu cannot be installed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$badexpert_root"

install_arm_toolchain() {
    if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
        || ! command -v arm-linux-gnueabihf-gcc >/dev/null; then
        log "installing the ARM cross compilers and qemu-user with apt"
        local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq >&2 \
            && $sudo apt-get install -y -qq gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user >&2 || return 1
    fi
    rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >&2 || return 1
}

if ! install_arm_toolchain; then
    log "SKIPPED the aarch64 tests and the armv7 build: the cross toolchain or qemu-user could not be installed"
    exit 0
fi

# A target directory of their own: cross builds never wait on the host build's lock.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_CROSS:-$badexpert_root/target/cross}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Tests that start the badexpert-guard binary start it under the same emulator.
export BADEXPERT_TEST_RUNNER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc

log "runtime crates' tests on aarch64 under qemu"
out="$(mktemp)"
# The binary's tests (argument and file handling, ffmpeg, GStreamer) exercise
# no ARM code beyond these crates' and stay on the host: building them here
# would also rebuild tract for aarch64 with the binary's dependency features
# (log/std through env_logger), a second cold cross build.
if ! cargo test --release --no-fail-fast -p badexpert-kernels -p badexpert-runtime -p badexpert-frames \
        -p badexpert-eval -p badexpert-stream --target aarch64-unknown-linux-gnu -- --nocapture >"$out" 2>&1; then
    tail -60 "$out"; rm -f "$out"; exit 1
fi
grep -E 'Running|test result|aarch64 on|allocations|Guard' "$out" || true
rm -f "$out"
log "armv7 build of the runtime"
cargo build --release -p badexpert-guard --target armv7-unknown-linux-gnueabihf
