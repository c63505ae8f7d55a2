#!/usr/bin/env bash
# Bazel entry point of //envoy_filter:static_test(s): the static archives'
# symbols and the docs/envoy.md link recipe (test_static.sh), then the Envoy
# suite through the archive (check_custom_envoy.sh, given this script's
# arguments), from the real source tree (cargo keeps its target/ there).
set -euo pipefail
tests=$(dirname "$(readlink -f Cargo.toml)")/envoy_filter/tests
"$tests/test_static.sh"
exec "$tests/check_custom_envoy.sh" "$@"
