#!/usr/bin/env bash
# Bazel entry point for the grpc workspace's Rust tests (text format and
# message conversions), run in the real source tree (target dir target/grpc).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
workspace=$(dirname "$(readlink -f grpc/Cargo.toml)")
export CARGO_TARGET_DIR="$workspace/../target/grpc"
cargo test --release --manifest-path "$workspace/Cargo.toml" -p resty_ffi_grpc 2>&1
