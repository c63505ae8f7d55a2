"""The Java loader (examples/java: libffi_java.so, resty_ffi.jar) on a real
nginx: a runtime in the original's style (jnr-ffi), runtimes on the resty.ffi
API, exceptions, init errors, unload and load again, hot reload, and an
HTTP client runtime fetching from the nginx under test."""

import concurrent.futures
import subprocess
from pathlib import Path

import pytest

from conftest import RUNTIMES, assert_logged, assert_signals_stay_nginx

JNR = [f"/usr/share/java/{jar}.jar" for jar in
       ("jnr-ffi", "jffi", "jnr-x86asm", "asm", "asm-commons", "asm-analysis", "asm-tree", "asm-util")]
EXAMPLES = next(Path(d) / "examples.jar" for d in RUNTIMES.split(":") if (Path(d) / "examples.jar").exists())
JAVAC = "/usr/lib/jvm/java-17-openjdk-amd64/bin/javac"
MAIN = "env CLASSPATH; env JAVA_OPTS;"
LOAD = "local function load(cfg) return ngx.load_ffi('ffi_java', cfg) end\n"


@pytest.fixture(autouse=True)
def java_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLASSPATH", ":".join([str(EXAMPLES), str(tmp_path / "classes")] + JNR))
    monkeypatch.setenv("JAVA_OPTS", "-Xmx128m -Djava.library.path=/usr/lib/x86_64-linux-gnu/jni")


def content(lua, path="/t"):
    return f"location {path} {{ content_by_lua_block {{ require('resty_ffi') {LOAD} {lua} }} }}"


def describe(call):
    """Lua: every value of `call` joined by '|'."""
    return f"ngx.say(table.concat((function(...) local t = {{}} for i = 1, select('#', ...) do " \
           f"t[i] = tostring((select(i, ...))) end return t end)({call}), '|'))"


def test_original_style_echo(nginx):
    n = nginx(main=MAIN, http="client_max_body_size 1m; client_body_buffer_size 1m;", server=content("""
        local rt = assert(load('demo.jnr.Echo,init'))
        ngx.req.read_body()
        ngx.print(rt:echo(ngx.req.get_body_data()))"""))
    for payload in [b"hello", b"a\0b", bytes(range(256)) * 1024]:
        assert n.get("/t", data=payload) == (200, b"true" + payload)
    assert n.get("/t") == (200, b"true")


def test_api_echo_and_exceptions(nginx):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo.api.Echo,init,2'))
        for _, req in ipairs({{ 'hi', 'a\\0b', 'boom', 'rc:7', 'rc:0' }}) do
            {describe("rt:call(req)")}
        end
        {describe("rt:call(nil)")}"""))
    assert n.get("/t") == (200, b"true|hi\ntrue|a\0b\nfalse|1|IllegalArgumentException: bad input\n"
                                b"false|7|custom failure\nfalse|1|custom failure\ntrue|\n")


def test_two_hundred_concurrent_clients(nginx):
    n = nginx(main=MAIN, workers=2, server=content("""
        local jnr = assert(load('demo.jnr.Echo,init'))
        local api = assert(load('demo.api.Echo,init,4'))
        local _, a = jnr:echo(ngx.var.arg_i)
        local _, b = api:echo('api ' .. ngx.var.arg_i)
        ngx.say(a, ' ', b)"""))
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda i: n.get(f"/t?i={i}"), range(600)))
    assert results == [(200, f"{i} api {i}\n".encode()) for i in range(600)]


def test_init_errors(nginx):
    n = nginx(main=MAIN, server=content("""
        ngx.say(load('demo.api.Echo,initRc,5'))
        ngx.say(load('demo.api.Echo,initRc,0') ~= nil)
        ngx.say(load('demo.api.Echo,initThrows'))
        ngx.say(load('demo.NoSuchClass,init'))
        ngx.say(load('demo.api.Echo,noSuchMethod'))
        ngx.say(load('demo.api.Echo'))
        ngx.say(load(nil))"""))
    assert n.get("/t") == (200, b"nil5\ntrue\nnil-1\nnil-1\nnil-1\nnil2\nnil2\n")
    assert_logged(n, ["java.lang.IllegalStateException: init failed on purpose",
                      "java.lang.ClassNotFoundException: demo.NoSuchClass",
                      "java.lang.NoSuchMethodException: demo.api.Echo.noSuchMethod"])


def test_unload_and_load_again(nginx):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo.api.Echo,init'))
        {describe("rt:call('one')")}
        rt:__unload()
        {describe("rt:call('two')")}
        local again = assert(load('demo.api.Echo,init'))
        {describe("again:call('three')")}
        {describe("again == rt")}
        again:__unload()"""))
    for _ in range(3):
        status, body = n.get("/t")
        lines = body.decode().splitlines()
        assert status == 200 and lines[0] == "true|one" and lines[2:] == ["true|three", "false"], body
        assert lines[1].startswith("false|resty_ffi: "), body


