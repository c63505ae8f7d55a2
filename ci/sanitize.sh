#!/usr/bin/env bash
# Runs the core's ABI tests, its 1M-task stress test and the host API/ABI fuzz
# test under AddressSanitizer
# (heap misuse + LeakSanitizer) with the nightly toolchain's -Zsanitizer.
# Usage: ci/sanitize.sh [address|thread]   (thread needs rust-src for build-std)
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
sanitizer=${1:-address}
workspace=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
if [[ -f Cargo.toml ]]; then
  workspace=$(dirname "$(readlink -f Cargo.toml)")   # under Bazel: the real tree
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  # rustup cannot fetch toolchains on every machine; say so loudly, do not fail.
  echo "ci/sanitize.sh: SKIPPED: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 0
fi
export RUSTFLAGS="-Zsanitizer=$sanitizer"
export RUSTDOCFLAGS="$RUSTFLAGS"
export CARGO_TARGET_DIR="$workspace/target/$sanitizer-san"
extra=()
if [[ "$sanitizer" == thread ]]; then
  extra=(-Zbuild-std)
fi
cargo +nightly test --quiet --release --manifest-path "$workspace/Cargo.toml" -p resty_ffi \
  --target x86_64-unknown-linux-gnu "${extra[@]}" --test abi --test stress --test fuzz 2>&1
