"""The runtimes of examples/ on Envoy through the shared fixture
tests/fixtures/runtime_cases.lua (the nginx tests run the same file): Go,
the Rust SDK (echo, async HTTP client), the Python loader (original-style
module, resty_ffi package, exceptions, hot reload), the Go echo and the Python
loader under the names the original's README uses, 200 concurrent clients,
and a clean SIGTERM shutdown with the Go runtime loaded."""

import concurrent.futures
import os
import shutil
import subprocess
import tempfile
import time

import harness

PORT, ADMIN, PORT_SIGTERM, ADMIN_SIGTERM, PORT_README = harness.free_ports(5)


# What the original README's Envoy snippet does, on our filter: the Go echo
# and the Python loader by the original's names; the request then goes on.
README_SNIPPET = r"""
function envoy_on_request(request_handle)
  require("resty_ffi")
  local go = ngx.load_ffi("ffi_go_echo")
  local ok, res = go:foobar("foobar", request_handle)
  assert(ok and res == "foobar", res)
  local py = ngx.load_ffi("resty_ffi_python", "ffi.echo?,init", { is_global = true })
  ok, res = py:echo("hello", request_handle)
  assert(ok and res == "hello", res)
end
"""

HOT = """import resty_ffi
def init(cfg, tq):
    return resty_ffi.serve(tq, lambda req: b"%s " + req)
"""


def build_runtimes():
    """Go echo, the Rust HTTP client and the Python loader, next to the
    runtimes the harness builds."""
    cargo = shutil.which("cargo") or str(harness.pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--manifest-path", str(harness.ROOT / "Cargo.toml"),
                    "-p", "rust_http_client"], check=True)
    shutil.copy2(harness.RELEASE / "librust_http_client.so", harness.RUNTIMES / "librust_http_client.so")
    subprocess.run([str(harness.ROOT / "examples" / "go_echo" / "build.sh"), str(harness.RUNTIMES / "libgo_echo.so")],
                   check=True)
    subprocess.run([str(harness.ROOT / "examples" / "python" / "build.sh"),
                    str(harness.RUNTIMES / "libffi_python3.so")], check=True)


class State:
    def __init__(self):
        build_runtimes()
        os.environ["PYTHONPATH"] = f"{harness.ROOT / 'examples' / 'python'}:{harness.FIXTURES / 'python'}"
        self.upstream, self.base = harness.slow_upstream()
        self.mods = tempfile.mkdtemp(prefix="resty_ffi_hot_")
        self.envoy = harness.Envoy([listener(PORT), harness.listener("readme", PORT_README, harness.ours(README_SNIPPET))],
                                   ADMIN, concurrency=2)

    def stop(self):
        self.envoy.stop()
        self.upstream.shutdown()
        shutil.rmtree(self.mods, ignore_errors=True)


def listener(port):
    return harness.fixture_listener("runtimes", port, harness.RUNTIME_CASES_SCRIPT)


def call(case, req=b"", port=PORT):
    return harness.post_case(port, case, req)


def case_go_echo(_):
    for req in [b"hello", b"a\0b\0", os.urandom(1 << 20)]:
        assert call("go_echo", req) == b"true|" + req
    assert call("go_echo") == b"true|"


def loader_mappings(state, name):
    """How many mappings of `name` Envoy has (one loaded object maps its file
    several times; a second object would double them)."""
    return open(f"/proc/{state.envoy.proc.pid}/maps").read().count(f"/{name}\n")


def case_original_names_are_the_same_objects(state):
    """ffi_go_echo and resty_ffi_python (the original's names) are symlinks:
    on both worker threads they give the objects loaded as go_echo and
    ffi_python3, and one interpreter."""
    for _ in range(4):  # both workers
        assert call("go_echo", b"a") == b"true|a"
        assert call("python_interpreters", b"ffi_python3").isdigit()
    go, python = loader_mappings(state, "libgo_echo.so"), loader_mappings(state, "libffi_python3.so")
    assert go > 0 and python > 0
    ids = set()
    for i in range(4):
        assert call("go_echo_original_name", b"b%d" % i) == b"true|b%d" % i
        assert call("python_echo_original_name", b"c%d" % i) == b"true|c%d" % i
        ids.update(call("python_interpreters", b"resty_ffi_python ffi_python3").split())
    assert len(ids) == 1, ids
    assert (loader_mappings(state, "libgo_echo.so"), loader_mappings(state, "libffi_python3.so")) == (go, python)


