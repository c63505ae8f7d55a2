"""The Node.js loader (examples/nodejs: libffi_nodejs.so, resty_ffi.js) on a real
nginx: echo in the original's style and on resty_ffi.serve, exceptions and
rejections, init errors, 200 concurrent clients, unload and load again, hot
reload, and nginx's signals with Node loaded."""

import concurrent.futures
from pathlib import Path

import pytest

from conftest import assert_logged, assert_signals_stay_nginx, free_port

DEMO = Path(__file__).absolute().parents[2] / "examples" / "nodejs"
MAIN = "env NODE_PATH;"
LOAD = "local function load(cfg) return ngx.load_ffi('ffi_nodejs', cfg, { is_global = true }) end\n"


@pytest.fixture(autouse=True)
def node_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NODE_PATH", f"{DEMO}:{tmp_path}")


def content(lua, path="/t"):
    return f"location {path} {{ content_by_lua_block {{ require('resty_ffi') {LOAD} {lua} }} }}"


def describe(call):
    """Lua: every value of `call` joined by '|'."""
    return f"ngx.say(table.concat((function(...) local t = {{}} for i = 1, select('#', ...) do " \
           f"t[i] = tostring((select(i, ...))) end return t end)({call}), '|'))"


@pytest.mark.parametrize("module", ["demo/echo", "demo/serve_echo"])
def test_echo(nginx, module):
    n = nginx(main=MAIN, http="client_max_body_size 1m; client_body_buffer_size 1m;", server=content(f"""
        local rt = assert(load('{module},init'))
        if ngx.var.arg_nil then
            {describe("rt:echo(nil)")}
            return
        end
        ngx.req.read_body()
        ngx.print(rt:echo(ngx.req.get_body_data()))"""))
    for payload in [b"hello", b"a\0b", bytes(range(256)) * 1024]:
        assert n.get("/t", data=payload) == (200, b"true" + payload)
    assert n.get("/t?nil=1") == (200, b"true|\n")


def test_serve_errors_and_cfg(nginx):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo/serve_echo,init'))
        for _, req in ipairs({{ 'hi', 'a\\0b', 'throw', 'reject', 'nil', 'sleep 10' }}) do
            {describe("rt:call(req)")}
        end
        local pre = assert(load('demo/serve_echo,init,x,y: '))
        {describe("pre:call('z')")}"""))
    assert n.get("/t") == (200, b"true|hi\ntrue|a\0b\nfalse|1|TypeError: bad input\n"
                                b"false|7|custom failure\ntrue|\ntrue|sleep 10\ntrue|x,y: z\n")


WORKER_POLLER = """const { Worker, isMainThread, workerData } = require('node:worker_threads');
const ffi = require('resty_ffi');
if (isMainThread) {
  exports.init = (cfg, tq) => { new Worker(__filename, { workerData: tq }); return 0; };
} else {
  ffi.poll_async(workerData, (task) => {
    const req = ffi.get_req(task).toString();
    ffi.respond(task, 0, req);
    if (req === 'exit') {
      process.exit(0);  // in a worker thread: ends the worker only
    }
  });
}
"""


def test_every_task_is_answered_when_the_polling_js_thread_is_gone(nginx, tmp_path):
    # poll_async's JS thread (a worker thread here) ends: its poller can no
    # longer hand tasks to JS and answers them with an error instead.
    (tmp_path / "worker_poller.js").write_text(WORKER_POLLER)
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(ngx.load_ffi('ffi_nodejs', 'worker_poller,init', {{ is_global = true, timeout = 5 }}))
        {describe("rt:call('one')")}
        {describe("rt:call('exit')")}
        ngx.sleep(0.5)
        {describe("rt:call('after')")}"""))
    assert n.get("/t") == (200, b"true|one\ntrue|exit\n"
                                b"false|-1|resty_ffi: the JavaScript thread that polls this runtime has ended\n")


def test_a_response_over_2_gb_is_an_error(nginx):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo/serve_echo,init'))
        {describe("rt:call('huge')")}
        {describe("rt:call('after')")}"""))
    assert n.get("/t") == (200, b"false|1|resty_ffi: response too large: 2147483648 bytes (at most 2147483647)\n"
                                b"true|after\n")


def test_init_errors(nginx):
    n = nginx(main=MAIN, server=content("""
        ngx.say(load('demo/serve_echo,rc,5'))
        ngx.say(load('demo/serve_echo,rc,0') ~= nil)
        ngx.say(load('demo/serve_echo,fail'))
        ngx.say(load('demo/no_such_module,init'))
        ngx.say(load('demo/serve_echo,noSuchFunc'))
        ngx.say(load('demo/serve_echo'))
        ngx.say(load(nil))"""))
    assert n.get("/t") == (200, b"nil5\ntrue\nnil-1\nnil-1\nnil-1\nnil2\nnil2\n")
    assert_logged(n, ["Error: init failed on purpose",
                      "Cannot find module 'demo/no_such_module'",
                      "demo/serve_echo.noSuchFunc is not a function"])


def test_two_hundred_concurrent_clients(nginx):
    n = nginx(main=MAIN, workers=2, server=content("""
        local orig = assert(load('demo/echo,init'))
        local serve = assert(load('demo/serve_echo,init'))
        local _, a = orig:echo(ngx.var.arg_i)
        local _, b = serve:echo('sleep 20')
        local _, c = serve:echo('serve ' .. ngx.var.arg_i)
        ngx.say(a, ' ', b, ' ', c)"""))
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda i: n.get(f"/t?i={i}"), range(600)))
    assert results == [(200, f"{i} sleep 20 serve {i}\n".encode()) for i in range(600)]


def test_uncaught_errors_are_logged(nginx):
    # The module throws and rejects on its own once loaded; once both are
    # logged, the runtime still answers, in the same worker.
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo/serve_echo,uncaught'))
        if ngx.var.arg_call then
            {describe("rt:call('still here')")}
        end
        ngx.say(ngx.worker.pid())"""))
    status, pid = n.get("/t")
    assert status == 200, pid
    assert_logged(n, ["ffi_nodejs: uncaught exception: Error: uncaught on purpose",
                      "ffi_nodejs: unhandled rejection: Error: unhandled on purpose"])
    assert n.get("/t?call=1") == (200, b"true|still here\n" + pid)


