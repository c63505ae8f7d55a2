#!/usr/bin/env bash
# Builds the Rust workspace with cargo for Bazel (a `local = True` genrule):
# cargo_release.sh <path of Cargo.toml inside the execroot> <out dir> <package>...
# The build runs in the real source tree so cargo's target/ stays incremental.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
workspace=$(dirname "$(readlink -f "$1")")
out=$(readlink -f "$2")
shift 2
packages=()
for p in "$@"; do packages+=(-p "$p"); done
cargo build --quiet --release --manifest-path "$workspace/Cargo.toml" "${packages[@]}"
release="$workspace/target/release"
mkdir -p "$out/include"
rm -f "$out"/lib*.so "$out"/lib*.a
for p in "$@"; do
  for f in "$release/lib$p.so" "$release/lib$p.a"; do
    if [[ -f "$f" ]]; then
      cp -f "$f" "$out/"
    fi
  done
done
cp -f "$release/include/resty_ffi.h" "$out/include/"
