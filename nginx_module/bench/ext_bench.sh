#!/usr/bin/env bash
# Benchmark of the runtime ABI extensions (issue 15), one nginx run, one worker:
# the C test runtime polling with task_poll vs resty_ffi_task_poll_many (64 per
# call) vs queue_fd + try_poll, at 1 and 1,000 concurrent coroutines; ROUNDS
# rounds with the modes interleaved, medians and ratios to task_poll printed.
# Then each event-loop runtime against its thread-based version, at 1,000
# coroutines: the Rust SDK's serve_async (tokio AsyncFd on the queue fd) vs
# serve_on_poll_thread, the Node.js loader's serve (uv_poll on its own loop)
# vs { pollThread: true }, the Go echo's netpoller vs a goroutine in task_poll.
# With BASE=<dir> (a build of another commit: <dir>/module/ngx_http_resty_ffi_module.so
# and <dir>/lua/resty_ffi.lua), also the rust_echo 1,000-coroutine throughput
# of both builds, interleaved (the cost of the stats counting).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/nginx-ext-bench"
n=${N:-200000}
rounds=${ROUNDS:-5}
mkdir -p "$out"/{runtimes,new/conf,new/logs,base/conf,base/logs}

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi -p rust_echo
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi_sdk --example async_echo
cp -f "$root/target/release/examples/libasync_echo.so" "$out/runtimes/"
"$root/examples/go_echo/build.sh" "$out/runtimes/libgo_echo.so"
"$root/examples/nodejs/build.sh" "$out/runtimes/libffi_nodejs.so" "$root/target/release/include"
"$root/nginx_module/build.sh" "$out/module" "$root/target/release/include" "$root/target/release" >/dev/null
cp -f "$root/target/release/librust_echo.so" "$out/runtimes/"
cc -O2 -shared -fPIC -pthread -I"$root/target/release/include" \
  -o "$out/runtimes/libtest_runtime.so" "$root/nginx_module/t/runtimes/test_runtime.c"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start <prefix> <module dir> <lua dir>: prints the port
start() {
  local prefix=$1 module=$2 lua=$3 port
  port=$(free_port)
  cat >"$prefix/conf/nginx.conf" <<CONF
user root;
daemon off;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
env NODE_PATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module $module/ngx_http_resty_ffi_module.so;
events { worker_connections 4096; }
http {
    access_log off;
    lua_package_path "$lua/?.lua;$here/?.lua;;";
    server {
        listen 127.0.0.1:$port;
        location /concurrent { content_by_lua_block { require("bench").concurrent() } }
    }
}
CONF
  NODE_PATH="$root/examples/nodejs" LD_LIBRARY_PATH="$out/runtimes" nginx -p "$prefix" -c conf/nginx.conf >"$prefix/logs/stdout.log" 2>&1 &
  echo $! >"$prefix/pid"
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "$port"
}

pids=()
trap 'for p in "${pids[@]}"; do kill -QUIT "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT
new_port=$(start "$out/new" "$out/module" "$root/lua")
pids+=("$(cat "$out/new/pid")")

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
rate() { curl -s "http://127.0.0.1:$1/concurrent?$2" | awk '{ print $1 }'; }

# ONLY=stats runs just the comparison with BASE.
declare -A MODES=([poll]="threads=1" [poll_many]="poll=many:64" [queue_fd]="poll=fd")
for c in $([[ "${ONLY:-}" == stats ]] || echo 1 1000); do
  calls=$(( c == 1 ? n / 4 : n ))
  declare -A results=()
  for _ in $(seq 1 "$rounds"); do
    for mode in poll poll_many queue_fd; do
      results[$mode]+="$(rate "$new_port" "n=$calls&c=$c&lib=test_runtime&cfg=${MODES[$mode]}") "
    done
  done
  base=$(echo "${results[poll]}" | tr ' ' '\n' | grep . | median)
  for mode in poll poll_many queue_fd; do
    m=$(echo "${results[$mode]}" | tr ' ' '\n' | grep . | median)
    printf 'c=%-5s %-10s median %9s calls/s  (%s)  ratio to task_poll %.2f\n' "$c" "$mode" "$m" \
      "$(echo ${results[$mode]})" "$(awk -v a="$m" -v b="$base" 'BEGIN { print a / b }')"
  done
  unset results
done

# compare <label> <query A (event loop)> <query B (thread)>
compare() {
  local a="" b="" am bm
  for _ in $(seq 1 "$rounds"); do
    a+="$(rate "$new_port" "$2") "
    b+="$(rate "$new_port" "$3") "
  done
  am=$(echo "$a" | tr ' ' '\n' | grep . | median)
  bm=$(echo "$b" | tr ' ' '\n' | grep . | median)
  printf '%-8s event loop median %9s calls/s (%s), thread %9s (%s), ratio %.2f\n' "$1" "$am" "$(echo $a)" \
    "$bm" "$(echo $b)" "$(awk -v a="$am" -v b="$bm" 'BEGIN { print a / b }')"
}
for conc in $([[ "${ONLY:-}" == stats ]] || echo 1 1000); do
  c="n=$(( conc == 1 ? n / 20 : n / 2 ))&c=$conc"
  echo "c=$conc:"
  compare rust "$c&lib=async_echo&cfg=fd" "$c&lib=async_echo&cfg=thread"
  compare node "$c&lib=ffi_nodejs&cfg=demo/log,init&global=1" "$c&lib=ffi_nodejs&cfg=demo/log,init,thread&global=1"
  compare go "$c&lib=go_echo&cfg=netpoll" "$c&lib=go_echo&cfg=plain"
done

if [[ -n "${BASE:-}" ]]; then
  base_port=$(start "$out/base" "$BASE/module" "$BASE/lua")
  pids+=("$(cat "$out/base/pid")")
  new_rates="" base_rates=""
  # Which build goes first alternates from round to round.
  for round in $(seq 1 "$rounds"); do
    if (( round % 2 )); then
      new_rates+="$(rate "$new_port" "n=$((n * 5))&c=1000&threads=1") "
      base_rates+="$(rate "$base_port" "n=$((n * 5))&c=1000&threads=1") "
    else
      base_rates+="$(rate "$base_port" "n=$((n * 5))&c=1000&threads=1") "
      new_rates+="$(rate "$new_port" "n=$((n * 5))&c=1000&threads=1") "
    fi
  done
  nm=$(echo "$new_rates" | tr ' ' '\n' | grep . | median)
  bm=$(echo "$base_rates" | tr ' ' '\n' | grep . | median)
  printf 'rust_echo c=1000: this build median %s calls/s (%s), base %s (%s), ratio %.3f\n' \
    "$nm" "$(echo $new_rates)" "$bm" "$(echo $base_rates)" "$(awk -v a="$nm" -v b="$bm" 'BEGIN { print a / b }')"
fi
