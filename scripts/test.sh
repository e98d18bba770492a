#!/usr/bin/env bash
# The whole test suite: rustfmt, unit tests, doctests, the end-to-end tests
# (including the full Fashion-MNIST acceptance run), the C ABI's example and
# header check, clippy, and the runtime on ARM. Installs CPU libtorch
# (cached outside the clone) and Debian's dataset-fashion-mnist if missing.
#
#   scripts/test.sh --quick [cargo test args]   while coding: rustfmt, clippy and
#       every test but the acceptance runs (the demo on full Fashion-MNIST, the
#       zoo conversions, the architecture fixtures) and the ARM suite.
set -euo pipefail
quick=false
if [ "${1:-}" = "--quick" ]; then quick=true; shift; fi
source "$(dirname "$0")/env.sh"
setup_build_env
install_fashion_mnist
install_camera_tools
BADEXPERT_ONNX_NODE_TESTS="$(install_onnx_node_tests)"
export BADEXPERT_ONNX_NODE_TESTS
cd "$badexpert_root"
# The tree is formatted (rustfmt.toml) and clippy-clean, with the pinned toolchain.
cargo fmt --all --check
if $quick; then
    cargo clippy --release --workspace --all-targets -- -D warnings
    exec cargo test --release --workspace "$@" -- --skip meets_the_acceptance_bar --skip meets_the_bar \
        --skip every_architecture_fixture_converts_and_guards
fi
cargo test --release --workspace "$@"
cargo clippy --release --workspace --all-targets -- -D warnings
# The runtime on ARM: tests under qemu-aarch64, armv7 build (skips with a
# message when the cross toolchain cannot be installed).
"$badexpert_root/scripts/test-arm.sh"
