"""Fixtures that run a real nginx (Debian's, with its lua module) per test.

Environment (set by run.sh or Bazel):
  RESTY_FFI_MODULE_DIR  ngx_http_resty_ffi_module.so + libresty_ffi.so
  RESTY_FFI_LUA_DIR     the directory holding resty_ffi.lua
  RESTY_FFI_RUNTIMES    LD_LIBRARY_PATH that finds librust_echo.so and libtest_runtime.so
  RESTY_FFI_VALGRIND    if set, run nginx under valgrind (leak check)
"""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

MODULE_DIR = Path(os.environ["RESTY_FFI_MODULE_DIR"])
LUA_DIR = Path(os.environ["RESTY_FFI_LUA_DIR"])
RUNTIMES = os.environ["RESTY_FFI_RUNTIMES"]
FIXTURES = Path(os.environ.get("RESTY_FFI_FIXTURES_DIR", Path(__file__).resolve().parents[2] / "tests" / "fixtures"))
VALGRIND = os.environ.get("RESTY_FFI_VALGRIND")

CONF = """
user {user};
daemon off;
master_process {master};
worker_processes {workers};
error_log logs/error.log {log_level};
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module {module_dir}/ngx_http_resty_ffi_module.so;
{main}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    lua_package_path "{lua_dir}/?.lua;{fixtures}/?.lua;;";
    {http}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
"""


def fan_out_lua(calls):
    """Lua that makes `calls` concurrent calls on `rt` in one request and says
    how many came back right."""
    return f"""
        local threads = {{}}
        for i = 1, {calls} do
            threads[i] = ngx.thread.spawn(function() return rt:echo('call ' .. i) end)
        end
        local good = 0
        for i = 1, {calls} do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == 'call ' .. i then good = good + 1 end
        end
        ngx.say(good)"""


def wait_until(cond, timeout):
    """Polls `cond` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def assert_logged(n, lines, timeout=10):
    """Waits until each of `lines` is in nginx's error log: lines a runtime
    logs (resty_ffi_log) reach it through the worker's event loop, which may
    write them after the response."""
    assert wait_until(lambda: all(line in n.log.read_text() for line in lines), timeout), \
        f"not all of {lines} in the log: {n.log.read_text()[-2000:]}"


class Trace:
    """The trace file of the C test runtime (cfg option `trace=<path>`): a
    line per request polled ("got <request>") and per late answer handed
    back ("late <size>"). Tests wait on it instead of sleeping."""

    def __init__(self, path):
        self.path = Path(path)

    def lines(self):
        return self.path.read_text().splitlines() if self.path.exists() else []

    def count(self, line):
        return self.lines().count(line)

    def wait_for(self, line, n=1, timeout=30):
        """Waits until `line` was traced `n` times; fails after `timeout` seconds."""
        assert wait_until(lambda: self.count(line) >= n, timeout), \
            f"{self.count(line)} of {n} {line!r} in {self.path}: {self.lines()[-10:]}"


def assert_signals_stay_nginx(n, library):
    """With `library` mapped in the worker (`/t` answers "true x <pid>"), nginx's
    signals stay nginx's: reload replaces the worker, SIGQUIT sent to it stops it."""
    body = n.get("/t")[1].split()
    assert body[:2] == [b"true", b"x"]
    pid = int(body[2])
    assert library in open(f"/proc/{pid}/maps").read()
    n.signal("reload")
    assert wait_until(lambda: n.worker_pids() and pid not in n.worker_pids(), 15), "old worker still running"
    body = n.get("/t")[1].split()
    assert body[:2] == [b"true", b"x"] and int(body[2]) != pid
    pid = int(body[2])
    os.kill(pid, signal.SIGQUIT)
    assert wait_until(lambda: n.worker_pids() and pid not in n.worker_pids(), 15), "SIGQUIT did not stop the worker"
    assert n.get("/t")[1].split()[:2] == [b"true", b"x"]
    assert "exited on signal" not in n.log.read_text()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, prefix, port, proc):
        self.prefix, self.port, self.proc = prefix, port, proc
        self.log = prefix / "logs" / "error.log"

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path, data=None, timeout=30, headers=None):
        """Returns (status, body bytes)."""
        req = urllib.request.Request(self.url(path), data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def signal(self, cmd):
        subprocess.run(["nginx", "-p", str(self.prefix), "-c", "conf/nginx.conf", "-s", cmd],
                       check=True, capture_output=True)

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())

    def errors(self):
        """Crashes and alerts in the error log (a test fails on any), but for
        the alert that `lua_code_cache off` always logs."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = re.findall(r".*(?:\[alert\]|\[emerg\]|exited on signal|segfault|\[crit\]).*", text)
        return [line for line in found if "lua_code_cache is off" not in line]

    def threads(self, pid):
        """How many threads process `pid` runs."""
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def wait_for_port(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def nginx(tmp_path):
    """start(server=..., http=..., main=..., workers=1) -> Nginx; stopped at teardown.
    `user`: the workers' user; `wrapper`: a command that runs nginx (e.g. setpriv)."""
    started = []

    def start(server="", http="", main="", workers=1, master=True, log_level="warn", user="root", wrapper=()):
        prefix = tmp_path / f"nginx{len(started)}"
        (prefix / "conf").mkdir(parents=True)
        (prefix / "logs").mkdir()
        port = free_port()
        (prefix / "conf" / "nginx.conf").write_text(CONF.format(
            master="on" if master else "off", workers=workers, module_dir=MODULE_DIR,
            lua_dir=LUA_DIR, fixtures=FIXTURES, main=main, http=http, server=server,
            port=port, log_level=log_level, user=user))
        cmd = [*wrapper, "nginx", "-p", str(prefix), "-c", "conf/nginx.conf"]
        if VALGRIND:
            cmd = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect,possible",
                   f"--suppressions={Path(__file__).parent / 'valgrind.supp'}",
                   "--error-exitcode=99", "--trace-children=yes",
                   f"--log-file={prefix}/logs/valgrind.%p.log"] + cmd
        env = dict(os.environ, LD_LIBRARY_PATH=RUNTIMES)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server_ = Nginx(prefix, port, proc)
        started.append(server_)
        if not wait_for_port(port, proc, time.monotonic() + (60 if VALGRIND else 10)):
            err = proc.stderr.read().decode() if proc.poll() is not None else ""
            log = server_.log.read_text() if server_.log.exists() else ""
            raise RuntimeError(f"nginx did not start: {err}\n{log}")
        return server_

    yield start

    for server_ in started:
        if server_.proc.poll() is None:
            server_.proc.send_signal(signal.SIGQUIT)
            try:
                server_.proc.wait(timeout=60 if VALGRIND else 15)
            except subprocess.TimeoutExpired:
                server_.proc.kill()
                server_.proc.wait()
                pytest.fail("nginx did not quit gracefully")
        problems = server_.errors()
        assert not problems, "\n".join(problems)
        if VALGRIND:
            for log in (server_.prefix / "logs").glob("valgrind.*.log"):
                text = log.read_text()
                summary = re.search(r"ERROR SUMMARY: (\d+) errors", text)
                assert summary and summary.group(1) == "0", text
