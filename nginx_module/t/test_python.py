"""The Python loader (examples/python: libffi_python3.so, also named
libresty_ffi_python.so) on a real nginx: modules in the original's style (cffi
+ the C ABI), modules on the resty_ffi Python package, errors, hot reload, and
the loader under both names in one worker."""

import concurrent.futures
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, RUNTIMES, wait_until

PYTHONPATH = f"{Path(__file__).parent.parent.parent / 'examples' / 'python'}:{FIXTURES / 'python'}"
MAIN = "env PYTHONPATH;"
LOAD = "local function load(cfg) return ngx.load_ffi('ffi_python3', cfg, { is_global = true }) end\n"


@pytest.fixture(autouse=True)
def pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)


def content(lua, path="/t"):
    return f"location {path} {{ content_by_lua_block {{ require('resty_ffi') {LOAD} {lua} }} }}"


def test_original_style_module(nginx):
    n = nginx(main=MAIN, http="client_max_body_size 1m; client_body_buffer_size 1m;", server=content("""
        local rt = assert(load('ffi.echo,init'))
        ngx.req.read_body()
        ngx.print(rt:echo(ngx.req.get_body_data()))"""))
    for payload in [b"hello", b"a\0b", bytes(range(256)) * 1024]:
        assert n.get("/t", data=payload) == (200, b"true" + payload)
    assert n.get("/t") == (200, b"true")


def test_forgotten_is_global_is_named(nginx):
    """Without is_global, Python's extension modules cannot import: the loader
    says what to do and returns rc 3; loaded again with it, the runtime works."""
    n = nginx(main=MAIN, server=content("""
        local rt, rc = ngx.load_ffi('ffi_python3', 'ffi.echo,init')
        local again = assert(load('ffi.echo,init'))
        ngx.say(tostring(rt), '|', rc, '|', select(2, again:echo('works')))"""))
    assert n.get("/t") == (200, b"nil|3|works\n")
    log = n.log.read_text()
    assert "ffi_python3: load the Python loader with { is_global = true }" in log, log
    assert 'resty_ffi: libffi_init of ffi_python3 returned 3 (cfg "ffi.echo,init")' in log, log


# nginx as root without the capabilities that let root read anything: a
# directory of mode 000 is then unreadable to it, as /root is to nobody.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def test_unreadable_module_directory_is_named(nginx, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "locked_mod.py").write_text("def init(cfg, tq):\n    return 0\n")
    locked.chmod(0)
    try:
        n = nginx(main=MAIN, wrapper=NO_DAC, server=content(f"""
            local rt, rc = load('{locked}/locked_mod,init')
            ngx.say(tostring(rt), '|', rc)"""))
        assert n.get("/t") == (200, b"nil|-1\n")
    finally:
        locked.chmod(0o755)
    log = n.log.read_text()
    assert (f"ffi_python3: the module's directory {locked} cannot be read by this process (uid 0): "
            "Permission denied; Python, its standard library and the runtime's modules must be readable by the "
            "user the workers run as") in log, log


def test_unreadable_python_home_is_named(nginx, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0)
    monkeypatch.setenv("PYTHONHOME", str(home))
    try:
        n = nginx(main=MAIN + " env PYTHONHOME;", wrapper=NO_DAC, server=content("""
            local rt, rc = load('ffi.echo,init')
            ngx.say(tostring(rt), '|', rc)"""))
        assert n.get("/t") == (200, b"nil|3\n")
    finally:
        home.chmod(0o755)
    log = n.log.read_text()
    assert "ffi_python3: cannot start Python: " in log, log
    assert f"ffi_python3: Python's home {home} cannot be read by this process (uid 0): Permission denied" in log, log


def test_two_hundred_concurrent_clients(nginx):
    n = nginx(main=MAIN, workers=2, server=content("""
        local orig = assert(load('ffi.echo,init'))
        local pkg = assert(load('pkg_demo,init,sync'))
        local _, a = orig:echo(ngx.var.arg_i)
        local _, b = pkg:call(ngx.var.arg_i)
        ngx.say(a, ' ', b)"""))
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda i: n.get(f"/t?i={i}"), range(600)))
    assert results == [(200, f"{i} sync:{i}\n".encode()) for i in range(600)]


def test_package_handlers_and_exceptions(nginx):
    n = nginx(main=MAIN, server=content("""
        local cases = require('runtime_cases')
        for _, req in ipairs({ 'hi', 'boom', 'rc:7', 'nothing', 'number' }) do
            ngx.say(cases.python_sync(req))
        end
        ngx.say(cases.python_async('hi'))
        ngx.say(cases.python_async('boom'))
        ngx.say(cases.python_echo('a\\0b'))"""))
    assert n.get("/t") == (200, b"true|sync:hi\nfalse|1|ValueError: bad input\nfalse|7|custom failure\ntrue|\n"
                                b"false|1|TypeError: handler returned int, want bytes, str or None\n"
                                b"true|async:hi\nfalse|1|RuntimeError: async boom\ntrue|a\0b\n")


def test_async_requests_overlap(nginx):
    n = nginx(main=MAIN, server=content("""
        local async = assert(load('pkg_demo,init,async'))
        local start = ngx.now()
        local threads = {}
        for i = 1, 100 do
            threads[i] = ngx.thread.spawn(function() return async:call(tostring(i)) end)
        end
        local good = 0
        for i = 1, 100 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == 'async:' .. i then good = good + 1 end
        end
        ngx.update_time()
        ngx.say(good, ' ', ngx.now() - start)"""))
    good, took = n.get("/t")[1].split()
    assert good == b"100"
    assert float(took) < 2.0, "100 sleeps of 0.3 s must overlap"


