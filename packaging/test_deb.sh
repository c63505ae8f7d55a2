#!/usr/bin/env bash
# The .deb as a Debian user installs it: docs/getting-started.md's "deb" blocks
# (`apt install ./the.deb`, then a location with only content_by_lua_block and
# require("resty_ffi")) on this machine's Debian nginx + libnginx-mod-http-lua.
# nginx runs with a config of its own (pid, log, a free port on 127.0.0.1) that
# loads modules exactly as Debian's nginx.conf does: `include
# /etc/nginx/modules-enabled/*.conf;`, no load_module, no lua_package_path.
# Then `apt purge`, and the machine is as it was (also on failure: a trap).
# test_deb.sh [path of the .deb]   (default: Bazel's runfiles, else bazel-bin)
set -euo pipefail
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root=$(dirname "$(readlink -f Cargo.toml)")
  deb=$(readlink -f packaging/resty_ffi_nginx.deb)
else
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  deb=$(readlink -f "${1:-$root/bazel-bin/packaging/resty_ffi_nginx.deb}")
fi
pkg=libnginx-mod-http-resty-ffi
enabled=/etc/nginx/modules-enabled
apt_opts=(-y -q -o DPkg::Lock::Timeout=300)   # other work may hold dpkg's lock for a while
export DEBIAN_FRONTEND=noninteractive

if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
  echo "test_deb.sh: $pkg is installed on this machine; the test installs and purges it: apt purge $pkg first" >&2
  exit 1
fi

passed=0 failed=0
check() {   # check <what> <command...>
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1)); echo "PASS $what"
  else
    failed=$((failed + 1)); echo "FAIL $what"
  fi
}

snapshot() { ls -l --time-style=+ "$enabled" | sed 1d; }
before=$(snapshot)
work=$(mktemp -d /tmp/resty_ffi_deb.XXXXXX)
chmod 755 "$work"   # nginx's workers (www-data) read the runtime there
nginx_pid=

cleanup() {
  local status=$?
  if [[ -n "$nginx_pid" ]] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill -QUIT "$nginx_pid"
    for _ in $(seq 1 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nginx_pid" 2>/dev/null || true
  fi
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "installed"; then
    apt-get purge "${apt_opts[@]}" "$pkg" >/dev/null 2>&1 || dpkg --purge "$pkg" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  if [[ "$(snapshot)" != "$before" ]]; then
    echo "test_deb.sh: $enabled differs from before the test:" >&2
    diff <(echo "$before") <(snapshot) >&2 || true
    status=1
  fi
  exit "$status"
}
trap cleanup EXIT

# The guide's blocks marked `<!-- test: deb -->`: the install command, the location.
python3 - "$root/docs/getting-started.md" "$work" <<'PY'
import re, sys, pathlib
text = pathlib.Path(sys.argv[1]).read_text()
blocks = re.findall(r"<!-- test: deb -->\n```\w*\n(.*?)```\n", text, re.S)
assert len(blocks) == 2, blocks
pathlib.Path(sys.argv[2], "install.sh").write_text(blocks[0])
pathlib.Path(sys.argv[2], "location.conf").write_text(blocks[1])
PY
install_cmd=$(cat "$work/install.sh")
[[ "$install_cmd" =~ ^apt\ install\ \./target/dist/libnginx-mod-http-resty-ffi_[^\ ]*\.deb$'\n'?$ ]] \
  || { echo "unexpected install block: $install_cmd" >&2; exit 1; }

# 1. apt install ./the.deb (the guide's command, non-interactive, with our file).
echo "+ apt install ./$(basename "$deb")"
apt install "${apt_opts[@]}" "$deb" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
check "installed" dpkg-query -W "$pkg"
check "module enabled after the Lua module" test "$(ls "$enabled" | grep -E 'mod-http-(lua|resty-ffi)\.conf$' | tr '\n' ' ')" \
  = "50-mod-http-lua.conf 60-mod-http-resty-ffi.conf "
check "resty_ffi.lua on the Lua module's default path" test -f /usr/share/lua/5.1/resty_ffi.lua

# 2. A runtime, the guide's way (the C template), where www-data can read it.
cp -r "$root/examples/templates/c" "$work/my_runtime"
make -s -C "$work/my_runtime"

# 3. nginx, loading modules as Debian's nginx.conf does, and the guide's location.
grep -qx 'include /etc/nginx/modules-enabled/\*.conf;' /etc/nginx/nginx.conf \
  || echo "note: /etc/nginx/nginx.conf lacks Debian's include of modules-enabled (edited here?)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s|/srv/resty_ffi_demo|$work|g" "$work/location.conf" >"$work/location.sub"
cat >"$work/nginx.conf" <<CONF
user www-data;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log info;
include /etc/nginx/modules-enabled/*.conf;
events { worker_connections 256; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port;
$(cat "$work/location.sub")
    }
}
CONF
nginx -c "$work/nginx.conf" -g "daemon off;" >"$work/stdout.log" 2>&1 &
nginx_pid=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/stdout.log" "$work/error.log" >&2; exit 1; }
  sleep 0.1
done
check "the runtime answers" test "$(curl -s "http://127.0.0.1:$port/upper?text=hello")" = "HELLO"
check "the runtime's error answers" test "$(curl -s "http://127.0.0.1:$port/upper?text=")" = "error 22: empty request"
kill -QUIT "$nginx_pid"
for _ in $(seq 1 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
check "nginx quit" bash -c "! kill -0 $nginx_pid 2>/dev/null"
check "no alert in nginx's log" bash -c "! grep -E '\[(alert|emerg)\]|exited on signal' '$work/error.log'"

# 4. apt purge: nothing left.
apt-get purge "${apt_opts[@]}" "$pkg" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
check "purged" bash -c "! dpkg-query -W -f='\${Status}' $pkg 2>/dev/null | grep -q installed"
check "no file left" bash -c "! ls /usr/lib/nginx/modules/ngx_http_resty_ffi_module.so /usr/lib/nginx/modules/libresty_ffi.so /usr/share/lua/5.1/resty_ffi.lua /usr/share/nginx/modules-available/mod-http-resty-ffi.conf 2>/dev/null"
check "modules-enabled as before" test "$(snapshot)" = "$before"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
