#!/usr/bin/env python3
"""Shared-dict benchmark (issue 16), nginx and Envoy in the same run:

* Lua get/set in a loop (tests/fixtures/shdict_cases.lua `bench_lua`) on one
  worker: lua-resty-core's ngx.shared on nginx (the baseline) versus the
  filter's ngx.shared on Envoy;
* runtime threads get/set through resty_ffi_shdict_* (the test runtime's
  `shdict_bench`): nginx's zones versus the filter's dicts, 1 and 2 threads.

Prints a table of medians (ops/s) with the Envoy / nginx ratios and writes
$BENCH_RESULTS/shdict.json (default target/bench). BENCH_RUNS rounds (3),
SHDICT_BENCH_N operations per measurement (1,000,000), interleaved.

    python3 ci/bench_shdict.py
"""

import datetime
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "envoy_filter" / "tests"))
import harness  # noqa: E402  (the Envoy test harness: builds and starts Envoy)

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
N = int(os.environ.get("SHDICT_BENCH_N", "1000000"))
RESULTS = pathlib.Path(os.environ.get("BENCH_RESULTS", ROOT / "target" / "bench"))
OUT = ROOT / "target" / "shdict-bench"
CARGO = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")

NGINX_CONF = """
user root;
daemon off;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module {out}/module/ngx_http_resty_ffi_module.so;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    lua_package_path "{root}/lua/?.lua;{root}/tests/fixtures/?.lua;;";
    lua_shared_dict dict 1m;
    lua_shared_dict small 64k;
    server {{
        listen 127.0.0.1:{port};
        location /lua {{
            content_by_lua_block {{ ngx.print(require('shdict_cases').bench_lua(tonumber(ngx.var.arg_n))) }}
        }}
        location /rt {{
            content_by_lua_block {{
                require('resty_ffi')
                local rt = assert(ngx.load_ffi('test_runtime', 'threads=2', {{ timeout = 600 }}))
                ngx.print(select(2, rt:call(ngx.var.arg_req)))
            }}
        }}
    }}
}}
"""

ENVOY_SCRIPT = r"""
require("resty_ffi")
local cases = require("shdict_cases")
function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  local answer
  if path:sub(1, 4) == "/lua" then
    answer = cases.bench_lua(tonumber(path:match("n=(%d+)")))
  else
    local rt = assert(ngx.load_ffi("test_runtime", "threads=2", { timeout = 600 }))
    answer = select(2, rt:call(path:match("req=(.*)$"), handle))
  end
  handle:respond({ [":status"] = "200" }, answer)
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    subprocess.run([CARGO, "build", "--quiet", "--release", "--manifest-path", str(ROOT / "Cargo.toml"),
                    "-p", "resty_ffi", "-p", "resty_ffi_envoy", "-p", "rust_echo"], check=True)
    subprocess.run([str(ROOT / "nginx_module" / "build.sh"), str(OUT / "module"),
                    str(ROOT / "target" / "release" / "include"), str(ROOT / "target" / "release")], check=True)
    harness.ensure_built()   # the test runtime for Envoy (and nginx) in harness.RUNTIMES


class Nginx:
    def __init__(self):
        self.port = free_port()
        self.prefix = pathlib.Path(tempfile.mkdtemp(prefix="shdict_bench_"))
        (self.prefix / "conf").mkdir()
        (self.prefix / "logs").mkdir()
        (self.prefix / "conf" / "nginx.conf").write_text(NGINX_CONF.format(out=OUT, root=ROOT, port=self.port))
        env = dict(os.environ, LD_LIBRARY_PATH=str(harness.RUNTIMES))
        self.proc = subprocess.Popen(["nginx", "-p", str(self.prefix), "-c", "conf/nginx.conf"], env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=600) as resp:
            return resp.read().decode()

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.prefix, ignore_errors=True)


class Envoy:
    def __init__(self):
        self.port, admin = free_port(), free_port()
        lua_path = f"{harness.LUA_DIR}/?.lua;{harness.FIXTURES}/?.lua;;"
        flt = harness.ours(ENVOY_SCRIPT, lua_package_path=lua_path, shared_dicts={"dict": "1m", "small": "64k"})
        self.envoy = harness.Envoy([harness.listener("bench", self.port, flt)], admin, concurrency=1)

    def get(self, path):
        status, _, body = harness.request(self.port, path, timeout=600)
        assert status == 200, (path, status, body)
        return body.decode()

    def stop(self):
        self.envoy.stop()


def measure(host, what):
    """(set ops/s, get ops/s) of one measurement."""
    if what == "lua":
        answer = host.get(f"/lua?n={N}")
    else:
        threads = int(what.split(":")[1])
        answer = host.get(f"/rt?req=shdict_bench:dict:{threads}:{N // threads}")
    set_ops, get_ops = answer.split("|")
    return float(set_ops), float(get_ops)


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    build()
    hosts = {"nginx": Nginx()}
    try:
        hosts["envoy"] = Envoy()
        kinds = ["lua", "runtime:1", "runtime:2"]
        samples = {(h, k): [] for h in hosts for k in kinds}
        for host in hosts.values():      # warm-up: JIT, pages of the dicts
            measure(host, "lua")
            measure(host, "runtime:1")
        for run in range(RUNS):
            for kind in kinds:
                for name, host in hosts.items():
                    samples[(name, kind)].append(measure(host, kind))
            print(f"[shdict bench] round {run + 1}/{RUNS} done, load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for host in hosts.values():
            host.stop()

    rows = []
    print(f"\n{'what':<22} {'nginx set/s':>12} {'envoy set/s':>12} {'ratio':>6} "
          f"{'nginx get/s':>12} {'envoy get/s':>12} {'ratio':>6}")
    for kind in kinds:
        ngx_set, ngx_get = (median([s[i] for s in samples[("nginx", kind)]]) for i in (0, 1))
        env_set, env_get = (median([s[i] for s in samples[("envoy", kind)]]) for i in (0, 1))
        label = "Lua, one worker" if kind == "lua" else f"runtime, {kind.split(':')[1]} thread(s)"
        print(f"{label:<22} {ngx_set:>12,.0f} {env_set:>12,.0f} {env_set / ngx_set:>5.2f}x "
              f"{ngx_get:>12,.0f} {env_get:>12,.0f} {env_get / ngx_get:>5.2f}x")
        rows.append({"kind": kind, "nginx_set": ngx_set, "envoy_set": env_set, "nginx_get": ngx_get,
                     "envoy_get": env_get})
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "shdict.json"
    path.write_text(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"), "runs": RUNS,
                                "n": N, "cores": os.cpu_count(), "load": os.getloadavg()[0], "rows": rows},
                               indent=1))
    print(f"\n(medians of {RUNS} rounds of {N:,} operations each; {path})")


if __name__ == "__main__":
    main()
