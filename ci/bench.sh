#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md (not tests: each prints its numbers
# next to a baseline measured in the same run). Runs those named, or all:
#
#   ci/bench.sh [core] [nginx] [envoy] [shdict]
#
#   core    the core's round trip vs std::sync::mpsc + eventfd (cargo bench)
#   nginx   resty_ffi echo vs a Unix-socket echo over cosocket (N=100000)
#   envoy   stock Lua filter vs ours vs ours + ffi echo, wrk (BENCH_RUNS, BENCH_SECONDS)
#   shdict  ngx.shared: Lua get/set on Envoy vs lua-resty-core's on nginx, and
#           runtime threads' resty_ffi_shdict_* on both (BENCH_RUNS, SHDICT_BENCH_N)
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(core nginx envoy shdict)
for bench in "${benches[@]}"; do
  case "$bench" in
    core | nginx | envoy | shdict) ;;
    *) echo "ci/bench.sh: unknown benchmark '$bench' (core, nginx, envoy, shdict)" >&2; exit 2 ;;
  esac
done

for bench in "${benches[@]}"; do
  echo "=== $bench"
  case "$bench" in
    core) cargo bench --manifest-path "$root/Cargo.toml" -p resty_ffi --bench roundtrip ;;
    nginx) "$root/nginx_module/bench/nginx_bench.sh" ;;
    envoy) "$root/envoy_filter/bench/bench.sh" ;;
    shdict) python3 "$root/ci/bench_shdict.py" ;;
  esac
done