def test_every_task_is_answered_whatever_the_handler_does(nginx):
    n = nginx(main=MAIN, server=content("""
        local cases = require('runtime_cases')
        for _, req in ipairs({ 'exit', 'exit', 'exit', 'huge', 'hi' }) do
            ngx.say(cases.python_sync(req))
        end
        ngx.say(cases.python_async('cancel'))
        ngx.say(cases.python_async('hi'))"""))
    assert n.get("/t") == (200, b"false|1|SystemExit: bye\n" * 3 +
                           b"false|1|resty_ffi: response too large: 2147483648 bytes (at most 2147483647)\n"
                           b"true|sync:hi\nfalse|1|CancelledError: cancelled\ntrue|async:hi\n")


def test_init_errors(nginx):
    n = nginx(main=MAIN, server=content("""
        ngx.say(load('pkg_demo,init_rc,5'))
        ngx.say(load('pkg_demo,init_rc,0') ~= nil)
        ngx.say(load('pkg_demo,init_raises'))
        ngx.say(load('no_such_module,init'))
        ngx.say(load('pkg_demo,no_such_function'))
        ngx.say(load('no function'))
        ngx.say(load(nil))"""))
    assert n.get("/t") == (200, b"nil5\ntrue\nnil-1\nnil-1\nnil-1\nnil2\nnil2\n")
    log = n.log.read_text()
    assert "RuntimeError: init failed on purpose" in log
    assert "ModuleNotFoundError: No module named 'no_such_module'" in log


HOT_V1 = """import resty_ffi
def init(cfg, tq):
    return resty_ffi.serve(tq, lambda req: b"v1 " + req)
"""
HOT_V2 = HOT_V1.replace('b"v1 "', 'b"version two "')


def test_hot_reload(nginx, tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "hot.py").write_text(HOT_V1)
    n = nginx(main=MAIN, server=content(f"""
        ngx.say(require('runtime_cases').python_reload('{mods}'), ' ', ngx.worker.pid())"""))
    status, body = n.get("/t")
    assert status == 200 and body.startswith(b"true|v1 x ")
    pid = body.split()[-1]
    # A different size: the cached .pyc is stale even within the same second.
    (mods / "hot.py").write_text(HOT_V2)
    assert n.get("/t")[1] == b"true|version two x " + pid + b"\n", "new code, same worker"
    (mods / "hot.py").write_text(HOT_V1)
    assert n.get("/t")[1] == b"true|v1 x " + pid + b"\n"


def loader_mappings(pid):
    """How many mappings of libffi_python3.so worker `pid` has (one loaded
    object maps the file several times; a second object would double them)."""
    return open(f"/proc/{pid}/maps").read().count("/libffi_python3.so\n")


def test_original_name_and_options_survive_the_grace_period(nginx):
    """The original's examples load the loader as "resty_ffi_python" with
    unpin = true. The core closes an unpinned library a grace period after its
    runtime was collected; the loader stays (a second Python cannot start in
    the process), so the next load works. Failed before: the name did not
    exist; then, with the name, every load after the grace period returned
    nil (rc 3, "cannot start Python: failed to read thread state")."""
    n = nginx(main=MAIN, server="""
        location /t { content_by_lua_block {
            require('resty_ffi')
            local rt, err = ngx.load_ffi('resty_ffi_python', 'ffi.echo?,init', { is_global = true, unpin = true })
            if not rt then return ngx.say('load failed: ', err) end
            local ok, res = rt:echo('hello')
            rt:__unload()
            local again = { rt:echo('again') }
            rt = nil
            collectgarbage()
            collectgarbage()
            ngx.say(ok, ' ', res, ' ', tostring(again[1]), ' ', again[2], ' ', ngx.worker.pid())
        } }""")
    expected = b"true hello false resty_ffi: runtime unloaded "
    status, body = n.get("/t")
    assert status == 200 and body.startswith(expected), body
    pid = int(body.split()[-1])
    # The old loader was unmapped here, some 1.1 s after the call.
    closed = wait_until(lambda: loader_mappings(pid) == 0, 3)
    status, body = n.get("/t")
    assert status == 200 and body == expected + b"%d\n" % pid, body
    assert not closed


def test_both_names_and_a_copy_share_one_interpreter(nginx, tmp_path):
    """libresty_ffi_python.so is a symlink: dlopen finds the object loaded as
    libffi_python3.so. A real copy of the file is a second object, which
    still runs in the one interpreter of the process."""
    original = next(Path(d) / "libffi_python3.so" for d in RUNTIMES.split(":")
                    if (Path(d) / "libffi_python3.so").exists())
    copy = tmp_path / "libffi_python3_copy.so"
    shutil.copy(original, copy)
    n = nginx(main=MAIN, server=content(f"""
        local cases = require('runtime_cases')
        ngx.say(ngx.worker.pid())
        ngx.say(cases.python_interpreters(ngx.unescape_uri(ngx.var.arg_libs)))"""))

    def interpreters(libs):
        status, body = n.get("/t?libs=" + libs.replace(" ", "%20"))
        assert status == 200, body
        pid, ids = body.decode().splitlines()
        return int(pid), ids.split()

    pid, (first,) = interpreters("ffi_python3")
    mapped = loader_mappings(pid)
    assert mapped > 0
    assert interpreters("resty_ffi_python ffi_python3") == (pid, [first, first])
    assert loader_mappings(pid) == mapped, "the second name loaded a second object"
    assert interpreters(f"{copy} resty_ffi_python") == (pid, [first, first])
