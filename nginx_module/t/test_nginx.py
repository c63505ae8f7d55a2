"""Integration tests of the nginx host on Debian's real nginx + lua module."""

import concurrent.futures
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LUA_DIR, VALGRIND, Trace, fan_out_lua, wait_until

ECHO = "require('resty_ffi') local rt = assert(ngx.load_ffi('rust_echo'))\n"


def content(lua):
    return f"location /t {{ content_by_lua_block {{ require('resty_ffi') {lua} }} }}"


def test_echo_and_cache(nginx):
    n = nginx(server=content(ECHO + """
        local again = ngx.load_ffi('rust_echo')
        ngx.say(rt == again, ' ', rt == ngx.load_ffi('rust_echo', '2'))
        ngx.say(rt:echo('hello'))"""))
    assert n.get("/t") == (200, b"true false\ntruehello\n")


@pytest.mark.parametrize("phase", ["rewrite", "access", "content"])
def test_yieldable_phases(nginx, phase):
    n = nginx(server=f"""location /t {{
        {phase}_by_lua_block {{ {ECHO} local ok, res = rt:echo('{phase}')
            ngx.header['x-res'] = res ngx.say(ok, ':', res) ngx.exit(200) }} }}""")
    assert n.get("/t") == (200, f"true:{phase}\n".encode())


def test_timer_phase(nginx):
    n = nginx(http="lua_shared_dict results 1m;", server=content("""
        local ok = ngx.timer.at(0, function()
            local rt = assert(ngx.load_ffi('rust_echo'))
            local ok, res = rt:echo('from timer')
            ngx.shared.results:set('timer', tostring(ok) .. ':' .. res)
        end)
        for _ = 1, 100 do
            if ngx.shared.results:get('timer') then break end
            ngx.sleep(0.01)
        end
        ngx.say(ngx.shared.results:get('timer'))"""))
    assert n.get("/t") == (200, b"true:from timer\n")


def test_non_yieldable_phases_raise_clear_errors(nginx):
    call = "local ok, err = pcall(function() return ngx.load_ffi('rust_echo'):echo('x') end)"
    n = nginx(
        http=f"""lua_shared_dict results 1m;
        init_by_lua_block {{
            require('resty_ffi')
            local ok, err = pcall(ngx.load_ffi, 'rust_echo')
            package.loaded.init_error = err
        }}
        init_worker_by_lua_block {{
            -- Loading works here (a worker); waiting does not.
            local rt = assert(ngx.load_ffi('rust_echo'))
            local ok, err = pcall(rt.echo, rt, 'x')
            package.loaded.init_worker_error = err
        }}""",
        server=f"""
        location /t {{
            set_by_lua_block $set_err {{ {call} return err }}
            header_filter_by_lua_block {{ {call} ngx.header['x-filter-err'] = err }}
            body_filter_by_lua_block {{ {call} ngx.shared.results:set('body_filter', err) }}
            log_by_lua_block {{ {call} ngx.shared.results:set('log', err) }}
            content_by_lua_block {{
                ngx.say('init: ', package.loaded.init_error)
                ngx.say('set: ', ngx.var.set_err)
                ngx.say('init_worker: ', package.loaded.init_worker_error)
            }}
        }}
        location /log {{ content_by_lua_block {{
            ngx.say(ngx.shared.results:get('log'))
            ngx.say(ngx.shared.results:get('body_filter'))
        }} }}""")
    status, body = n.get("/t")
    lines = body.decode().splitlines()
    assert status == 200
    assert lines[0].startswith("init: resty_ffi: runtimes start threads and cannot be loaded in the init phase")
    assert "resty_ffi: cannot wait for a runtime in the set phase" in lines[1]
    assert "resty_ffi: cannot wait for a runtime in the init_worker phase" in lines[2]
    status, body = n.get("/log")
    log_err, body_filter_err = body.decode().splitlines()
    assert "resty_ffi: cannot wait for a runtime in the log phase" in log_err
    assert "resty_ffi: cannot wait for a runtime in the body_filter phase" in body_filter_err
    import urllib.request
    with urllib.request.urlopen(n.url("/t")) as resp:
        assert "cannot wait for a runtime in the header_filter phase" in resp.headers["x-filter-err"]
    assert n.get("/t")[0] == 200, "worker still serving"


