"""The runtime ABI extensions on Envoy (issue 15): batch and event-loop
polling, runtime logs in Envoy's log at the mapped level, per-runtime stats
as rt:__stats() and as Envoy metrics (/stats, /stats/prometheus)."""

import concurrent.futures
import re
import subprocess
import time

import harness

SCRIPT = r"""
require("resty_ffi")
local modes = { many = "poll=many:8", fd = "poll=fd,threads=2", plain = nil }

local function show(s)
  return string.format("posted=%d answered=%d failed=%d timed_out=%d cancelled=%d queue_full=%d in_flight=%d",
    s.posted, s.answered, s.failed, s.timed_out, s.cancelled, s.queue_full, s.in_flight)
end

function envoy_on_request(handle)
  local h = handle:headers()
  local mode = h:get("x-mode") or "plain"
  local rt = assert(ngx.load_ffi("test_runtime", modes[mode], { timeout = 0.3 }))
  local what = h:get("x-what")
  if what == "stats" then
    local s = rt:__stats()
    local all = require("resty_ffi").stats()
    handle:respond({ [":status"] = "200" }, show(s) .. " all=" .. tostring(all[rt_key or "test_runtime"] ~= nil))
    return
  end
  local ok, res, err = rt:call(h:get("x-req"))
  handle:respond({ [":status"] = "200" }, tostring(ok) .. "|" .. tostring(res) .. "|" .. tostring(err))
end
"""


def start(concurrency=1):
    port, admin = harness.free_ports(2)
    envoy = harness.Envoy([harness.listener("ext", port, harness.ours(SCRIPT, stat_prefix="ext"))], admin,
                          concurrency=concurrency)
    return envoy, port


def call(port, req, mode="plain"):
    return harness.request(port, "/", headers={"x-req": req, "x-mode": mode})[2].decode()


def case_every_polling_mode_answers_concurrent_calls():
    envoy, port = start(concurrency=2)
    try:
        for mode in ["many", "fd", "plain"]:
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                got = list(pool.map(lambda i: call(port, f"{mode} {i}", mode), range(300)))
            assert got == [f"true|{mode} {i}|nil" for i in range(300)], [g for g in got if "true" not in g][:3]
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def case_runtime_logs_reach_envoys_log_at_the_mapped_level():
    envoy, port = start()
    try:
        for req in ["log:7:an info line", "log:8:a debug line", "log:5:a warning", "log:1:an emergency",
                    "log:4:an error"]:
            assert call(port, req) == "true|logged|nil"
        harness.wait_until(lambda: "test_runtime: an error" in envoy.log_text(), 10)
        log = envoy.log_text()
        assert "[error] test_runtime: an error" in log, envoy.log_tail()
        assert "[warning] test_runtime: a warning" in log
        assert "[critical] test_runtime: an emergency" in log
        # Envoy runs at -l warning: info and debug are not written.
        assert "an info line" not in log and "a debug line" not in log
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def case_a_log_flood_drops_with_one_line():
    envoy, port = start()
    total = 300_000
    try:
        assert call(port, f"logs:{total}:4:spam") == f"true|logged {total}|nil"

        def counts():
            text = envoy.log_text()
            written = len(re.findall(r"^\[error\] test_runtime: spam \d+$", text, re.M))
            dropped = sum(int(d) for d in re.findall(r"^\[warning\] resty_ffi: (\d+) log messages dropped$",
                                                      text, re.M))
            return written, dropped

        harness.wait_until(lambda: sum(counts()) == total, 30)
        written, dropped = counts()
        assert written > 0 and dropped > 0, (written, dropped)
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def stats_lines(envoy, fmt=""):
    _, text = envoy.admin(f"/stats{fmt}?filter=resty_ffi")
    return text


def case_stats_after_known_calls_failures_and_timeouts():
    envoy, port = start()
    try:
        for i in range(10):
            assert call(port, f"ok {i}") == f"true|ok {i}|nil"
        for _ in range(3):
            assert call(port, "rc:5:bad") == "false|5|bad"
        assert call(port, "sleep:600:slow") == "false|resty_ffi: runtime did not answer in time|nil"
        time.sleep(1.2)   # the slow answer arrives; Lua publishes at most once a second
        body = harness.request(port, "/", headers={"x-what": "stats"})[2].decode()
        assert body == ("posted=14 answered=14 failed=3 timed_out=1 cancelled=0 queue_full=0 in_flight=0"
                        " all=true"), body
        assert call(port, "one more") == "true|one more|nil"
        text = stats_lines(envoy)
        names = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            names[key] = value
        def stat(name):
            # Counters never incremented are not shown.
            return int(names.get(f"dynamicmodulescustom.resty_ffi.ext.{name}.runtime.test_runtime", 0))
        assert stat("posted") == 15 and stat("answered") == 15, text
        assert stat("failed") == 3 and stat("timed_out") == 1 and stat("queue_full") == 0, text
        assert stat("in_flight") == 0, text
        assert stat("max_us") >= 600_000, text
        _, prom = envoy.admin("/stats/prometheus")
        assert re.search(r'resty_ffi.*posted.*\{.*runtime="test_runtime".*\} 15', prom), \
            [l for l in prom.splitlines() if "resty_ffi" in l]
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def case_stats_count_streams_that_went_away():
    envoy, port = start()
    try:
        assert call(port, "warm") == "true|warm|nil"
        import socket
        for i in range(3):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nx-req: sleep:200:{i}\r\n\r\n".encode())
                time.sleep(0.05)
        time.sleep(0.5)
        body = harness.request(port, "/", headers={"x-what": "stats"})[2].decode()
        assert body.startswith("posted=4 answered=4 failed=0 timed_out=0 cancelled=3 "), body
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def start_fixture(log_level="info", concurrency=1):
    """Envoy serving tests/fixtures/runtime_cases.lua, with the Python loader
    and the Go echo built next to the test runtimes."""
    subprocess.run([str(harness.ROOT / "examples" / "python" / "build.sh"),
                    str(harness.RUNTIMES / "libffi_python3.so")], check=True)
    subprocess.run([str(harness.ROOT / "examples" / "go_echo" / "build.sh"),
                    str(harness.RUNTIMES / "libgo_echo.so")], check=True)
    subprocess.run([str(harness.ROOT / "examples" / "nodejs" / "build.sh"), str(harness.RUNTIMES / "libffi_nodejs.so"),
                    str(harness.RELEASE / "include")], check=True)
    subprocess.run([str(harness.ROOT / "examples" / "java" / "build.sh"), str(harness.RUNTIMES / "libffi_java.so"),
                    str(harness.RELEASE / "include")], check=True)
    port, admin = harness.free_ports(2)
    env = {"PYTHONPATH": f"{harness.ROOT / 'examples' / 'python'}:{harness.FIXTURES / 'python'}",
           "NODE_PATH": str(harness.ROOT / "examples" / "nodejs"),
           "CLASSPATH": str(harness.RUNTIMES / "examples.jar"), "JAVA_OPTS": "-Xmx128m"}
    envoy = harness.Envoy([harness.fixture_listener("cases", port, harness.RUNTIME_CASES_SCRIPT)], admin, env=env,
                          concurrency=concurrency,
                          extra_args=("--component-log-level", f"dynamic_modules:{log_level}"))
    return envoy, port


