#!/usr/bin/env bash
# Bazel entry point: runs the integration tests on the Bazel-built artifacts.
# bazel_test.sh [--valgrind] [pytest args...]
set -euo pipefail
if [[ "${1:-}" == "--valgrind" ]]; then
  export RESTY_FFI_VALGRIND=1
  shift
fi
here=$(pwd)
export RESTY_FFI_MODULE_DIR="$here/nginx_module"
export RESTY_FFI_LUA_DIR="$here/lua"
export RESTY_FFI_HEADER="$here/cargo/include/resty_ffi.h"
export RESTY_FFI_FIXTURES_DIR="$here/tests/fixtures"
export RESTY_FFI_RUNTIMES="$here/cargo:$here/nginx_module:$here/examples/go_echo:$here/examples/python:$here/examples/java:$here/examples/nodejs"
cd nginx_module/t
exec python3 -m pytest -q -p no:cacheprovider --basetemp="$TEST_TMPDIR/pytest" "$@"