@pytest.mark.parametrize("payload", [b"", b"x", b"a\0b\0\0c", bytes(range(256)) * 256, b"z" * (1 << 20)],
                         ids=["0B", "1B", "nul", "64KB", "1MB"])
def test_payloads_round_trip_binary_safe(nginx, payload):
    n = nginx(http="client_max_body_size 4m; client_body_buffer_size 4m;", server=content(ECHO + """
        ngx.req.read_body()
        local ok, res = rt:echo(ngx.req.get_body_data() or '')
        assert(ok, res)
        ngx.print(res)"""))
    assert n.get("/t", data=payload) == (200, payload)


def test_nil_request_and_rc_errors(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime'))
        ngx.say(rt:echo(nil))
        ngx.say(rt:fail('rc:3:bad input'))
        ngx.say(rt:fail('rc:-2:'))
        ngx.say(rt:fail('cstr:c string'))
        ngx.say(select('#', rt:fail('rc:5:')))"""))
    assert n.get("/t") == (200, b"true\nfalse3bad input\nfalse-2nil\ntruec string\n3\n")


def test_any_method_name_calls_the_runtime(nginx):
    n = nginx(server=content("ngx.say(require('ffi_cases').method_names())"))
    names = ["timeout", "ptr", "key", "spin_pause", "spin_backoff", "call", "__index"]
    assert n.get("/t") == (200, (";".join(f"{m}=true|{m}" for m in names) + "\n").encode())


def test_nil_request_reaches_the_runtime_as_null(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'null_tag'))
        local _, null = rt:call(nil)
        local _, empty = rt:call('')
        ngx.say(null, '|', empty)"""))
    assert n.get("/t") == (200, b"NULL|\n")


def test_negative_response_length_is_an_error(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime'))
        ngx.say(rt:call('answer:0:8:-3:0'))
        ngx.say(rt:call('answer:5:0:-1:0'))
        ngx.say(rt:call('after'))"""))
    error = "falseresty_ffi: runtime answered with a negative length\n"
    assert n.get("/t") == (200, (error * 2 + "trueafter\n").encode())


def test_an_answer_lua_cannot_take_fails_only_its_call(nginx):
    # A 2 GB answer (malloc()ed, never touched) is longer than a Lua string
    # may be: that call fails, the dispatcher goes on delivering.
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=2', { timeout = 3 }))
        local huge = ngx.thread.spawn(rt.call, rt, 'answer:0:2147483647:2147483647:20')
        local other = ngx.thread.spawn(rt.call, rt, 'sleep:40:other')
        ngx.say(select(2, ngx.thread.wait(huge)))
        ngx.say(select(2, ngx.thread.wait(other)))
        ngx.say(rt:call('sleep:20:after'))"""))
    started = time.monotonic()
    assert n.get("/t") == (200, b"falseresty_ffi: cannot deliver the answer: string length overflow\n"
                                b"trueother\ntrueafter\n")
    assert time.monotonic() - started < 2


