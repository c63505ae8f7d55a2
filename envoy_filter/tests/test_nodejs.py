"""The Node.js loader (examples/nodejs) on Envoy through the shared fixture
tests/fixtures/runtime_cases.lua (nginx_module/t/test_nodejs.py runs it on
nginx): both echo styles, throws and rejections, 200 concurrent clients over two
worker threads sharing one Node, the HTTP/2 client, hot reload, and a clean
SIGTERM shutdown with Node running."""

import os
import shutil
import subprocess
import tempfile

import harness

PORT, ADMIN, PORT_SIGTERM, ADMIN_SIGTERM = harness.free_ports(4)
DEMO = harness.ROOT / "examples" / "nodejs"


HOT = """const ffi = require('resty_ffi');
exports.init = (cfg, tq) => ffi.serve(tq, (req) => '%s ' + req);
"""

# The HTTP/2 client's upstream (h2c), run by the machine's node: /slow answers
# after 0.5 s, /missing with 404, anything else with its path.
UPSTREAM = """
const server = require('http2').createServer((req, res) => {
  const answer = () => {
    res.writeHead(req.url === '/missing' ? 404 : 200);
    res.end(req.url);
  };
  req.url.startsWith('/slow') ? setTimeout(answer, 500) : answer();
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""


class State:
    def __init__(self):
        subprocess.run([str(DEMO / "build.sh"), str(harness.RUNTIMES / "libffi_nodejs.so"),
                        str(harness.RELEASE / "include")], check=True)
        self.modules = tempfile.mkdtemp(prefix="resty_ffi_nodejs_")
        os.environ["NODE_PATH"] = f"{DEMO}:{self.modules}"
        self.upstream = subprocess.Popen(["node", "-e", UPSTREAM], stdout=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.upstream.stdout.readline().strip()}"
        self.envoy = harness.Envoy([listener(PORT)], ADMIN, concurrency=2)

    def write_hot(self, version):
        with open(os.path.join(self.modules, "hot.js"), "w") as f:
            f.write(HOT % version)

    def stop(self):
        self.envoy.stop()
        self.upstream.kill()
        self.upstream.wait()
        shutil.rmtree(self.modules, ignore_errors=True)


def listener(port):
    return harness.fixture_listener("nodejs", port, harness.RUNTIME_CASES_SCRIPT)


def call(case, req=b"", port=PORT):
    return harness.post_case(port, case, req)


def case_echo_both_styles(_):
    harness.assert_echoes(call, ["node_echo", "node_serve"])


def case_throw_and_reject(_):
    assert call("node_serve", b"throw") == b"false|1|TypeError: bad input"
    assert call("node_serve", b"reject") == b"false|7|custom failure"


def case_two_hundred_clients(_):
    harness.assert_two_hundred_clients(call, ["node_echo", "node_serve"])


def case_http2_client_fetches_concurrently(state):
    assert call("node_http2", f"{state.base}/missing".encode()) == b"false|404|/missing"
    assert b"connect ECONNREFUSED" in call("node_http2", b"http://127.0.0.1:1/")
    harness.assert_fetches_overlap(call, "node_http2", state.base)


def case_hot_reload(state):
    for version in ["v1", "version two", "v3"]:
        state.write_hot(version)
        # Each worker thread loads the new module.
        answers = harness.on_every_worker(lambda: harness.post_case_worker(PORT, "node_reload", b"x"))
        assert set(answers) == {f"true|{version} x".encode()}, answers
    assert state.envoy.alive()


def case_sigterm_with_node_loaded(_):
    harness.assert_clean_sigterm(listener(PORT_SIGTERM), ADMIN_SIGTERM, PORT_SIGTERM, "node_serve")


if __name__ == "__main__":
    harness.run([(name, fn) for name, fn in globals().items() if name.startswith("case_")],
                setup=State, teardown=State.stop)
