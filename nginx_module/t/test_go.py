"""The Go echo runtime (examples/go_echo, cgo c-shared) on a real nginx, and
nginx's signal handling once the Go runtime lives in the process."""

import concurrent.futures
import os
import signal

from conftest import fan_out_lua, wait_until

GO = "require('resty_ffi') local rt = assert(ngx.load_ffi('go_echo'))\n"
ECHO_ARG = GO + "local ok, res = rt:echo(ngx.var.arg_id) ngx.say(ok, ' ', res, ' ', ngx.worker.pid())"


def content(lua):
    return f"location /t {{ content_by_lua_block {{ {lua} }} }}"


def echo(n, i="x"):
    """Returns (ok and res as text, worker pid) of one call through Go."""
    status, body = n.get(f"/t?id={i}")
    assert status == 200, body
    ok, res, pid = body.decode().split()
    return f"{ok} {res}", int(pid)



def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def go_loaded(pid):
    return "libgo_echo.so" in open(f"/proc/{pid}/maps").read()


def test_echo_payloads_and_nil(nginx):
    n = nginx(server=content(GO + """
        ngx.req.read_body()
        local ok, res = rt:echo(ngx.req.get_body_data())
        ngx.print(ok, ':', res)"""), http="client_max_body_size 2m; client_body_buffer_size 2m;")
    for payload in [b"hello", b"a\0b\0", bytes(range(256)) * 4096]:
        assert n.get("/t", data=payload) == (200, b"true:" + payload)
    assert n.get("/t") == (200, b"true:")


def test_shared_fixture(nginx):
    n = nginx(server=content("ngx.say(require('runtime_cases').go_echo(ngx.var.arg_req))"))
    assert n.get("/t?req=hello") == (200, b"true|hello\n")


def test_original_name_is_the_same_object(nginx):
    """The original's README and Go example load the Go echo as "ffi_go_echo":
    a symlink to libgo_echo.so, so both names give the one Go runtime a
    process can hold (a second copy would start a second Go runtime). Failed
    before: no such library."""
    n = nginx(server=content("""
        require('resty_ffi')
        local rt, err = ngx.load_ffi(ngx.var.arg_lib)
        if not rt then return ngx.say('load failed: ', err) end
        local ok, res = rt:echo('foobar')
        rt:__unload()
        local after = { rt:echo('foobar') }
        ngx.say(ok, ' ', res, ' ', tostring(after[1]), ' ', after[2], ' ', ngx.worker.pid())"""))
    expected = "true foobar false resty_ffi: runtime unloaded"
    body = n.get("/t?lib=go_echo")[1].decode()
    assert body.startswith(expected), body
    pid = int(body.split()[-1])
    mapped = open(f"/proc/{pid}/maps").read().count("/libgo_echo.so\n")
    for lib in ["ffi_go_echo", "go_echo", "libffi_go_echo.so"]:
        assert n.get(f"/t?lib={lib}")[1].decode() == f"{expected} {pid}\n", lib
    assert open(f"/proc/{pid}/maps").read().count("/libgo_echo.so\n") == mapped


def test_two_hundred_concurrent_clients(nginx):
    n = nginx(workers=2, server=content(ECHO_ARG))
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda i: echo(n, i)[0], range(1000)))
    assert results == [f"true {i}" for i in range(1000)]


def test_thousand_calls_in_flight_in_one_request(nginx):
    n = nginx(server=content(GO + fan_out_lua(1000)))
    assert n.get("/t") == (200, b"1000\n")


def test_reload_after_go_loaded(nginx):
    n = nginx(workers=2, server=content(ECHO_ARG))
    old = n.worker_pids()
    for i in range(20):
        echo(n, i)
    assert all(go_loaded(p) for p in old)
    # Runtimes load lazily in workers: the master, which handles the
    # signals of `nginx -s`, never runs Go.
    assert not go_loaded(n.proc.pid)
    n.signal("reload")
    assert wait_until(lambda: not any(alive(p) for p in old), 10), "old workers did not exit"
    new = n.worker_pids()
    assert len(new) == 2 and not set(new) & set(old)
    assert echo(n, "after-reload")[0] == "true after-reload"
    assert n.proc.poll() is None


def test_quit_after_go_loaded(nginx):
    n = nginx(workers=2, server=content(ECHO_ARG))
    for i in range(20):
        echo(n, i)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(echo, n, i) for i in range(8)]
        assert [c.result()[0] for c in calls] == [f"true {i}" for i in range(8)]
    n.signal("quit")
    assert n.proc.wait(timeout=10) == 0


def test_killed_worker_is_respawned_and_serves(nginx):
    n = nginx(server=content(ECHO_ARG), log_level="notice")
    res, pid = echo(n, "before")
    assert res == "true before" and go_loaded(pid)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: n.worker_pids() and n.worker_pids() != [pid], 10), "no new worker"
    res, new_pid = echo(n, "after")
    assert res == "true after" and new_pid != pid and go_loaded(new_pid)
    # The master saw the child die through SIGCHLD.
    assert f"worker process {pid} exited on signal 9" in n.log.read_text()
    open(n.log, "w").close()  # the expected "exited on signal" is not a test failure


def test_signals_sent_to_a_go_worker_still_reach_nginx(nginx):
    """SIGQUIT / SIGTERM sent straight to a worker that runs Go: nginx's own
    handlers still run (graceful / fast exit) and the master respawns it."""
    n = nginx(server=content(ECHO_ARG), log_level="notice")
    for sig in (signal.SIGQUIT, signal.SIGTERM):
        res, pid = echo(n, sig.name)
        assert res == f"true {sig.name}" and go_loaded(pid)
        os.kill(pid, sig)
        assert wait_until(lambda: not alive(pid), 10), f"worker ignored {sig.name}"
        assert wait_until(lambda: n.worker_pids() and n.worker_pids() != [pid], 10)
        assert f"worker process {pid} exited with code 0" in n.log.read_text()
    assert echo(n, "end")[0] == "true end"

