#!/usr/bin/env bash
# What each build of the filter needs and exports, checked mechanically.
# - The cdylib for the stock Envoy exports the hooks and the resty_ffi C ABI and
#   no lua_*: it imports every lua_* it uses from the Envoy binary.
# - The static archive for a custom Envoy, both flavours (static/build.sh and
#   static/build.sh vendored): hooks carry the static-module prefix; only they
#   and the resty_ffi C ABI are global (Rust's std and a vendored LuaJIT are
#   local); from Envoy it needs only what the stock 1.40 binary exports; the
#   rest comes from libc and libgcc, no newer than the glibc Envoy itself needs.
# - The recipe of docs/envoy.md (its cc_import and linkopts block, read from the
#   doc) links each archive into a stand-in for envoy-static together with a
#   LuaJIT linked whole, as Envoy's Lua filter brings it: no clash, and the
#   stand-in resolves the module as Envoy does and lets a runtime library bind.
# Running the integration tests through the archive: check_custom_envoy.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy -p rust_echo
declare -A archive=([default]=$("$root/envoy_filter/static/build.sh")
                    [vendored]=$("$root/envoy_filter/static/build.sh" vendored))
# The stock 1.40 binary: the reference for what Envoy exports.
envoy=$(python3 -c "import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / '_bin' / 'envoy')")
luajit=/usr/lib/x86_64-linux-gnu/libluajit-5.1.a   # libluajit2-5.1-dev: stands for Envoy's LuaJIT
libdir=/lib/x86_64-linux-gnu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() {  # check NAME COMMAND...
  if "${@:2}"; then passed=$((passed + 1)); echo "PASS $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}
none() {  # none FILE: passes when FILE is empty, else shows it
  [ ! -s "$1" ] || { sed 's/^/  unexpected: /' "$1" >&2; false; }
}
subset() {  # subset A B: every line of A is in B (both sorted)
  comm -23 "$1" "$2" > "$tmp/extra"; none "$tmp/extra"
}

nm -D --defined-only "$envoy" | awk '{print $3}' | sort -u > "$tmp/envoy_exports"
# The newest glibc symbol version the Envoy binary itself needs.
glibc_floor=$(readelf -V --wide "$envoy" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
# Every symbol libc, libm, libgcc_s and the dynamic loader define, with the
# oldest version each is available in.
for lib in libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2; do
  readelf --dyn-syms --wide "$libdir/$lib" | awk '$7 != "UND" && $8 ~ /@/ {sub(/@+/, " ", $8); print $8}'
done | sort -k1,1 -k2,2V | awk '!seen[$1]++' > "$tmp/system_syms"

# ------------------------------------------------------------------ cdylib --
cdylib=$root/target/release/libresty_ffi_envoy.so
nm -D --defined-only "$cdylib" | awk 'NF == 3 {print $3}' | sort > "$tmp/dynamic"
check "cdylib_exports_hooks_and_abi" bash -c "grep -qx envoy_dynamic_module_on_program_init '$tmp/dynamic' && grep -qx ngx_http_lua_ffi_task_poll '$tmp/dynamic' && grep -qx resty_ffi_sink_drain '$tmp/dynamic'"
check "cdylib_exports_no_lua" bash -c "! grep -qiE '^(lua|luaL|luaJIT)_' '$tmp/dynamic'"
nm -D --undefined-only "$cdylib" | awk '{print $2}' | sed 's/@.*//' | grep -E '^(lua|luaL|luaJIT|luaopen)_' | sort > "$tmp/lua_imports"
check "cdylib_imports_lua_from_envoy" eval "[ -s '$tmp/lua_imports' ] && subset '$tmp/lua_imports' '$tmp/envoy_exports'"

# ---------------------------------------------------------------- archives --
# Every hook the header declares, with the static prefix.
grep -oE 'envoy_dynamic_module_on_[a-z_]+' "$root/envoy_filter/abi/envoy_abi.h" | sort -u \
  | sed 's/^/resty_ffi_envoy_/' > "$tmp/hooks"
exported_re='^(resty_ffi_envoy_envoy_dynamic_module_on_|ngx_http_lua_ffi_|resty_ffi_)'
lua_re='^(lua|luaL|luaJIT|luaopen)_'

for flavour in default vendored; do
  lib=${archive[$flavour]}
  d=$tmp/$flavour && mkdir -p "$d"
  nm -g --defined-only "$lib" | awk 'NF == 3 {print $3}' | sort -u > "$d/defined"
  nm -u "$lib" | awk '$1 == "U" {print $2}' | sort -u > "$d/needs"
  nm -u "$lib" | awk '$1 == "w" {print $2}' | sort -u > "$d/weak"
  grep -E '^envoy_dynamic_module_callback_' "$d/needs" > "$d/needs_callbacks" || true
  grep -E "$lua_re" "$d/needs" > "$d/needs_lua" || true
  # _GLOBAL_OFFSET_TABLE_ is made by the linker itself.
  grep -vE "^envoy_dynamic_module_callback_|$lua_re|^_GLOBAL_OFFSET_TABLE_$" "$d/needs" > "$d/needs_system" || true
  join "$d/needs_system" "$tmp/system_syms" > "$d/system_versions" || true

  check "${flavour}_all_hooks_prefixed" subset "$tmp/hooks" "$d/defined"
  check "${flavour}_no_unprefixed_hooks" eval "! grep '^envoy_dynamic_module_on_' '$d/defined'"
  check "${flavour}_runtime_abi_exported" eval "for s in ngx_http_lua_ffi_task_poll ngx_http_lua_ffi_get_req ngx_http_lua_ffi_respond resty_ffi_runtime_load resty_ffi_sink_drain resty_ffi_shdict_get resty_ffi_shdict_set resty_ffi_shdict_incr resty_ffi_shdict_delete; do grep -qx \$s '$d/defined' || exit 1; done"
  check "${flavour}_nothing_else_global" eval "grep -vE '$exported_re' '$d/defined' > '$d/other'; none '$d/other'"
  check "${flavour}_no_clash_with_envoy_exports" eval "comm -12 '$d/defined' '$tmp/envoy_exports' > '$d/clash'; none '$d/clash'"
  check "${flavour}_needs_only_callbacks_envoy_exports" eval "[ -s '$d/needs_callbacks' ] && subset '$d/needs_callbacks' '$tmp/envoy_exports'"
  if [ "$flavour" = default ]; then
    check "default_needs_lua_api_envoy_exports" eval "[ -s '$d/needs_lua' ] && subset '$d/needs_lua' '$tmp/envoy_exports'"
  else
    check "vendored_needs_no_lua_api" none "$d/needs_lua"
    nm "$lib" > "$d/symbols"
    check "vendored_luajit_is_local" eval "grep -qE ' t lua_newstate$' '$d/symbols' && ! grep -qE '$lua_re' '$d/defined'"
  fi
  check "${flavour}_needs_otherwise_only_libc_libm_libgcc" eval "cut -d' ' -f1 '$d/system_versions' | comm -13 - '$d/needs_system' > '$d/missing'; none '$d/missing'"
  # stat64 & co. are functions of libc.so.6 since glibc 2.33; older glibc
  # links them from libc_nonshared.a, so they do not raise the floor.
  newer() {
    grep ' GLIBC_' "$d/system_versions" | grep -vE '^(f|l)?stat(at)?64 ' | while read -r sym ver; do
      [ "$(printf '%s\n%s\n' "$ver" "$glibc_floor" | sort -V | tail -1)" = "$glibc_floor" ] || echo "$sym $ver"
    done > "$d/newer"
    none "$d/newer"
  }
  check "${flavour}_glibc_no_newer_than_envoy_needs_${glibc_floor}" newer
  echo "INFO $flavour: needs $(wc -l < "$d/needs_callbacks") Envoy callbacks, $(wc -l < "$d/needs_lua") LuaJIT API" \
       "functions, $(grep -c ' GLIBC_' "$d/system_versions") from libc/libm, from libgcc_s:" \
       "$(grep ' GCC_' "$d/system_versions" | cut -d' ' -f1 | tr '\n' ' ')"
  echo "INFO $flavour: weak, used when present: $(tr '\n' ' ' < "$d/weak")"
done

# ------------------------------------------ the recipe of docs/envoy.md ------
# The doc's block: a cc_import with alwayslink (= --whole-archive) and linkopts.
sed -n '/^cc_import(/,/^#   \]/p' "$root/docs/envoy.md" > "$tmp/recipe"
linkopts=()
while read -r opt; do linkopts+=("$opt"); done < <(sed -n '/linkopts += \[/,/\]/p' "$tmp/recipe" | grep -oE '"[^"]+"' | tr -d '"')
check "doc_recipe_found" eval "grep -q 'alwayslink = True' '$tmp/recipe' && [ ${#linkopts[@]} -gt 0 ]"
echo "INFO linkopts from docs/envoy.md: ${linkopts[*]}"

# The stand-in does what Envoy does for `name: resty_ffi_envoy`, what
# resty_ffi.lua's ffi.C does, and what ngx.load_ffi does with a runtime.
cat > "$tmp/standin.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
#include <luajit-2.1/lauxlib.h>
#include <luajit-2.1/lualib.h>
int main(int argc, char **argv) {
  (void)argc;
  const char *(*init)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "resty_ffi_envoy_envoy_dynamic_module_on_program_init");
  if (!init || !dlsym(RTLD_DEFAULT, "resty_ffi_sink_drain")) { printf("not exported\n"); return 1; }
  if (!dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) { printf("%s\n", dlerror()); return 1; }
  lua_State *L = luaL_newstate();  /* the stand-in's own LuaJIT still works */
  luaL_openlibs(L);
  if (luaL_dostring(L, "return tostring(6 * 7)") != 0) { printf("lua failed\n"); return 1; }
  printf("%s %s\n", init(), lua_tostring(L, -1));
  lua_close(L);
  return 0;
}
C
for flavour in default vendored; do
  d=$tmp/$flavour
  # Envoy's callbacks, as functions that must never run here.
  sed 's/.*/void &(void) { __builtin_trap(); }/' "$d/needs_callbacks" > "$d/callbacks.c"
  standin=$d/envoy-static
  check "${flavour}_doc_recipe_links_with_whole_luajit" \
    cc -o "$standin" "$tmp/standin.c" "$d/callbacks.c" -Wl,--whole-archive "${archive[$flavour]}" "$luajit" \
       -Wl,--no-whole-archive "${linkopts[@]}"
  nm -D --defined-only "$standin" 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u > "$d/standin_exports"
  check "${flavour}_standin_exports_hooks_and_abi" eval "grep -E '$exported_re' '$d/defined' | comm -23 - '$d/standin_exports' > '$d/unexported'; none '$d/unexported'"
  check "${flavour}_standin_resolves_module_and_runtime" \
    eval "[ \"\$('$standin' '$root/target/release/librust_echo.so')\" = 'v0.2.0 42' ]"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
