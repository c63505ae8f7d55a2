#!/usr/bin/env bash
# Builds the grpc workspace with cargo for Bazel (a `local = True` genrule):
# cargo_build.sh <path of grpc/Cargo.toml inside the execroot> <out dir>
# It runs in the real source tree, with the target dir target/grpc of the
# repository, so that cargo stays incremental.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
workspace=$(dirname "$(readlink -f "$1")")
mkdir -p "$2"
out=$(readlink -f "$2")
export CARGO_TARGET_DIR="$workspace/../target/grpc"
cargo build --quiet --release --manifest-path "$workspace/Cargo.toml"
cp -f "$CARGO_TARGET_DIR/release/libresty_ffi_grpc.so" "$CARGO_TARGET_DIR/release/grpc_testserver" "$out/"