def test_each_lua_vm_gets_its_own_answers(nginx):
    # lua_code_cache off: one Lua VM per request, each with its own runtime.
    # Answers never cross requests, and a VM that ends releases its runtime.
    n = nginx(http="lua_code_cache off;", server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=2', { timeout = 3 }))
        ngx.say(rt:call('sleep:100:' .. ngx.var.arg_id))"""))
    assert wait_until(n.worker_pids, 30)
    pid = n.worker_pids()[0]
    idle_threads = n.threads(pid)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for round_ in range(3):
            ids = [f"{round_}.{i}" for i in range(8)]
            assert list(pool.map(lambda i: n.get(f"/t?id={i}"), ids)) == [(200, f"true{i}\n".encode()) for i in ids]
    # 24 VMs started 48 runtime threads; the core's reaper thread stays.
    assert wait_until(lambda: n.threads(pid) <= idle_threads + 1, 10), (n.threads(pid), idle_threads)


def test_bad_arguments_raise(nginx):
    n = nginx(server=content("""
        for _, args in ipairs({ {nil}, {'x', 5}, {'x', nil, 'o'}, {'x', nil, {max_queue = 0}} }) do
            local ok, err = pcall(ngx.load_ffi, args[1], args[2], args[3])
            ngx.say(err)
        end
        local ok, err = pcall(function() return ngx.load_ffi('rust_echo'):echo({}) end)
        ngx.say(err)
        ok, err = pcall(function() return ngx.load_ffi('rust_echo').echo('x') end)
        ngx.say(err)"""))
    body = n.get("/t")[1].decode().splitlines()
    assert body[0].endswith("resty_ffi: lib must be a non-empty string")
    assert body[1].endswith("resty_ffi: cfg must be a string or nil")
    assert body[2].endswith("resty_ffi: opts must be a table or nil")
    assert body[3].endswith("resty_ffi: opts.max_queue must be an integer >= 1")
    assert body[4].endswith("resty_ffi: request must be a string or nil, got table")
    assert body[5].endswith("resty_ffi: call a runtime's methods with ':' (rt:name(req))")


def test_load_errors(nginx):
    n = nginx(server=content("ngx.say(require('ffi_cases').load_errors())"))
    unknown, no_init, init_rc = n.get("/t")[1].decode().strip().split("|")
    assert unknown.startswith('resty_ffi: load "no_such_runtime": libno_such_runtime.so: cannot open shared object file')
    assert no_init.startswith('resty_ffi: load "libm.so.6": no libffi_init')
    assert init_rc == "7"
    assert 'resty_ffi: libffi_init of test_runtime returned 7 (cfg "init_rc=7")' in n.log.read_text()


def test_poll_spin_option(nginx):
    n = nginx(server=content("ngx.say(require('ffi_cases').poll_spin())"))
    errors = ["false|resty_ffi: opts.poll_spin_us must be an integer from 0 to 100000"] * 4
    assert n.get("/t") == (200, ";".join(errors + ["true|spin 20000", "true|spin 100000", "true|spin 0"]).encode() + b"\n")


def test_init_rc_log_truncates_and_escapes_cfg(nginx):
    n = nginx(server=content("""
        local rt, rc = ngx.load_ffi('test_runtime', 'init_rc=9,"quoted"\\n' .. string.rep('x', 300))
        ngx.say(tostring(rt), '|', rc)"""))
    assert n.get("/t") == (200, b"nil|9\n")
    log = n.log.read_text()
    shown = 'init_rc=9,\\034quoted\\034\\010' + "x" * 181
    assert f'resty_ffi: libffi_init of test_runtime returned 9 (cfg "{shown}...", 319 bytes)' in log, log


def test_unreadable_library_names_the_workers_user(nginx):
    """Workers of `user nobody` cannot read a runtime under /root: the error
    says why. (resty_ffi.lua itself comes from a directory nobody can read.)"""
    lua = Path(tempfile.mkdtemp(prefix="resty_ffi_lua_"))
    try:
        lua.chmod(0o755)
        shutil.copy(LUA_DIR / "resty_ffi.lua", lua / "resty_ffi.lua")
        (lua / "resty_ffi.lua").chmod(0o644)
        n = nginx(user="nobody nogroup", server=f"""location /t {{ content_by_lua_block {{
            package.path = "{lua}/?.lua;" .. package.path
            require("resty_ffi")
            ngx.say(select(2, ngx.load_ffi("/root/resty_ffi_no_such_dir/libx.so")))
        }} }}""")
        assert n.get("/t") == (200, b'resty_ffi: load "/root/resty_ffi_no_such_dir/libx.so": '
                                    b"/root/resty_ffi_no_such_dir/libx.so: cannot open shared object file: "
                                    b"Permission denied (this process runs as uid 65534, which cannot read it or a "
                                    b"directory above it: nginx's workers run as the user of nginx.conf; nobody and "
                                    b"www-data cannot read /root)\n")
    finally:
        shutil.rmtree(lua)


STRAY = ("resty_ffi: a runtime call takes one request (rt:name(req), a string or nil) and passes only "
         "that string to the runtime, not the method name or other arguments: got ")


def test_stray_arguments_raise(nginx):
    n = nginx(server=content("ngx.say(require('ffi_cases').stray_arguments())"))
    assert n.get("/t")[1].decode().strip().split(";") == [
        f"false|{STRAY}a string after the request", f"false|{STRAY}a table after the request",
        f"false|{STRAY}a number after the request", f"false|{STRAY}a third argument", "true|req"]


def test_answers_from_glibcs_own_malloc(nginx):
    """The cross-host case whose answers come from glibc's own malloc: here
    the process's malloc is glibc's, so nothing is copied (Envoy's is not)."""
    n = nginx(server=content("ngx.say(require('ffi_cases').libc_answers())"))
    for _ in range(8):  # answers made on all 4 threads
        assert n.get("/t") == (200, b"true|16 y|nil;true|300000 y|nil;true|5 y|nil;"
                                    b"false|resty_ffi: runtime answered with a negative length|nil\n")


def test_thousand_concurrent_calls_in_one_request(nginx):
    n = nginx(server=content(ECHO + fan_out_lua(1000)))
    assert n.get("/t") == (200, b"1000\n")


def test_callers_take_turns(nginx):
    # A caller must not spin for its answers while other woken callers wait
    # to run: of 10 light threads making 20 calls each, none finishes before
    # most of the 200 calls were answered.
    n = nginx(server=content(ECHO + """
        local semaphore = require('ngx.semaphore')
        local answered, finished_at, starts, threads = 0, {}, {}, {}
        local function caller(start)
            start:wait(5)
            for _ = 1, 20 do
                assert(rt:echo('x'))
                answered = answered + 1
            end
            finished_at[#finished_at + 1] = answered
        end
        for i = 1, 10 do
            starts[i] = semaphore.new(0)
            threads[i] = ngx.thread.spawn(caller, starts[i])
        end
        for i = 1, 10 do starts[i]:post(1) end
        for i = 1, 10 do assert(ngx.thread.wait(threads[i])) end
        table.sort(finished_at)
        ngx.say(answered, ' ', finished_at[1])"""))
    status, body = n.get("/t")
    answered, first_finished = map(int, body.split())
    assert (status, answered) == (200, 200)
    assert first_finished > 150, first_finished


def test_two_hundred_concurrent_clients(nginx):
    n = nginx(workers=2, server=content(ECHO + """
        local ok, res = rt:echo(ngx.var.arg_id)
        ngx.say(ok, ' ', res)"""))
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda i: n.get(f"/t?id={i}"), range(600)))
    assert results == [(200, f"true {i}\n".encode()) for i in range(600)]


