#!/usr/bin/env bash
# nginx benchmark (issue 4): serial echo through resty_ffi vs a Unix-socket echo
# server driven by cosocket, same nginx run; concurrent throughput; CPU per call
# and while idle. Prints a table with ratios. N=100000 by default.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/nginx-bench"
n=${N:-100000}
mkdir -p "$out"/{conf,logs,runtimes}

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p resty_ffi -p rust_echo
"$root/nginx_module/build.sh" "$out/module" "$root/target/release/include" "$root/target/release"
cp -f "$root/target/release/librust_echo.so" "$out/runtimes/"
cc -O2 -pthread -o "$out/uds_echo" "$here/uds_echo.c"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sock="$out/echo.sock"
cat >"$out/conf/nginx.conf" <<CONF
user root;
daemon off;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module $out/module/ngx_http_resty_ffi_module.so;
events { worker_connections 4096; }
http {
    access_log off;
    lua_package_path "$root/lua/?.lua;$here/?.lua;;";
    server {
        listen 127.0.0.1:$port;
        location /serial { content_by_lua_block { require("bench").serial() } }
        location /concurrent { content_by_lua_block { require("bench").concurrent() } }
    }
}
CONF

"$out/uds_echo" "$sock" & uds_pid=$!
LD_LIBRARY_PATH="$out/runtimes" nginx -p "$out" -c conf/nginx.conf & nginx_pid=$!
trap 'kill $uds_pid 2>/dev/null; kill -QUIT $nginx_pid 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
worker=$(pgrep -P "$nginx_pid" | head -1)

ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
ns_per_tick=$((1000000000 / hz))

printf '%-10s %12s %12s %8s %14s %14s\n' size "ffi ns/call" "uds ns/call" speedup "ffi cpu ns" "uds cpu ns"
for size in ${SIZES:-512 4096 10240 102400}; do
  read -r ffi_ns ffi_ticks < <(curl -s "http://127.0.0.1:$port/serial?mode=ffi&n=$n&size=$size")
  uds0=$(ticks $uds_pid)
  read -r uds_ns uds_ticks < <(curl -s "http://127.0.0.1:$port/serial?mode=uds&n=$n&size=$size&sock=$sock")
  uds_server_ticks=$(( $(ticks $uds_pid) - uds0 ))
  printf '%-10s %12s %12s %7.1fx %14d %14d\n' "$size" "$ffi_ns" "$uds_ns" \
    "$(awk -v a="$uds_ns" -v b="$ffi_ns" 'BEGIN { print a / b }')" \
    $(( ffi_ticks * ns_per_tick / n )) $(( (uds_ticks + uds_server_ticks) * ns_per_tick / n ))
done

# Concurrent throughput varies from run to run on a shared 2-core VM (where
# the scheduler puts the runtime thread matters): ROUNDS runs, median shown.
c=1000
rounds=${ROUNDS:-5}
for threads in 1 2; do
  rates=() ticks_sum=0
  for _ in $(seq 1 "$rounds"); do
    read -r rate conc_ticks < <(curl -s "http://127.0.0.1:$port/concurrent?n=$((n * 10))&c=$c&threads=$threads")
    rates+=("$rate") ticks_sum=$((ticks_sum + conc_ticks))
  done
  sorted=$(printf '%s\n' "${rates[@]}" | sort -n)
  echo "concurrent: median $(echo "$sorted" | sed -n "$(( (rounds + 1) / 2 ))p") calls/s" \
    "(min $(echo "$sorted" | head -1), max $(echo "$sorted" | tail -1), $rounds runs) with $c coroutines," \
    "runtime with $threads poll thread(s), $(( ticks_sum * ns_per_tick / (n * 10 * rounds) )) ns CPU per call (worker + runtime threads)"
done

idle0=$(ticks "$worker"); sleep 3; idle1=$(ticks "$worker")
echo "idle: worker (incl. runtime threads) used $(( (idle1 - idle0) * ns_per_tick / 1000000 )) ms CPU in 3 s"
