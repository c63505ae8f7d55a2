"""The runtime ABI extensions on nginx (issue 15): batch and event-loop
polling, runtime logs in nginx's error log, per-runtime stats."""

import concurrent.futures
import re
import socket
from pathlib import Path

import pytest

from conftest import FIXTURES, RUNTIMES, Trace, assert_logged, fan_out_lua, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "nginx"


def content(lua, location="/t"):
    return f"location {location} {{ content_by_lua_block {{ require('resty_ffi') {lua} }} }}"


CALL = "ngx.say(rt:call(ngx.unescape_uri(ngx.var.arg_req)))"


@pytest.mark.parametrize("mode", ["poll=many:8", "poll=many:1", "poll=fd", "threads=3,poll=fd", "threads=2,poll=many:64"])
def test_polling_modes_answer_every_call_and_unload(nginx, mode):
    n = nginx(server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', '{mode}'))
        {fan_out_lua(500)}
        local again = assert(ngx.load_ffi('test_runtime', '{mode}'))
        ngx.say(rt == again)
        rt:__unload()
        ngx.say(rt:call('x'))
        local fresh = assert(ngx.load_ffi('test_runtime', '{mode}'))
        ngx.say(fresh:call('after unload'))"""))
    for _ in range(3):
        assert n.get("/t") == (200, b"500\ntrue\nfalseresty_ffi: runtime unloaded\ntrueafter unload\n")
    assert n.errors() == []


def test_poll_threads_leave_after_unload(nginx):
    # Each mode's threads see the end of their queue and return.
    n = nginx(server=content("""
        local rts = {}
        for _, mode in ipairs({ 'poll=many:8,threads=4', 'poll=fd,threads=4' }) do
            local rt = assert(ngx.load_ffi('test_runtime', mode))
            assert(rt:call('up'))
            rts[#rts + 1] = rt
        end
        if ngx.var.arg_unload then
            for _, rt in ipairs(rts) do rt:__unload() end
        end
        ngx.say(ngx.worker.pid())"""))
    pid = int(n.get("/t")[1])
    before = n.threads(pid)
    n.get("/t?unload=1")
    assert wait_until(lambda: n.threads(pid) <= before - 8, 10), (before, n.threads(pid))


def log_lines(n, pattern):
    return re.findall(pattern, n.log.read_text(errors="replace"), re.M)


def test_runtime_logs_go_to_the_error_log_written_by_the_worker(nginx):
    n = nginx(log_level="info", server=content("""
        local rt = assert(ngx.load_ffi('test_runtime'))
        """ + CALL))
    assert n.get("/t?req=log:8:a%20debug%20line") == (200, b"truelogged\n")
    assert n.get("/t?req=log:99:clamped") == (200, b"truelogged\n")
    assert n.get("/t?req=log:7:an%20info%20line") == (200, b"truelogged\n")
    assert n.get("/t?req=log:4:hello%20from%20C") == (200, b"truelogged\n")
    pid = n.worker_pids()[0]
    assert wait_until(lambda: log_lines(n, r"test_runtime: hello from C$"), 5)
    # "[level] pid#tid: ...": the worker's main thread (tid = pid) wrote each.
    assert log_lines(n, r"\[error\] (\d+)#(\d+): test_runtime: hello from C$") == [(str(pid), str(pid))]
    assert log_lines(n, r"\[info\] (\d+)#(\d+): test_runtime: an info line$") == [(str(pid), str(pid))]
    # Above error_log's level: not written; clamped to debug (8) too.
    assert log_lines(n, r"a debug line|clamped") == []
    assert n.errors() == []


def test_runtime_logs_follow_reopen(nginx):
    n = nginx(server=content("local rt = assert(ngx.load_ffi('test_runtime'))\n" + CALL))
    assert n.get("/t?req=log:4:before%20rotation") == (200, b"truelogged\n")
    assert wait_until(lambda: log_lines(n, r"test_runtime: before rotation$"), 5)
    rotated = n.log.with_name("error.log.1")
    n.log.rename(rotated)
    n.signal("reopen")
    assert wait_until(n.log.exists, 5)
    assert n.get("/t?req=log:4:after%20rotation") == (200, b"truelogged\n")
    assert wait_until(lambda: log_lines(n, r"test_runtime: after rotation$"), 5)
    assert "after rotation" not in rotated.read_text()
    assert "before rotation" not in n.log.read_text()


def test_a_log_flood_drops_with_one_line_and_never_blocks(nginx):
    total = 300_000
    n = nginx(log_level="info", server=content("local rt = assert(ngx.load_ffi('test_runtime'))\n" + CALL))
    assert n.get(f"/t?req=logs:{total}:6:spam", timeout=20) == (200, f"truelogged {total}\n".encode())
    # The worker answered while the flood waited: the echo comes back now.
    assert n.get("/t?req=still%20serving") == (200, b"truestill serving\n")

    def counts():
        text = n.log.read_text(errors="replace")
        written = len(re.findall(r"\[notice\] \d+#\d+: test_runtime: spam \d+$", text, re.M))
        dropped = sum(int(d) for d in re.findall(r"\[warn\] .*resty_ffi: (\d+) log messages dropped$", text, re.M))
        return written, dropped

    assert wait_until(lambda: sum(counts()) == total, 20), counts()
    written, dropped = counts()
    assert dropped > 0 and written > 0
    # Written in order, none twice.
    numbers = [int(x) for x in re.findall(r"test_runtime: spam (\d+)$", n.log.read_text(), re.M)]
    assert numbers == sorted(set(numbers))


STATS = """
local function show(s)
    return string.format('posted=%d answered=%d failed=%d timed_out=%d cancelled=%d queue_full=%d in_flight=%d',
        s.posted, s.answered, s.failed, s.timed_out, s.cancelled, s.queue_full, s.in_flight)
end
"""


def test_stats_count_calls_failures_timeouts_and_queue_full(nginx, tmp_path):
    gate = tmp_path / "gate"
    n = nginx(server=content(STATS + f"""
        local rt = assert(ngx.load_ffi('test_runtime', nil, {{ timeout = 0.2, max_queue = 1 }}))
        for i = 1, 10 do assert(rt:call('ok ' .. i)) end
        for i = 1, 3 do assert(not rt:call('rc:5:bad')) end
        -- times out after 0.2 s, answered after 0.5 s
        local ok, err = rt:call('sleep:500:slow')
        assert(err == 'resty_ffi: runtime did not answer in time', err)
        ngx.sleep(0.6)
        -- one call waits behind the gate, the queue (1) holds a second, a third is refused
        local first = ngx.thread.spawn(function() return rt:call('gate:{gate}:a') end)
        ngx.sleep(0.05)
        local second = ngx.thread.spawn(function() return rt:call('second') end)
        local ok3, err3 = rt:call('third')
        assert(err3 == 'resty_ffi: task queue full', err3)
        local mid = rt:__stats()
        ngx.say(show(mid), ' queue_len=', mid.queue_len)
        io.open('{gate}', 'w'):close()
        ngx.thread.wait(first)
        ngx.thread.wait(second)
        local s = rt:__stats()
        ngx.say(show(s))
        ngx.say(s.p50_us < 100000, ' ', s.max_us >= 500000, ' ', s.p99_us <= s.max_us, ' ', s.samples)
        local all = require('resty_ffi').stats()
        ngx.say(all['test_runtime'].answered, ' ', all['test_runtime'].failed)"""))
    status, body = n.get("/t")
    assert status == 200, body
    assert body.decode().splitlines() == [
        "posted=16 answered=14 failed=3 timed_out=1 cancelled=0 queue_full=1 in_flight=2 queue_len=1",
        "posted=16 answered=16 failed=3 timed_out=1 cancelled=0 queue_full=1 in_flight=0",
        "true true true 16",
        "16 3",
    ]


def test_stats_count_callers_that_went_away(nginx, tmp_path):
    trace = Trace(tmp_path / "trace")
    n = nginx(http="lua_check_client_abort on;", server=content(STATS + f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=4,trace={trace.path}'))
        if ngx.var.arg_stats then ngx.say(show(rt:__stats())) return end
        {CALL}"""))
    assert n.get("/t?req=warm") == (200, b"truewarm\n")
    for i in range(3):
        with socket.create_connection(("127.0.0.1", n.port)) as s:
            s.sendall(f"GET /t?req=late:1500:{i + 1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            trace.wait_for(f"got late:1500:{i + 1}")
    # Killed callers are swept once a second while calls wait.
    for i in range(3):
        trace.wait_for(f"late {i + 1}")
    body = n.get("/t?stats=1")[1].decode()
    assert body == "posted=4 answered=4 failed=0 timed_out=0 cancelled=3 queue_full=0 in_flight=0\n"


def test_stats_are_per_runtime_and_keyed_by_cache_key(nginx):
    n = nginx(server=content("""
        local a = assert(ngx.load_ffi('test_runtime', 'threads=1'))
        local b = assert(ngx.load_ffi('rust_echo'))
        for i = 1, 4 do a:call('x') end
        b:echo('y')
        local all = require('resty_ffi').stats()
        local keys = {}
        for k, s in pairs(all) do keys[#keys + 1] = k .. '=' .. s.answered end
        table.sort(keys)
        ngx.say(table.concat(keys, ' '))
        b:__unload()
        ngx.say(require('resty_ffi').stats()['rust_echo'] == nil)
        local ok, err = pcall(function() return a.__stats() end)
        ngx.say(err)"""))
    status, body = n.get("/t")
    assert status == 200, body
    lines = body.decode().splitlines()
    assert lines[0] == "rust_echo=1 test_runtime&threads=1=4"
    assert lines[1] == "true"
    assert "call a runtime's methods with ':'" in lines[2]


def test_prometheus_example_location(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime'))
        for i = 1, 7 do rt:call('x') end
        rt:call('rc:2:no')
        ngx.say('ok')""") + f"""
        location = /metrics {{ content_by_lua_file {EXAMPLES / 'resty_ffi_metrics.lua'}; }}""")
    assert n.get("/t") == (200, b"ok\n")
    status, body = n.get("/metrics")
    text = body.decode()
    assert status == 200
    assert "# TYPE resty_ffi_posted_total counter" in text
    assert 'resty_ffi_answered_total{runtime="test_runtime",worker="0"} 8' in text
    assert 'resty_ffi_failed_total{runtime="test_runtime",worker="0"} 1' in text
    assert 'resty_ffi_in_flight{runtime="test_runtime",worker="0"} 0' in text
    assert "# TYPE resty_ffi_p99_us gauge" in text


# Each language's logging path, through the shared fixture (Envoy runs it too).

PYTHONPATH = f"{Path(__file__).resolve().parents[2] / 'examples' / 'python'}:{FIXTURES / 'python'}"


def fixture_location(case):
    return f"""location /{case} {{ content_by_lua_block {{
        ngx.say(require('runtime_cases').{case}(ngx.unescape_uri(ngx.var.arg_req))) }} }}"""


def test_python_logging_handler_writes_the_error_log(nginx, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)
    n = nginx(main="env PYTHONPATH;", log_level="info", server=fixture_location("python_log"))
    for req in ["debug:not%20shown", "info:an%20info%20line", "warning:a%20warning", "error:an%20error"]:
        assert n.get(f"/python_log?req={req}") == (200, b"true|logged\n"), req
    assert wait_until(lambda: log_lines(n, r"ffi_python3: log_demo ERROR an error$"), 10), n.log.read_text()[-2000:]
    pid = n.worker_pids()[0]
    assert log_lines(n, r"\[warn\] (\d+)#\d+: ffi_python3: log_demo WARNING a warning$") == [str(pid)]
    assert log_lines(n, r"\[info\] \d+#\d+: ffi_python3: log_demo INFO an info line$")
    assert not log_lines(n, r"not shown")


def test_go_logger_and_netpoll_serving(nginx):
    n = nginx(log_level="info", server=fixture_location("go_netpoll"))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: n.get(f"/go_netpoll?req=echo{i}"), range(200)))
    assert got == [(200, f"true|echo{i}\n".encode()) for i in range(200)]
    assert n.get("/go_netpoll?req=log:warn:slow%20upstream") == (200, b"true|logged\n")
    assert n.get("/go_netpoll?req=log:error:failed") == (200, b"true|logged\n")
    assert wait_until(lambda: log_lines(n, r"go_echo: failed from=go"), 10)
    assert log_lines(n, r'\[warn\] \d+#\d+: (go_echo: slow upstream from=go note="a b")$') == \
        ['go_echo: slow upstream from=go note="a b"']
    assert n.errors() == []


def test_node_console_goes_to_the_error_log_and_serve_uses_nodes_loop(nginx, monkeypatch):
    monkeypatch.setenv("NODE_PATH", str(Path(__file__).resolve().parents[2] / "examples" / "nodejs"))
    n = nginx(main="env NODE_PATH;", log_level="info", server=fixture_location("node_log") + """
        location /threads { content_by_lua_block { ngx.say(ngx.worker.pid()) } }""")
    pid = int(n.get("/threads")[1])
    assert n.get("/node_log?req=warm") == (200, b"true|warm\n")
    threads = n.threads(pid)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: n.get(f"/node_log?req=r{i}"), range(200)))
    assert got == [(200, f"true|r{i}\n".encode()) for i in range(200)]
    for req in ["debug:hidden", "info:an%20info", "warn:careful", "error:broken"]:
        assert n.get(f"/node_log?req={req}") == (200, b"true|logged\n"), req
    assert wait_until(lambda: log_lines(n, r"ffi_node.*broken"), 10), n.log.read_text()[-2000:]
    assert log_lines(n, r"\[error\] \d+#\d+: (ffi_nodejs: node says broken \{ n: 1 \})$") == \
        ["ffi_nodejs: node says broken { n: 1 }"]
    assert log_lines(n, r"\[warn\] \d+#\d+: ffi_nodejs: node says careful")
    assert log_lines(n, r"\[info\] \d+#\d+: ffi_nodejs: node says an info")
    assert not log_lines(n, "hidden")
    # Served from Node's own loop: no poll thread was started for it.
    assert n.threads(pid) == threads


def test_java_logging_handler_writes_the_error_log(nginx, monkeypatch):
    examples = next(Path(d) / "examples.jar" for d in RUNTIMES.split(":") if (Path(d) / "examples.jar").exists())
    monkeypatch.setenv("CLASSPATH", str(examples))
    monkeypatch.setenv("JAVA_OPTS", "-Xmx128m")
    n = nginx(main="env CLASSPATH; env JAVA_OPTS;", log_level="info", server=fixture_location("java_log"))
    for req in ["FINE:hidden", "INFO:an%20info", "WARNING:careful", "SEVERE:broken"]:
        assert n.get(f"/java_log?req={req}") == (200, b"true|logged\n"), req
    assert wait_until(lambda: log_lines(n, r"demo.log SEVERE broken$"), 10), n.log.read_text()[-2000:]
    assert log_lines(n, r"\[error\] \d+#\d+: (ffi_java: demo.log SEVERE broken)$") == ["ffi_java: demo.log SEVERE broken"]
    assert log_lines(n, r"\[warn\] \d+#\d+: ffi_java: demo.log WARNING careful$")
    assert log_lines(n, r"\[info\] \d+#\d+: ffi_java: demo.log INFO an info$")
    assert not log_lines(n, "hidden")


def test_two_venvs_in_one_worker_import_their_own_package_versions(nginx, monkeypatch, tmp_path):
    import sys
    sys.path.insert(0, str(FIXTURES / "python"))
    from python_venvs import make_venvs

    venv1, venv2 = make_venvs(tmp_path)
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)
    n = nginx(main="env PYTHONPATH;", server=fixture_location("python_venv") + """
        location /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }""")
    pid = n.get("/pid")[1]
    assert n.get(f"/python_venv?req={venv1}") == (200, f"true|tinypkg 1 prefix {venv1}\n".encode())
    assert n.get(f"/python_venv?req={venv2}") == (200, f"true|tinypkg 2 prefix {venv2}\n".encode())
    # Both stay loaded in the same worker, each with its version.
    assert n.get(f"/python_venv?req={venv1}") == (200, f"true|tinypkg 1 prefix {venv1}\n".encode())
    assert n.get("/pid")[1] == pid
    # Without a venv, tinypkg is not found: the venvs' paths did not leak.
    assert n.get("/python_venv?req=") == (200, b"nil|-1\n")
    assert_logged(n, ["No module named 'tinypkg'"], 5)
    # Not a venv: a clear error, rc 4.
    assert n.get(f"/python_venv?req={tmp_path}") == (200, b"nil|4\n")
    assert_logged(n, [f'venv "{tmp_path}" is not a virtual environment'], 5)
    assert n.errors() == []