def test_unpinned_loader_stays_loaded(nginx):
    """unpin lets the host dlclose a runtime library; the loader must survive
    it (-z nodelete): the process's JVM cannot be created a second time."""
    n = nginx(main=MAIN, server=content(f"""
        for i = 1, 3 do
            local rt = assert(ngx.load_ffi('ffi_java', 'demo.api.Echo,init', {{ unpin = true }}))
            {describe("rt:call('round ' .. i)")}
            rt:__unload()
            rt = nil
            collectgarbage()
            collectgarbage()
        end"""))
    assert n.get("/t") == (200, b"true|round 1\ntrue|round 2\ntrue|round 3\n")


HOT = """package hot;

public class Hot {
    public static int init(String cfg, long tq) {
        return resty.ffi.Ffi.serve(tq, req -> ("%s " + new String(req)).getBytes());
    }
}
"""


def test_hot_reload(nginx, tmp_path):
    src = tmp_path / "src" / "hot" / "Hot.java"
    src.parent.mkdir(parents=True)

    def build(version):
        src.write_text(HOT % version)
        subprocess.run([JAVAC, "-nowarn", "-cp", str(EXAMPLES.parent / "resty_ffi.jar"),
                        "-d", str(tmp_path / "classes"), str(src)], check=True)

    build("v1")
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('hot.Hot?,init'))
        local ok, res = rt:call('x')
        rt:__unload()
        ngx.say(ok, '|', res, ' ', ngx.worker.pid())"""))
    status, body = n.get("/t")
    assert status == 200 and body.startswith(b"true|v1 x "), body
    pid = body.split()[-1]
    build("version two")
    assert n.get("/t")[1] == b"true|version two x " + pid + b"\n", "new code, same worker"
    build("v3")
    assert n.get("/t")[1] == b"true|v3 x " + pid + b"\n"
    # The original's form: resty.ffi.Loader loads the class afresh.
    n2 = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('resty.ffi.Loader,init,hot.Hot?,init'))
        ngx.say(rt:call('y'))
        rt:__unload()
        ngx.say(load('resty.ffi.Loader,init,hot.Hot'))"""))
    assert n2.get("/t")[1] == b"truev3 y\nnil2\n"
    build("v4")
    assert n2.get("/t")[1] == b"truev4 y\nnil2\n"


def test_http_client(nginx):
    n = nginx(main=MAIN, server=content(f"""
        local rt = assert(load('demo.http.Fetch,init'))
        local base = 'http://127.0.0.1:' .. ngx.var.server_port
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
        ngx.say(good, ' ', ngx.now() - start)""") + """
        location /up { return 200 "up $arg_a"; }
        location /missing { return 404 "not here"; }
        location /slow { content_by_lua_block { ngx.sleep(0.3) ngx.print('slow ', ngx.var.args) } }""")
    status, body = n.get("/t")
    lines = body.decode().splitlines()
    assert status == 200 and lines[:2] == ["true|up 1", "false|404|not here"], body
    assert lines[2].startswith("false|1|ConnectException"), body
    good, took = lines[3].split()
    assert good == "50" and float(took) < 3.0, "50 fetches of 0.3 s must overlap"


def test_signals_with_jvm_loaded(nginx):
    """With a JVM in the worker (started with -Xrs), nginx's signals stay
    nginx's: reload replaces the worker, SIGQUIT sent to it stops it cleanly."""
    n = nginx(main=MAIN, workers=1, server=content("""
        local rt = assert(load('demo.api.Echo,init'))
        local ok, res = rt:call('x')
        ngx.say(ok, ' ', res, ' ', ngx.worker.pid())"""))
    assert_signals_stay_nginx(n, "libjvm.so")



def test_shared_fixture(nginx):
    n = nginx(main=MAIN, server=content("""
        local cases = require('runtime_cases')
        ngx.say(cases.java_jnr_echo('a\\0b'))
        ngx.say(cases.java_jnr_libc_echo('c\\0d'))
        ngx.say(cases.java_echo('hi'))
        ngx.say(cases.java_echo('boom'))"""))
    assert n.get("/t") == (200, b"true|a\0b\ntrue|c\0d\ntrue|hi\nfalse|1|IllegalArgumentException: bad input\n")