def test_queue_full(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1', { max_queue = 1 }))
        local threads = {}
        for i = 1, 4 do
            threads[i] = ngx.thread.spawn(function() return rt:call('sleep:200:' .. i) end)
        end
        local full, good = 0, 0
        for i = 1, 4 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == tostring(i) then good = good + 1 end
            if not ok and res == 'resty_ffi: task queue full' then full = full + 1 end
        end
        ngx.say(good + full == 4, ' ', full >= 2, ' ', good >= 1)"""))
    assert n.get("/t") == (200, b"true true true\n")


def test_unload_with_pending_calls(nginx):
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1'))
        local threads = {}
        for i = 1, 5 do
            threads[i] = ngx.thread.spawn(function() return rt:call('sleep:20:' .. i) end)
        end
        ngx.sleep(0.001)
        rt:__unload()
        for i = 1, 5 do
            ngx.say(select(2, ngx.thread.wait(threads[i])))
        end
        ngx.say(rt:call('late'))
        ngx.say(require('ffi_cases').unload_then_call())"""))
    lines = n.get("/t")[1].decode().splitlines()
    assert lines[:5] == [f"true{i}" for i in range(1, 6)]
    assert lines[5] == "falseresty_ffi: runtime unloaded"
    assert lines[6] == "true|before;false|resty_ffi: runtime unloaded;true;true|again"


def test_runtime_that_never_answers_times_out(nginx):
    n = nginx(server=content("ngx.say(require('ffi_cases').never_answers())"))
    started = time.monotonic()
    assert n.get("/t") == (200, b"false|resty_ffi: runtime did not answer in time;true|still works\n")
    took = time.monotonic() - started
    # The fixture's timeout is 0.2 s: not sooner, and not much later.
    assert 0.2 <= took < 5, took


