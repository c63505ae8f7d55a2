#!/usr/bin/env bash
# Builds what the Envoy host tests need and runs them all (or those named as
# arguments), each with its own Envoy on 127.0.0.1. Last line: `envoy: N
# passed, M failed`; exits non-zero on any failure.
set -uo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

passed=0 failed=0
if ! cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy -p rust_echo; then
  echo "envoy: 0 passed, 1 failed"
  exit 1
fi

# test_ffi.py runs twice: Envoy with one worker thread, then two.
tests=(test_readme.py test_ffi.py:1 test_ffi.py:2 test_fixture.py test_reliability.py test_c_modules.py test_shared.py
       test_runtimes.py test_java.py test_nodejs.py test_convert.py test_diff.py test_lua_neighbours.py
       test_mixed_calls.py)
[ $# -eq 0 ] || tests=("$@")
for test in "${tests[@]}"; do
  echo "== $test"
  case "$test" in
    *.py:*) cmd=(env ENVOY_CONCURRENCY="${test##*:}" python3 "$here/${test%%:*}") ;;
    *.py) cmd=(python3 "$here/$test") ;;
    *) cmd=("$here/$test") ;;
  esac
  log=$(mktemp)
  timeout 600 "${cmd[@]}" 2>&1 | grep -v "no configured limit to the number of allowed active downstream" | tee "$log"
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  rm -f "$log"
  if [ -z "$summary" ]; then
    echo "$test: no summary line (crashed or timed out)"
    failed=$((failed + 1))
    continue
  fi
  passed=$((passed + $(echo "$summary" | awk '{print $1}')))
  failed=$((failed + $(echo "$summary" | awk '{print $3}')))
done

echo "envoy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
