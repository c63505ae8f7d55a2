#!/usr/bin/env bash
# The demo: builds everything, starts nginx (and Envoy) on 127.0.0.1 with the
# Rust echo runtime, and asks each for /echo. `ci/demo.sh stop` stops them.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo="$root/target/demo"
nginx_prefix="$demo/nginx"
envoy_pid_file="$demo/envoy.pid"

stop() {
  if [[ -f "$nginx_prefix/logs/nginx.pid" ]]; then
    kill -QUIT "$(cat "$nginx_prefix/logs/nginx.pid")" 2>/dev/null || true
    rm -f "$nginx_prefix/logs/nginx.pid"
  fi
  if [[ -f "$envoy_pid_file" ]]; then
    kill "$(cat "$envoy_pid_file")" 2>/dev/null || true
    rm -f "$envoy_pid_file"
  fi
}

wait_for() {
  for _ in $(seq 1 100); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "ci/demo.sh: $1 did not answer" >&2
  return 1
}

if [[ "${1:-}" == "stop" ]]; then
  stop
  exit 0
fi

cd "$root"
bash ci/install.sh
bazel build //... 2>&1 | grep -E "^(ERROR|FAILED)" && exit 1
stop

mkdir -p "$nginx_prefix"/{logs,modules,lua,runtimes}
cp -f bazel-bin/nginx_module/ngx_http_resty_ffi_module.so bazel-bin/nginx_module/libresty_ffi.so "$nginx_prefix/modules/"
cp -f lua/resty_ffi.lua examples/nginx/resty_ffi_metrics.lua "$nginx_prefix/lua/"
cp -f bazel-bin/cargo/librust_echo.so "$nginx_prefix/runtimes/"
LD_LIBRARY_PATH="$nginx_prefix/runtimes" nohup nginx -p "$nginx_prefix" -c "$root/examples/nginx/nginx.conf" \
  >"$nginx_prefix/logs/stderr.log" 2>&1 &

nohup examples/envoy/run.sh >"$demo/envoy.log" 2>&1 &
echo $! >"$envoy_pid_file"

wait_for "http://127.0.0.1:8080/echo?ping"
echo "nginx: curl http://127.0.0.1:8080/echo -d 'hello resty_ffi'"
curl -sS http://127.0.0.1:8080/echo -d 'hello resty_ffi'
wait_for "http://127.0.0.1:10000/"
echo "envoy: curl http://127.0.0.1:10000/"
curl -sS http://127.0.0.1:10000/
echo
echo "(stop both with: ci/demo.sh stop)"