def assert_logged(envoy, port, case, reqs, lines, hidden):
    """Each request of `reqs` to fixture `case` answers "logged"; then Envoy's
    log holds every line of `lines` (the last one waited for) and not `hidden`."""
    for req in reqs:
        assert harness.post_case(port, case, req) == b"true|logged", req
    harness.wait_until(lambda: lines[-1] in envoy.log_text(), 10)
    log = envoy.log_text()
    for line in lines:
        assert line in log, (line, envoy.log_tail())
    assert hidden not in log
    envoy.assert_no_crash()


def case_python_logging_handler_writes_envoys_log():
    envoy, port = start_fixture()
    try:
        assert_logged(envoy, port, "python_log",
                      [b"debug:not shown", b"info:an info line", b"warning:a warning", b"error:an error"],
                      ["[info] ffi_python3: log_demo INFO an info line",
                       "[warning] ffi_python3: log_demo WARNING a warning",
                       "[error] ffi_python3: log_demo ERROR an error"], "not shown")
    finally:
        envoy.stop()


def case_go_logger_and_netpoll_serving():
    envoy, port = start_fixture()
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda i: harness.post_case(port, "go_netpoll", b"echo%d" % i), range(200)))
        assert got == [b"true|echo%d" % i for i in range(200)]
        assert harness.post_case(port, "go_netpoll", b"log:warn:slow upstream") == b"true|logged"
        assert harness.post_case(port, "go_netpoll", b"log:error:failed") == b"true|logged"
        harness.wait_until(lambda: "go_echo: failed from=go" in envoy.log_text(), 10)
        assert '[warning] go_echo: slow upstream from=go note="a b"' in envoy.log_text(), envoy.log_tail()
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def case_node_console_goes_to_envoys_log():
    envoy, port = start_fixture()
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda i: harness.post_case(port, "node_log", b"r%d" % i), range(200)))
        assert got == [b"true|r%d" % i for i in range(200)]
        assert_logged(envoy, port, "node_log", [b"debug:hidden", b"info:an info", b"warn:careful", b"error:broken"],
                      ["[info] ffi_nodejs: node says an info", "[warning] ffi_nodejs: node says careful",
                       "[error] ffi_nodejs: node says broken { n: 1 }"], "hidden")
    finally:
        envoy.stop()


def case_java_logging_handler_writes_envoys_log():
    envoy, port = start_fixture()
    try:
        assert_logged(envoy, port, "java_log", [b"FINE:hidden", b"INFO:an info", b"WARNING:careful", b"SEVERE:broken"],
                      ["[info] ffi_java: demo.log INFO an info", "[warning] ffi_java: demo.log WARNING careful",
                       "[error] ffi_java: demo.log SEVERE broken"], "hidden")
    finally:
        envoy.stop()


def case_two_venvs_in_one_envoy_import_their_own_package_versions():
    import sys
    import tempfile
    sys.path.insert(0, str(harness.FIXTURES / "python"))
    from python_venvs import make_venvs

    base = tempfile.mkdtemp(prefix="resty_ffi_venvs_")
    venv1, venv2 = make_venvs(base)
    envoy, port = start_fixture(concurrency=2)
    try:
        def call(i):
            venv = (venv1, venv2)[i % 2]
            return harness.post_case(port, "python_venv", venv.encode()), venv
        # Both worker threads, each with runtimes in both venvs (one
        # sub-interpreter per venv, shared by the workers).
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(call, range(64)))
        for body, venv in got:
            assert body == f"true|tinypkg {venv[-1]} prefix {venv}".encode(), (body, venv)
        assert harness.post_case(port, "python_venv", b"") == b"nil|-1"
        assert harness.post_case(port, "python_venv", base.encode()) == b"nil|4"
        harness.wait_until(lambda: f'venv "{base}" is not a virtual environment' in envoy.log_text(), 5)
        envoy.assert_no_crash()
    finally:
        envoy.stop()


CASES = [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES)