def test_late_answer_is_freed_and_the_next_call_is_prompt(nginx, tmp_path):
    # A call gives up at its timeout; its 64 KiB answer comes later, from a
    # thread of the runtime's own (the poll thread is free). The next call,
    # made before and after the late answer arrived, is answered at once. The
    # late answer is freed (the leak_test target runs this under valgrind).
    trace = Trace(tmp_path / "trace")
    timeout, late_ms = (0.5, 2000) if VALGRIND else (0.3, 1000)
    n = nginx(server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1,trace={trace.path}', {{ timeout = {timeout} }}))
        local function timed(req)
            ngx.update_time()
            local started = ngx.now()
            local ok, res = rt:call(req)
            ngx.update_time()
            return tostring(ok) .. '|' .. tostring(res) .. '|' .. (ngx.now() - started)
        end
        if ngx.var.arg_late then ngx.say(timed('late:{late_ms}:65536')) end
        ngx.say(timed(ngx.var.arg_req))"""))
    status, body = n.get("/t?late=1&req=before")
    late, before = [line.split("|") for line in body.decode().splitlines()]
    assert status == 200 and late[:2] == ["false", "resty_ffi: runtime did not answer in time"], body
    # nginx's timers count whole ms of the monotonic clock, ngx.now() whole ms
    # of the wall clock, and their difference is a double: a 0.3-s timeout
    # read 0.29999995 once (a failed CI run).
    assert timeout - 0.002 <= float(late[2]) < late_ms / 1000, late
    assert before[:2] == ["true", "before"] and float(before[2]) < timeout, before
    trace.wait_for("late 65536")
    status, body = n.get("/t?req=after")
    after = body.decode().strip().split("|")
    assert status == 200 and after[:2] == ["true", "after"] and float(after[2]) < timeout, after


def test_client_abort_while_waiting(nginx, tmp_path):
    # Each client leaves once its call reached the runtime; the answers
    # (from threads of the runtime's own) arrive after their callers left.
    trace = Trace(tmp_path / "trace")
    n = nginx(http="lua_check_client_abort on;", server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=4,trace={trace.path}'))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    assert n.get("/t?req=warm") == (200, b"truewarm\n")
    pids = n.worker_pids()
    for size in range(1, 21):
        with socket.create_connection(("127.0.0.1", n.port)) as s:
            s.sendall(f"GET /t?req=late:300:{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            trace.wait_for(f"got late:300:{size}")
    for size in range(1, 21):
        trace.wait_for(f"late {size}")
    assert n.get("/t?req=after") == (200, b"trueafter\n")
    assert n.worker_pids() == pids


def test_two_workers_reload_and_quit_with_calls_in_flight(nginx, tmp_path):
    # Every call waits in the runtime (behind a gate the test opens) when the
    # signal comes; each is answered after it.
    trace = Trace(tmp_path / "trace")
    n = nginx(workers=2, server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=16,trace={trace.path}'))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    for signal_, calls, payload in [("reload", 16, "x"), ("quit", 8, "y")]:
        gate = tmp_path / f"open-{payload}"
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            inflight = [pool.submit(n.get, f"/t?req=gate:{gate}:{payload}") for _ in range(calls)]
            trace.wait_for(f"got gate:{gate}:{payload}", calls)
            old = set(n.worker_pids())
            n.signal(signal_)
            if signal_ == "reload":
                # The master starts new workers, then tells the old ones to quit.
                assert wait_until(lambda: set(n.worker_pids()) - old, 10), "no new workers"
            else:
                # The workers quit accepting: they got the signal.
                assert wait_until(lambda: not accepts(n.port), 10), "still accepting"
            assert not any(f.done() for f in inflight)
            gate.touch()
            assert [f.result() for f in inflight] == [(200, f"true{payload}\n".encode())] * calls
        if signal_ == "reload":
            assert wait_until(lambda: n.get("/t?req=new") == (200, b"truenew\n"), 10)
    assert n.proc.wait(timeout=15) == 0


def accepts(port):
    """Whether something accepts connections on `port` (refused, or reset by a
    listener closing with the connection in its backlog: no)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except (ConnectionRefusedError, ConnectionResetError):
        return False


def test_quit_does_not_wait_for_a_killed_caller(nginx, tmp_path):
    # The aborted caller's call reached the runtime and is never answered;
    # the worker still exits at once instead of after the 30 s timeout.
    trace = Trace(tmp_path / "trace")
    n = nginx(http="lua_check_client_abort on;", server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'trace={trace.path}', {{ timeout = 30 }}))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    assert n.get("/t?req=warm") == (200, b"truewarm\n")
    with socket.create_connection(("127.0.0.1", n.port)) as s:
        s.sendall(b"GET /t?req=never HTTP/1.1\r\nHost: x\r\n\r\n")
        trace.wait_for("got never")
    started = time.monotonic()
    n.signal("quit")
    assert n.proc.wait(timeout=40) == 0
    assert time.monotonic() - started < 5


