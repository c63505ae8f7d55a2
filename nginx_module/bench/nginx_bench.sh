#!/usr/bin/env bash
# nginx benchmark (not a test): resty_ffi echo vs a Unix-socket echo server per
# payload size, concurrency, wrk with 1 and 2 workers, idle CPU. See bench.py;
# ci/bench.sh runs it with the other benchmarks.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
exec python3 "$(dirname "${BASH_SOURCE[0]}")/bench.py" "$@"