def case_a_copy_of_the_python_loader_shares_the_interpreter(state):
    copy = os.path.join(state.mods, "libffi_python3_copy.so")
    shutil.copy(harness.RUNTIMES / "libffi_python3.so", copy)
    for _ in range(4):  # both workers
        first, second = call("python_interpreters", f"{copy} resty_ffi_python".encode()).split()
        assert first == second
    state.envoy.assert_no_crash()


def case_original_readme_snippet(_):
    for _ in range(4):  # both workers
        assert harness.request(PORT_README)[0::2] == (200, harness.UPSTREAM_BODY.encode())


def case_two_hundred_clients_go_rust_python(_):
    def one(i):
        req = f"req {i}".encode()
        return [call(case, req) for case in ("go_echo", "rust_echo", "python_echo", "python_sync")]

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(400)))
    for i, got in enumerate(results):
        req = f"req {i}".encode()
        assert got == [b"true|" + req] * 3 + [b"true|sync:" + req], (i, got)


def case_http_client_runs_fetches_concurrently(state):
    assert call("http_fetch", f"{state.base}/missing".encode()) == b"false|404|/missing"
    assert call("http_fetch", b"http://127.0.0.1:1/").startswith(b"false|1|client error (Connect)")
    start = time.monotonic()
    assert call("http_fetch", f"{state.base}/slow?0".encode()) == b"true|/slow?0"
    one = time.monotonic() - start
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        got = list(pool.map(lambda i: call("http_fetch", f"{state.base}/slow?{i}".encode()), range(100)))
    hundred = time.monotonic() - start
    assert got == [f"true|/slow?{i}".encode() for i in range(100)]
    # Serially 50 s; in flight together about one fetch. The bound leaves room
    # for a loaded machine: it fails anything but overlap.
    assert hundred < 10, (one, hundred)


def case_python_package_and_exceptions(_):
    assert call("python_sync", b"hi") == b"true|sync:hi"
    assert call("python_sync", b"boom") == b"false|1|ValueError: bad input"
    assert call("python_sync", b"rc:7") == b"false|7|custom failure"
    assert call("python_async", b"hi") == b"true|async:hi"
    assert call("python_async", b"boom") == b"false|1|RuntimeError: async boom"
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        got = list(pool.map(lambda i: call("python_async", str(i).encode()), range(50)))
    assert got == [f"true|async:{i}".encode() for i in range(50)]
    assert time.monotonic() - start < 3, "async handlers overlap"


def case_python_hot_reload(state):
    hot = os.path.join(state.mods, "hot.py")
    for version in ["v1", "version two", "v3"]:  # each a different file size
        with open(hot, "w") as f:
            f.write(HOT % version)
        # Each worker thread loads the new code (the same Envoy, not restarted),
        # one call at a time: two workers reloading at once may run the old
        # code (importlib.reload hands a module it is still reloading to a
        # second caller; seen in 1 of 20 versions with 8 calls at a time).
        answers = harness.on_every_worker(lambda: harness.post_case_worker(PORT, "python_reload", state.mods.encode()))
        assert set(answers) == {f"true|{version} x".encode()}, answers
    assert state.envoy.alive()


def case_sigterm_with_go_loaded(_):
    harness.assert_clean_sigterm(listener(PORT_SIGTERM), ADMIN_SIGTERM, PORT_SIGTERM, "go_echo")


if __name__ == "__main__":
    harness.run([(name, fn) for name, fn in globals().items() if name.startswith("case_")],
                setup=State, teardown=State.stop)
