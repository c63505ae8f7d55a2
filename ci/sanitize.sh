#!/usr/bin/env bash
# Runs the core's ABI tests, its 1M-task stress test, the host API/ABI fuzz
# test and the shared dicts' host-hook test under a sanitizer of the nightly toolchain (-Zsanitizer):
#   address  AddressSanitizer + LeakSanitizer (heap misuse, leaks)
#   thread   ThreadSanitizer (data races); std is rebuilt instrumented with
#            -Zbuild-std, which needs the nightly's rust-src component
# Usage: ci/sanitize.sh [address|thread]
# A missing toolchain or component fails the run (exit 2) and says why: a
# sanitizer target that cannot run must not pass.
# Environment: STRESS_TASKS and PROPTEST_CASES size the stress and fuzz tests.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
sanitizer=${1:-address}
workspace=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
if [[ -f Cargo.toml ]]; then
  workspace=$(dirname "$(readlink -f Cargo.toml)")   # under Bazel: the real tree
fi

fail() {
  echo "ci/sanitize.sh: FAILED: $*" >&2
  exit 2
}

case "$sanitizer" in
  address | thread) ;;
  *) fail "unknown sanitizer '$sanitizer' (address or thread)" ;;
esac
if ! cargo +nightly --version >/dev/null 2>&1; then
  fail "no nightly toolchain, so -Zsanitizer=$sanitizer cannot run (rustup toolchain install nightly)"
fi
extra=()
if [[ "$sanitizer" == thread ]]; then
  # An uninstrumented std hides its synchronisation from ThreadSanitizer,
  # which then reports races in std's own Mutex and Arc: rebuild it.
  sysroot=$(rustc +nightly --print sysroot)
  if [[ ! -d "$sysroot/lib/rustlib/src/rust/library" ]]; then
    fail "the nightly toolchain has no rust-src, which -Zbuild-std needs (rustup component add rust-src --toolchain nightly)"
  fi
  extra=(-Zbuild-std)
fi

export RUSTFLAGS="-Zsanitizer=$sanitizer"
export RUSTDOCFLAGS="$RUSTFLAGS"
export CARGO_TARGET_DIR="$workspace/target/$sanitizer-san"
# Tests whose bounds depend on the sanitizer's own memory (shadow) read this.
export RESTY_FFI_SANITIZER="$sanitizer"
cargo +nightly test --quiet --release --manifest-path "$workspace/Cargo.toml" -p resty_ffi \
  --target x86_64-unknown-linux-gnu "${extra[@]}" --test abi --test stress --test fuzz --test shdict_host 2>&1
