#!/usr/bin/env bash
# Builds the filter as a static library for a custom Envoy binary:
#   target/release/static/libresty_ffi_envoy_static.a
# Its hooks are named resty_ffi_envoy_envoy_dynamic_module_on_*, the names Envoy
# resolves for a module linked in under the name `resty_ffi_envoy`. Everything
# but the hooks and the resty_ffi C ABI (runtime ABI + host API) is made local,
# so the embedded LuaJIT and Rust std cannot clash with Envoy's own symbols.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$root/target/release/static"
cargo rustc --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy --lib \
  --crate-type staticlib --features static-module
mkdir -p "$out"
ld -r --whole-archive "$root/target/release/libresty_ffi_envoy.a" -o "$out/resty_ffi_envoy.o"
readelf -Ws --wide "$out/resty_ffi_envoy.o" | awk '$5 == "GLOBAL" && $7 != "UND" {print $8}' \
  | grep -E '^(resty_ffi_envoy_envoy_dynamic_module_on_|ngx_http_lua_ffi_|resty_ffi_)' > "$out/exported.txt"
# Drop the LLVM bitcode Rust embeds (binutils' LTO plugin chokes on it).
objcopy --keep-global-symbols="$out/exported.txt" --remove-section=.llvmbc --remove-section=.llvmcmd \
  "$out/resty_ffi_envoy.o"
rm -f "$out/libresty_ffi_envoy_static.a"
ar rcs "$out/libresty_ffi_envoy_static.a" "$out/resty_ffi_envoy.o"
rm -f "$out/resty_ffi_envoy.o"
echo "$out/libresty_ffi_envoy_static.a"