def library_mapped(pid, name):
    return f"/{name}" in Path(f"/proc/{pid}/maps").read_text()


def test_unpinned_library_stays_mapped_while_its_threads_run_it(nginx):
    # The runtime thread is still inside the library (sleeping before a late
    # answer) when Lua drops the unloaded runtime: closing the library then
    # would crash the worker when the thread returns into it. Once the thread
    # left it, the library is closed (unpinned).
    n = nginx(server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1', { unpin = true, timeout = 0.1 }))
        local ok, err = rt:call('sleep:300:late')
        rt:__unload()
        rt = nil
        collectgarbage()
        collectgarbage()
        ngx.sleep(0.5)
        ngx.say(ok, ' ', err, ' ', ngx.worker.pid())"""))
    status, body = n.get("/t")
    answer, pid = body.decode().rsplit(" ", 1)
    assert (status, answer) == (200, "false resty_ffi: runtime did not answer in time")
    # Closed after the reaper's grace period (1 s) once the thread returned.
    assert wait_until(lambda: not library_mapped(int(pid), "libtest_runtime.so"), 15), "never closed"
    assert int(pid) in n.worker_pids() and n.errors() == []


VERSIONED_RUNTIME = r"""
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *task, int *len);
void ngx_http_lua_ffi_respond(void *task, int rc, char *rsp, int rsp_len);
static void *serve(void *tq)
{
    void *task;
    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        ngx_http_lua_ffi_respond(task, 0, strdup(VERSION), 0);
    }
    return NULL;
}
int libffi_init(char *cfg, void *tq)
{
    pthread_t tid;
    (void) cfg;
    if (pthread_create(&tid, NULL, serve, tq) != 0) {
        return 1;
    }
    return pthread_detach(tid);
}
"""


@pytest.mark.parametrize("unpin", [True, False])
def test_unpin_lets_a_rebuilt_library_load(nginx, tmp_path, unpin):
    # A runtime library rebuilt in place: with unpin, loading it again (once
    # the old one was closed) runs the new code; pinned, the old code stays.
    src, lib = tmp_path / "versioned.c", tmp_path / "libversioned.so"
    src.write_text(VERSIONED_RUNTIME)

    def build(version):
        tmp = tmp_path / "libversioned.so.tmp"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", f'-DVERSION="{version}"', "-o", str(tmp),
                        str(src)], check=True)
        tmp.rename(lib)  # a new file, as an install would write it

    n = nginx(server=content(f"""
        local rt = assert(ngx.load_ffi('{lib}', nil, {{ unpin = {str(unpin).lower()} }}))
        ngx.say(select(2, rt:call('x')))
        if ngx.var.arg_unload then
            rt:__unload()
            rt = nil
            collectgarbage()
            collectgarbage()
        end"""))
    build("v1")
    assert n.get("/t?unload=1") == (200, b"v1\n")
    pid = n.worker_pids()[0]
    if unpin:
        assert wait_until(lambda: not library_mapped(pid, "libversioned.so"), 15), "v1 never closed"
    build("v2")
    assert n.get("/t") == (200, b"v2\n" if unpin else b"v1\n")


def test_default_max_queue_is_65536(nginx, tmp_path):
    # The runtime's one thread holds the first call (behind a gate): 65536
    # more calls wait in the queue, the next one finds it full at once.
    trace, gate = Trace(tmp_path / "trace"), tmp_path / "open"
    n = nginx(server=content(f"""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1,trace={trace.path}'))
        local first = ngx.thread.spawn(rt.call, rt, 'gate:{gate}:first')
        for _ = 1, 1000 do
            local file = io.open('{trace.path}')
            if file then file:close() break end
            ngx.sleep(0.01)
        end
        local threads, full = {{}}, 0
        for i = 1, 65537 do
            threads[i] = ngx.thread.spawn(rt.call, rt, 'x')
            -- A call that finds the queue full returns before it yields
            -- (lua-nginx-module calls such a thread a zombie until waited for).
            if coroutine.status(threads[i]) == 'zombie' then
                local _, ok, err = ngx.thread.wait(threads[i])
                threads[i] = nil
                full = full + ((not ok and err == 'resty_ffi: task queue full') and 1 or 1000000)
            end
        end
        io.open('{gate}', 'w'):close()
        local answered, other = 0, nil
        for _, thread in pairs(threads) do
            local _, ok, res = ngx.thread.wait(thread)
            if ok and res == 'x' then answered = answered + 1 else other = other or tostring(res) end
        end
        ngx.say(select(3, ngx.thread.wait(first)), ' ', answered, ' ', full, ' ', tostring(other))"""))
    assert n.get("/t", timeout=120) == (200, b"first 65536 1 nil\n")


def test_ssl_phases(nginx, tmp_path):
    # ssl_certificate_by_lua* waits for its answer like a request (the call
    # takes 20 ms, past the spin window: it yields). Debian's nginx and OpenSSL
    # cannot resume a handshake suspended in ssl_client_hello_by_lua* or
    # ssl_session_fetch_by_lua* (the first fails the handshake, the second
    # logs "cannot yield in sess get cb"): calls there raise instead; the
    # handshake and the session's resumption go on.
    import ssl

    from conftest import free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    ssl_port = free_port()

    def record(phase):
        return f"""
            require('resty_ffi')
            local rt = assert(ngx.load_ffi('test_runtime', 'threads=2'))
            local ok, a, b = pcall(rt.call, rt, 'sleep:20:{phase}')
            ngx.shared.results:set('{phase}', tostring(ok) .. ':' .. tostring(a) .. ':' .. tostring(b))"""

    n = nginx(http=f"""lua_shared_dict results 1m; lua_shared_dict sessions 1m;
        ssl_session_store_by_lua_block {{
            local session = require('ngx.ssl.session')
            ngx.shared.sessions:set(session.get_session_id(), session.get_serialized_session())
        }}
        ssl_session_fetch_by_lua_block {{
            {record('ssl_session_fetch')}
            local session = require('ngx.ssl.session')
            local data = ngx.shared.sessions:get(session.get_session_id())
            if data then assert(session.set_serialized_session(data)) end
        }}
        server {{
            listen 127.0.0.1:{ssl_port} ssl;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            ssl_protocols TLSv1.2;
            ssl_session_tickets off;
            ssl_client_hello_by_lua_block {{ {record('ssl_client_hello')} }}
            ssl_certificate_by_lua_block {{ {record('ssl_cert')} }}
            location /t {{ content_by_lua_block {{ ngx.say(ngx.var.ssl_session_reused) }} }}
        }}""", server=content("""
            for _, phase in ipairs({ 'ssl_client_hello', 'ssl_cert', 'ssl_session_fetch' }) do
                ngx.say(phase, '=', ngx.shared.results:get(phase))
            end"""))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    session = None
    for reused in (".", "r"):  # $ssl_session_reused: the second handshake resumes the first
        with socket.create_connection(("127.0.0.1", ssl_port), timeout=10) as raw:
            with context.wrap_socket(raw, session=session) as tls:
                tls.sendall(b"GET /t HTTP/1.0\r\nHost: x\r\n\r\n")
                reader = tls.makefile("rb")
                head = b"".join(iter(reader.readline, b"\r\n"))
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                answer = head + b"\r\n" + reader.read(length)
                session = tls.session
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(f"\r\n\r\n{reused}\n".encode()), answer
    status, body = n.get("/t")
    hello, cert_, fetch = body.decode().splitlines()
    assert cert_ == "ssl_cert=true:true:ssl_cert", body
    for line, phase in [(hello, "ssl_client_hello"), (fetch, "ssl_session_fetch")]:
        assert line.startswith(f"{phase}=false:") and line.endswith(
            f"resty_ffi: cannot wait for a runtime in the {phase} phase:nil"), body
