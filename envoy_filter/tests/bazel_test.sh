#!/usr/bin/env bash
# Bazel entry point: runs run_all.sh from the real source tree (cargo keeps
# its incremental target/ there).
set -euo pipefail
workspace=$(dirname "$(readlink -f Cargo.toml)")
exec "$workspace/envoy_filter/tests/run_all.sh"
