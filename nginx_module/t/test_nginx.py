"""Integration tests of the nginx host on Debian's real nginx + lua module."""

import concurrent.futures
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LUA_DIR, fan_out_lua, wait_until

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
    assert time.monotonic() - started < 5


def test_client_abort_while_waiting(nginx):
    n = nginx(http="lua_check_client_abort on;", server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=4'))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    assert n.get("/t?req=warm") == (200, b"truewarm\n")
    pids = n.worker_pids()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", n.port)) as s:
            s.sendall(b"GET /t?req=sleep:100:x HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.01)
    time.sleep(0.3)  # the answers arrive after their callers left
    assert n.get("/t?req=after") == (200, b"trueafter\n")
    assert n.worker_pids() == pids


def test_two_workers_reload_and_quit_with_calls_in_flight(nginx):
    n = nginx(workers=2, server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=8'))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        inflight = [pool.submit(n.get, "/t?req=sleep:300:x") for _ in range(16)]
        time.sleep(0.1)
        n.signal("reload")
        assert [f.result() for f in inflight] == [(200, b"truex\n")] * 16
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and n.get("/t?req=new")[1] != b"truenew\n":
        time.sleep(0.05)
    assert n.get("/t?req=new") == (200, b"truenew\n")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        inflight = [pool.submit(n.get, "/t?req=sleep:300:y") for _ in range(8)]
        time.sleep(0.1)
        n.signal("quit")
        assert [f.result() for f in inflight] == [(200, b"truey\n")] * 8
    assert n.proc.wait(timeout=15) == 0


def test_quit_does_not_wait_for_a_killed_caller(nginx):
    # The aborted caller's call is never answered; the worker still exits at
    # once instead of after the 30 s timeout.
    n = nginx(http="lua_check_client_abort on;", server=content("""
        local rt = assert(ngx.load_ffi('test_runtime', nil, { timeout = 30 }))
        ngx.say(rt:call(ngx.var.arg_req))"""))
    assert n.get("/t?req=warm") == (200, b"truewarm\n")
    with socket.create_connection(("127.0.0.1", n.port)) as s:
        s.sendall(b"GET /t?req=never HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    time.sleep(0.1)
    started = time.monotonic()
    n.signal("quit")
    assert n.proc.wait(timeout=40) == 0
    assert time.monotonic() - started < 5


def test_unpinned_library_stays_mapped_while_its_threads_run_it(nginx):
    # The runtime thread is still inside the library (sleeping before a late
    # answer) when Lua drops the unloaded runtime: closing the library then
    # would crash the worker when the thread returns into it.
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
    time.sleep(0.3)
    assert int(pid) in n.worker_pids() and n.errors() == []

