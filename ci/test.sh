#!/usr/bin/env bash
# The whole test suite: installs prerequisites, then `bazel test //...`
# (every test runs each time: our tests read the machine's state, which
# Bazel's cached results would not see).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash ci/install.sh
log=$(mktemp)
set +e
bazel test --nocache_test_results //... >"$log" 2>&1
status=$?
set -e
grep -vE "linux-sandbox|^\[|^(Loading|Analyzing)" "$log" || true
passed=$(grep -cE "^//\S+\s+(\(cached\)\s+)?PASSED" "$log" || true)
failed=$(grep -cE "^//\S+\s+(FAILED|TIMEOUT|NO STATUS)" "$log" || true)
rm -f "$log"
echo "bazel: $passed passed, $failed failed"
exit "$status"
