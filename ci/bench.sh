#!/usr/bin/env bash
# Benchmarks that print ratios against a baseline measured in the same run.
# Today: gRPC unary calls from Lua on nginx and Envoy vs the same tonic client
# called directly from Rust (grpc/bench/bench.py). Args go to it (CALLS).
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build //grpc:grpc //nginx_module:module //:cargo_release
exec python3 grpc/bench/bench.py "$@"
