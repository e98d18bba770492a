#!/usr/bin/env bash
# The whole test suite: unit tests, doctests and the end-to-end tests
# (including the full Fashion-MNIST acceptance run). Installs CPU libtorch
# (cached outside the clone) and Debian's dataset-fashion-mnist if missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
setup_build_env
install_fashion_mnist
cd "$badexpert_root"
cargo test --release --workspace "$@"
# The runtime on ARM: tests under qemu-aarch64, armv7 build (skips with a
# message when the cross toolchain cannot be installed).
"$badexpert_root/scripts/test-arm.sh"
