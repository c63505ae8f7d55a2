#!/usr/bin/env bash
# Benchmark (not a test): stock Lua filter respond vs ours respond vs ours +
# ffi echo, at 32 and 1 connections, in one Envoy run. Needs wrk (Debian).
# BENCH_SECONDS (default 5) and BENCH_RUNS (default 3) tune the length.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$here/bench.py"