@pytest.mark.parametrize("module", ["demo/echo", "demo/serve_echo"])
def test_unload_and_load_again(nginx, module):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('{module},init'))
        {describe("rt:call('one')")}
        rt:__unload()
        {describe("rt:call('two')")}
        local again = assert(load('{module},init'))
        {describe("again:call('three')")}
        {describe("again == rt")}
        again:__unload()"""))
    for _ in range(3):
        status, body = n.get("/t")
        lines = body.decode().splitlines()
        assert status == 200 and lines[0] == "true|one" and lines[2:] == ["true|three", "false"], body
        assert lines[1].startswith("false|resty_ffi: "), body


HOT = """const ffi = require('resty_ffi');
exports.init = (cfg, tq) => ffi.serve(tq, (req) => '%s ' + req);
"""


def test_hot_reload(nginx, tmp_path):
    src = tmp_path / "hot.js"
    src.write_text(HOT % "v1")
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load(ngx.var.arg_cfg))
        local ok, res = rt:call('x')
        rt:__unload()
        ngx.say(ok, '|', res, ' ', ngx.worker.pid())"""))
    status, body = n.get("/t?cfg=hot?,init")
    assert status == 200 and body.startswith(b"true|v1 x "), body
    pid = body.split()[-1]
    src.write_text(HOT % "version two")
    assert n.get("/t?cfg=hot?,init")[1] == b"true|version two x " + pid + b"\n", "new code, same worker"
    src.write_text(HOT % "v3")
    assert n.get("/t?cfg=hot,init")[1] == b"true|version two x " + pid + b"\n", "no '?': the cached module"
    assert n.get("/t?cfg=hot?,init")[1] == b"true|v3 x " + pid + b"\n"


def test_http2_client(nginx):
    h2 = free_port()
    n = nginx(main=MAIN, http=f"""
        server {{
            listen 127.0.0.1:{h2} http2;
            location /up {{ return 200 "up $arg_a"; }}
            location /missing {{ return 404 "not here"; }}
            location /slow {{ content_by_lua_block {{ ngx.sleep(0.3) ngx.print('slow ', ngx.var.args) }} }}
        }}""", server=content(f"""
        local rt = assert(load('demo/http2,init'))
        local base = 'http://127.0.0.1:{h2}'
        {describe("rt:get(base .. '/up?a=1')")}
        {describe("rt:get(base .. '/missing')")}
        {describe("rt:get('http://127.0.0.1:1/')")}
        local start = ngx.now()
        local threads = {{}}
        for i = 1, 50 do
            threads[i] = ngx.thread.spawn(function() return rt:get(base .. '/slow?' .. i) end)
        end
        local good = 0
        for i = 1, 50 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == 'slow ' .. i then good = good + 1 end
        end
        ngx.update_time()
        ngx.say(good, ' ', ngx.now() - start)"""))
    status, body = n.get("/t")
    lines = body.decode().splitlines()
    assert status == 200 and lines[:2] == ["true|up 1", "false|404|not here"], body
    assert lines[2].startswith("false|1|Error") and "connect ECONNREFUSED" in lines[2], body
    good, took = lines[3].split()
    assert good == "50" and float(took) < 3.0, "50 fetches of 0.3 s must overlap"


def test_signals_with_node_loaded(nginx):
    """With Node in the worker, nginx's signals stay nginx's: reload replaces the
    worker, SIGQUIT sent to it stops it cleanly."""
    n = nginx(main=MAIN, workers=1, server=content("""
        local rt = assert(load('demo/serve_echo,init'))
        local ok, res = rt:call('x')
        ngx.say(ok, ' ', res, ' ', ngx.worker.pid())"""))
    assert_signals_stay_nginx(n, "libnode.so")


def test_shared_fixture(nginx):
    n = nginx(main=MAIN, server=content("""
        local cases = require('runtime_cases')
        ngx.say(cases.node_echo('a\\0b'))
        ngx.say(cases.node_serve('hi'))
        ngx.say(cases.node_serve('throw'))"""))
    assert n.get("/t") == (200, b"true|a\0b\ntrue|hi\nfalse|1|TypeError: bad input\n")
