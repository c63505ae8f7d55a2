#!/usr/bin/env bash
# Exported symbols. The cdylib exports the hooks and the resty_ffi C ABI, and no
# lua_*: it runs scripts on the LuaJIT that the Envoy binary exports, so every
# lua_* it needs must be there. The static library for a custom Envoy: hooks
# carry the static-module prefix, the resty_ffi C ABI is exported, nothing else
# (no Rust std) is, and a program linked against it gets "v0.2.0" from the
# prefixed program_init.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy
lib=$("$root/envoy_filter/static/build.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() {  # check NAME COMMAND...
  if "${@:2}"; then passed=$((passed + 1)); echo "PASS $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}

nm -D --defined-only "$root/target/release/libresty_ffi_envoy.so" | awk 'NF == 3 {print $3}' | sort > "$tmp/dynamic"
check "cdylib_exports_hooks_and_abi" bash -c "grep -qx envoy_dynamic_module_on_program_init '$tmp/dynamic' && grep -qx ngx_http_lua_ffi_task_poll '$tmp/dynamic' && grep -qx resty_ffi_sink_drain '$tmp/dynamic'"
check "cdylib_exports_no_lua" bash -c "! grep -qiE '^(lua|luaL|luaJIT)_' '$tmp/dynamic'"
envoy=$(python3 -c "import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / '_bin' / 'envoy')")
nm -D --defined-only "$envoy" | awk '{print $3}' | sort > "$tmp/envoy_exports"
nm -D --undefined-only "$root/target/release/libresty_ffi_envoy.so" | awk '{print $2}' | sed 's/@.*//' \
  | grep -E '^(lua|luaL|luaJIT|luaopen)_' | sort > "$tmp/lua_imports"
check "cdylib_imports_lua_from_envoy" bash -c "[ -s '$tmp/lua_imports' ] && comm -23 '$tmp/lua_imports' '$tmp/envoy_exports' | tee /dev/stderr | wc -l | grep -qx 0"

nm -g --defined-only "$lib" | awk 'NF == 3 {print $3}' | sort > "$tmp/defined"
# Every hook the header declares, with the static prefix, and none without it.
grep -oE 'envoy_dynamic_module_on_[a-z_]+' "$root/envoy_filter/abi/envoy_abi.h" | sort -u \
  | sed 's/^/resty_ffi_envoy_/' > "$tmp/hooks"

check "all_hooks_prefixed" bash -c "comm -23 '$tmp/hooks' '$tmp/defined' | tee /dev/stderr | wc -l | grep -qx 0"
check "no_unprefixed_hooks" bash -c "! grep -q '^envoy_dynamic_module_on_' '$tmp/defined'"
check "runtime_abi_exported" bash -c "for s in ngx_http_lua_ffi_task_poll ngx_http_lua_ffi_get_req ngx_http_lua_ffi_respond resty_ffi_runtime_load resty_ffi_sink_drain; do grep -qx \$s '$tmp/defined' || exit 1; done"
check "nothing_else_exported" bash -c "! grep -vE '^(resty_ffi_envoy_envoy_dynamic_module_on_|ngx_http_lua_ffi_|resty_ffi_)' '$tmp/defined'"

cat > "$tmp/main.c" <<'C'
#include <stdio.h>
const char *resty_ffi_envoy_envoy_dynamic_module_on_program_init(void);
int main(void) { puts(resty_ffi_envoy_envoy_dynamic_module_on_program_init()); return 0; }
C
# Envoy's callbacks are left unresolved: this program only calls program_init.
link_and_run() {
  cc -o "$tmp/main" "$tmp/main.c" "$lib" -Wl,--unresolved-symbols=ignore-all -lpthread -ldl -lm -lgcc_s \
    && [ "$("$tmp/main")" = "v0.2.0" ]
}
check "links_and_reports_abi_version" link_and_run

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
