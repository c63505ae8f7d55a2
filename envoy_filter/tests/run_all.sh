#!/usr/bin/env bash
# Builds what the Envoy host tests need and runs them all (or those named as
# arguments), each with its own Envoy on 127.0.0.1. Last line: `envoy: N
# passed, M failed`; exits non-zero on any failure.
#
# A script fails here, whatever its summary line says, when it exits non-zero
# (a crash, RESTY_FFI_SCRIPT_TIMEOUT seconds passed: default 300), prints no
# summary, or runs fewer cases (its PASS/FAIL/SKIP lines; test_diff.py's
# KNOWN lines too) than CASES below
# declares for it (SKIP lines count: static mode skips what it cannot run),
# or runs no case at all (all skipped, or a filter, RESTY_FFI_ENVOY_CASES,
# that matches nothing): a case renamed out of its script's collection, or a
# collection that finds nothing, must not pass silently.
set -uo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

# The cases each script has (at least). Update the number with the cases:
# more than declared passes (and says so), fewer fails.
declare -A CASES=(
  [test_readme.py]=2
  [test_ffi.py]=34
  [test_fixture.py]=8
  [test_reliability.py]=14
  [test_c_modules.py]=5
  [test_shared.py]=1
  [test_shdict.py]=10
  [test_runtimes.py]=9
  [test_java.py]=6
  [test_nodejs.py]=6
  [test_convert.py]=23
  [test_diff.py]=118
  [test_lua_neighbours.py]=2
  [test_mixed_calls.py]=2
  [test_extensions.py]=10
)
script_timeout=${RESTY_FFI_SCRIPT_TIMEOUT:-300}

passed=0 failed=0
if ! cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_envoy -p rust_echo; then
  echo "envoy: 0 passed, 1 failed"
  exit 1
fi

# test_ffi.py runs twice: Envoy with one worker thread, then two.
tests=(test_readme.py test_ffi.py:1 test_ffi.py:2 test_fixture.py test_reliability.py test_c_modules.py test_shared.py
       test_shdict.py test_runtimes.py test_java.py test_nodejs.py test_convert.py test_diff.py test_lua_neighbours.py
       test_mixed_calls.py test_extensions.py)
[ $# -eq 0 ] || tests=("$@")
for test in "${tests[@]}"; do
  echo "== $test"
  script=${test%%:*}
  case "$test" in
    *.py:*) cmd=(env ENVOY_CONCURRENCY="${test##*:}" python3 "$here/$script") ;;
    *.py) cmd=(python3 "$here/$test") ;;
    *) cmd=("$here/$test") ;;
  esac
  log=$(mktemp)
  timeout "$script_timeout" "${cmd[@]}" 2>&1 | grep -v "no configured limit to the number of allowed active downstream" | tee "$log"
  status=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  ran=$(grep -cE '^(PASS|FAIL|SKIP|KNOWN) ' "$log")
  ran_not_skipped=$(grep -cE '^(PASS|FAIL|KNOWN) ' "$log")
  rm -f "$log"
  declared=${CASES[$script]:-}
  problems=()
  if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $1}')))
    failed=$((failed + $(echo "$summary" | awk '{print $3}')))
  else
    problems+=("no summary line")
  fi
  if [ "$status" -eq 124 ]; then
    problems+=("timed out after ${script_timeout}s")
  elif [ "$status" -ne 0 ] && { [ -z "$summary" ] || [ "$(echo "$summary" | awk '{print $3}')" -eq 0 ]; }; then
    problems+=("exited with status $status")  # (failed cases are counted already)
  fi
  if [ "$ran_not_skipped" -eq 0 ]; then
    problems+=("no case ran${RESTY_FFI_ENVOY_CASES:+ (RESTY_FFI_ENVOY_CASES=$RESTY_FFI_ENVOY_CASES)}")
  fi
  if [ -z "$declared" ]; then
    problems+=("no case count declared for $script in run_all.sh")
  elif [ -n "${RESTY_FFI_ENVOY_CASES:-}" ]; then
    :  # a filter runs some of the cases
  elif [ "$ran" -lt "$declared" ]; then
    problems+=("ran $ran cases, run_all.sh declares $declared")
  elif [ "$ran" -gt "$declared" ]; then
    echo "$test: ran $ran cases, more than the $declared declared: update CASES in run_all.sh"
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    joined=$(printf '; %s' "${problems[@]}")
    echo "$test: FAILED: ${joined#; }"
    failed=$((failed + 1))
  fi
done

echo "envoy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
