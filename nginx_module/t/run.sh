#!/usr/bin/env bash
# Builds the nginx host (cargo + module) and runs its integration tests.
# run.sh [pytest args...]; RESTY_FFI_VALGRIND=1 runs nginx under valgrind.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$root/target/nginx"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi -p rust_echo -p rust_http_client
"$root/nginx_module/build.sh" "$out/module" "$root/target/release/include" "$root/target/release"
mkdir -p "$out/runtimes"
cp -f "$root/target/release/librust_echo.so" "$root/target/release/librust_http_client.so" "$out/runtimes/"
cc -O2 -shared -fPIC -pthread -I"$root/target/release/include" \
  -o "$out/runtimes/libtest_runtime.so" "$root/nginx_module/t/runtimes/test_runtime.c"
"$root/examples/go_echo/build.sh" "$out/runtimes/libgo_echo.so"
"$root/examples/python/build.sh" "$out/runtimes/libffi_python3.so"
"$root/examples/java/build.sh" "$out/runtimes/libffi_java.so" "$root/target/release/include"
"$root/examples/nodejs/build.sh" "$out/runtimes/libffi_nodejs.so" "$root/target/release/include"
export RESTY_FFI_MODULE_DIR="$out/module" RESTY_FFI_LUA_DIR="$root/lua" RESTY_FFI_RUNTIMES="$out/runtimes"
export RESTY_FFI_HEADER="$root/target/release/include/resty_ffi.h"
cd "$root/nginx_module/t"
exec python3 -m pytest -q -p no:cacheprovider "$@"
