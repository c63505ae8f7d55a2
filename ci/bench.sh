#!/usr/bin/env bash
# Every benchmark in one command (benchmarks, not tests), then a report:
#   ci/bench.sh                 core, nginx, Envoy, shared dicts, gRPC; rewrites
#                               docs/benchmarks.md and its plots (docs/benchmarks/*.png)
#   ci/bench.sh envoy [nginx]   only those parts (core, nginx, envoy, shdict, grpc); report
#                               in target/bench/report.md
# BENCH_SECONDS (5) per measurement and BENCH_RUNS (3) rounds: BENCH_SECONDS=1
# BENCH_RUNS=1 for a quick look. The drivers' own knobs pass through (see
# docs/benchmarks.md). Each step prints a progress line with the load average.
set -euo pipefail
# (`bazel run //ci:bench` runs it from its runfiles: the tree is BUILD_WORKSPACE_DIRECTORY.)
root=${BUILD_WORKSPACE_DIRECTORY:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
all=(core nginx envoy shdict grpc)
steps=("$@")
if ((${#steps[@]} == 0)); then
  steps=("${all[@]}")
fi
for step in "${steps[@]}"; do
  case "$step" in
    core | nginx | envoy | shdict | grpc) ;;
    *) echo "ci/bench.sh: unknown step '$step' (core, nginx, envoy, shdict, grpc)" >&2; exit 2 ;;
  esac
done

bash ci/install.sh
results="${BENCH_RESULTS:-$root/target/bench}"
export BENCH_RESULTS="$results"
mkdir -p "$results"

n=0
for step in "${steps[@]}"; do
  n=$((n + 1))
  rm -f "$results/$step.json"
  echo "[bench] step $n/${#steps[@]}: $step ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
  case "$step" in
    core) python3 ci/bench/core.py ;;
    nginx) python3 nginx_module/bench/bench.py ;;
    envoy) python3 envoy_filter/bench/bench.py ;;
    shdict) python3 ci/bench_shdict.py ;;
    grpc) bazel build //grpc:grpc //nginx_module:module //:cargo_release && python3 grpc/bench/bench.py ;;
  esac
done

if [[ "${steps[*]}" == "${all[*]}" ]]; then
  report=docs/benchmarks.md plots=docs/benchmarks
else
  report="$results/report.md" plots="$results/plots"
fi
python3 ci/bench/report.py "$report" "$plots" "${steps[@]}"
echo "[bench] done ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)): $report"
