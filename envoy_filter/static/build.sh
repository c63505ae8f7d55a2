#!/usr/bin/env bash
# Builds the filter as a static library for a custom Envoy binary:
#   build.sh            -> target/release/static/libresty_ffi_envoy_static.a
#                          (scripts run on the LuaJIT of Envoy's own Lua filter,
#                          which the binary must contain, as the stock one does)
#   build.sh vendored   -> target/vendored-luajit/release/static/libresty_ffi_envoy_static.a
#                          (a private LuaJIT, for a binary without Envoy's Lua
#                          filter; Lua C modules are refused)
#   build.sh test-faults -> target/test-faults/release/static/... (tests only:
#                          the default one, panicking where RESTY_FFI_TEST_PANIC_AT says)
# Prints the archive's path. Its hooks are named
# resty_ffi_envoy_envoy_dynamic_module_on_*, the names Envoy resolves for a
# module linked in under the name `resty_ffi_envoy`. Everything but the hooks
# and the resty_ffi C ABI (runtime ABI + host API) is made local, so a
# private LuaJIT and Rust's std cannot clash with Envoy's own symbols.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
features=(--features static-module)
target="$root/target"
case "${1:-default}" in
  default) ;;
  vendored)
    features=(--no-default-features --features static-module,vendored-luajit)
    target="$root/target/vendored-luajit" ;;
  test-faults)
    features=(--features static-module,test-faults)
    target="$root/target/test-faults" ;;
  *) echo "usage: build.sh [default|vendored|test-faults]" >&2; exit 2 ;;
esac
out="$target/release/static"
cargo rustc --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy --lib \
  --target-dir "$target" --crate-type staticlib "${features[@]}"
mkdir -p "$out"
ld -r --whole-archive "$target/release/libresty_ffi_envoy.a" -o "$out/resty_ffi_envoy.o"
readelf -Ws --wide "$out/resty_ffi_envoy.o" | awk '$5 == "GLOBAL" && $7 != "UND" {print $8}' \
  | grep -E '^(resty_ffi_envoy_envoy_dynamic_module_on_|ngx_http_lua_ffi_|resty_ffi_)' > "$out/exported.txt"
# Drop the LLVM bitcode Rust embeds (binutils' LTO plugin chokes on it).
objcopy --keep-global-symbols="$out/exported.txt" --remove-section=.llvmbc --remove-section=.llvmcmd \
  "$out/resty_ffi_envoy.o"
rm -f "$out/libresty_ffi_envoy_static.a"
ar rcs "$out/libresty_ffi_envoy_static.a" "$out/resty_ffi_envoy.o"
rm -f "$out/resty_ffi_envoy.o"
echo "$out/libresty_ffi_envoy_static.a"
