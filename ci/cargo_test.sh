#!/usr/bin/env bash
# Bazel entry point for the Rust tests: `cargo test` over the workspace, run in
# the real source tree so cargo's target/ stays incremental.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
workspace=$(dirname "$(readlink -f Cargo.toml)")
cargo test --release --manifest-path "$workspace/Cargo.toml" --workspace "$@" 2>&1
