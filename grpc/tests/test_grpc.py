#!/usr/bin/env python3
"""resty.ffi.grpc on nginx and on Envoy, against real gRPC servers.

The tonic test server (grpc/testserver) runs three times: plain, TLS and
mTLS (certificates made here with openssl). One nginx and one Envoy run the
same Lua file (grpc_cases.lua); each case is a request answered "ok". Then,
on each host: 1,000 concurrent calls from one worker (and 200 concurrent
bidirectional streams), a client that walks
away in the middle of a stream (the server sees the cancellation), and a
server restart (calls fail with UNAVAILABLE, then work again). For
interoperability, the same flows against a Python grpcio server whose code
grpcio-tools generates (grpcio_server.py).

    python3 grpc/tests/test_grpc.py     (after `bazel build //grpc:grpc` or
                                         cargo build in grpc/, see grpc/README.md)
"""

import asyncio
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "hosts"))
import hosts  # noqa: E402

ROOT, BIN = hosts.ROOT, hosts.BIN
TESTS = ROOT / "grpc" / "tests"
if os.environ.get("GRPC_BIN"):
    GRPC_BIN = pathlib.Path(os.environ["GRPC_BIN"])
elif os.environ.get("TEST_SRCDIR"):
    GRPC_BIN = BIN / "grpc" / "cargo"
else:
    GRPC_BIN = ROOT / "target" / "grpc" / "release"

CASES = ["original_readme", "everything_roundtrip", "large", "server_sees", "metadata", "status_error", "deadline",
         "bad_input", "unreachable", "tls", "streams", "stream_close_cancels", "connections"]

NGINX_CONF = """
user root;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module {bin}/nginx_module/ngx_http_resty_ffi_module.so;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    lua_package_path "{lua}/?.lua;{work}/?.lua;{tests}/?.lua;;";
    lua_check_client_abort on;
    init_worker_by_lua_block {{ require("grpc_cases") }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/case/(\\w+)/?(.*)$ {{
            content_by_lua_block {{
                ngx.say(require("grpc_cases").run(ngx.var[1], ngx.var[2]))
            }}
        }}
    }}
}}
"""

ENVOY_SCRIPT = """
local cases = require("grpc_cases")
function envoy_on_request(handle)
  local name, arg = handle:headers():get(":path"):match("^/case/([%w_]+)/?(.*)$")
  handle:respond({ [":status"] = "200" }, cases.run(name, arg) .. "\\n")
end
"""



def make_certs(d):
    """A CA, a server certificate for example.com and a client certificate."""
    d.mkdir()

    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=resty_ffi test CA")
    for name, ext in (("server", "subjectAltName=DNS:example.com\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


class GrpcServer:
    """grpc_testserver (or `cmd`) on a port of its own."""

    def __init__(self, work, name, *args, port=0, cmd=None):
        self.cmd = cmd
        self.args = args
        self.work = work
        self.name = name
        self.port = port
        self.start()

    def start(self):
        cmd = self.cmd or [str(GRPC_BIN / "grpc_testserver"), "serve", "--port", str(self.port), *self.args]
        self.server = hosts.Server(cmd, self.work / f"{self.name}.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"listening (\d+)", self.server.text())
            if m:
                self.port = int(m.group(1))
                return
            if self.server.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start: {self.server.text()}")

    def stop(self):
        self.server.stop()


async def get_many(port, path, n):
    """n GETs at once, each on its own connection: the bodies."""

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data.split(b"\r\n\r\n", 1)[-1]

    return await asyncio.gather(*[one() for _ in range(n)])


def body_text(body):
    """The case's answer from an HTTP/1.1 body (nginx's may be chunked)."""
    text = body.decode(errors="replace")
    m = re.match(r"^[0-9a-f]+\r\n(.*?)\r\n0\r\n", text, re.S)
    return (m.group(1) if m else text).strip()


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_grpc_"))
    servers = []
    grpc_servers = []
    make_certs(work / "certs")
    certs = work / "certs"
    plain = GrpcServer(work, "plain")
    grpc_servers.append(plain)
    tls = GrpcServer(work, "tls", "--tls", str(certs / "server.pem"), str(certs / "server.key"))
    grpc_servers.append(tls)
    mtls = GrpcServer(work, "mtls", "--tls", str(certs / "server.pem"), str(certs / "server.key"),
                      "--client-ca", str(certs / "ca.pem"))
    grpc_servers.append(mtls)
    nginx_port, envoy_port, admin, closed_port = hosts.free_ports(4)
    (work / "grpc_test_env.lua").write_text(
        "require('resty.ffi.grpc').configure({ lib = %r })\n" % str(GRPC_BIN / "libresty_ffi_grpc.so")
        + "return { port = %d, tls_port = %d, mtls_port = %d, closed_port = %d, certs = %r, protos = %r }\n"
        % (plain.port, tls.port, mtls.port, closed_port, str(certs), str(TESTS / "protos")))
    (work / "envoy.lua").write_text(ENVOY_SCRIPT)
    (work / "envoy.yaml").write_text(hosts.envoy_yaml("grpc_cases", envoy_port, admin, work / "envoy.lua"))
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(bin=BIN, lua=ROOT / "lua", work=work, tests=TESTS,
                                                         port=nginx_port))
    started = {}

    def start_hosts():
        nginx = hosts.nginx(prefix, prefix / "nginx.conf")
        servers.append(nginx)
        envoy_env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(BIN / "cargo"),
                         LUA_PATH=f"{ROOT / 'lua'}/?.lua;{work}/?.lua;{TESTS}/?.lua;;")
        envoy = hosts.envoy(work / "envoy.yaml", work / "envoy.log", env=envoy_env, concurrency=1)
        servers.append(envoy)
        hosts.wait_port(nginx_port, nginx.proc)
        hosts.wait_port(envoy_port, envoy.proc)
        started.update(nginx=nginx, envoy=envoy)

    def case(host, name, arg=""):
        port = nginx_port if host == "nginx" else envoy_port
        status, body = hosts.get(port, f"/case/{name}/{arg}", timeout=60)
        return status, body.decode(errors="replace").strip()

    def logs(host):
        if host == "nginx":
            return (prefix / "logs" / "error.log").read_text(errors="replace")[-3000:]
        return started["envoy"].text()[-3000:]

    def on_both(name):
        def run():
            for host in ("nginx", "envoy"):
                got = case(host, name)
                assert got == (200, "ok"), (host, name, got, logs(host))
        return run

    def stats(host):
        status, text = case(host, "stats")
        assert status == 200, text
        return dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", text))

    def concurrent_calls():
        for host, port in (("nginx", nginx_port), ("envoy", envoy_port)):
            t0 = time.monotonic()
            bodies = asyncio.run(get_many(port, "/case/slow/300", 1000))
            took = time.monotonic() - t0
            answers = [body_text(b) for b in bodies]
            bad = [a for a in answers if a != "ok"]
            assert not bad, (host, len(bad), bad[:3], logs(host))
            # One after another they would take 300 s; each takes 0.3 s.
            assert 0.3 <= took < 30, (host, took)
            print(f"  {host}: 1000 concurrent 300 ms calls in {took:.1f} s", flush=True)
            t0 = time.monotonic()
            answers = [body_text(b) for b in asyncio.run(get_many(port, "/case/chat/20", 200))]
            bad = [a for a in answers if a != "ok"]
            assert not bad, (host, len(bad), bad[:3], logs(host))
            print(f"  {host}: 200 concurrent bidirectional streams of 20 messages in "
                  f"{time.monotonic() - t0:.1f} s", flush=True)

    def client_abort():
        for host, port in (("nginx", nginx_port), ("envoy", envoy_port)):
            before = stats(host)
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /case/endless_stream/ HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            sock.close()
            deadline = time.monotonic() + 15
            while True:
                now = stats(host)
                if now["cancelled"] > before["cancelled"]:
                    break
                assert time.monotonic() < deadline, (host, before, now, logs(host))
                time.sleep(0.2)
            assert case(host, "hello") == (200, "ok")

    def grpcio_interop():
        py = GrpcServer(work, "grpcio", cmd=[sys.executable, str(TESTS / "grpcio_server.py")])
        grpc_servers.append(py)
        for host in ("nginx", "envoy"):
            got = case(host, "grpcio", str(py.port))
            assert got == (200, "ok"), (host, got, logs(host), py.server.text()[-2000:])

    def server_restart():
        plain.stop()
        for host in ("nginx", "envoy"):
            status, text = case(host, "hello")
            assert status == 200 and text.startswith("code 14"), (host, text)
        plain.start()   # the same port
        for host in ("nginx", "envoy"):
            deadline = time.monotonic() + 15
            while case(host, "hello") != (200, "ok"):
                assert time.monotonic() < deadline, (host, case(host, "hello"))
                time.sleep(0.2)

    def hosts_reload_and_stop_cleanly():
        nginx, envoy = started["nginx"], started["envoy"]
        # A reload: the old worker exits with its runtime, the new one works.
        before = set(re.findall(r"\d+", subprocess.run(["pgrep", "-P", str(nginx.proc.pid)], capture_output=True,
                                                         text=True).stdout))
        os.kill(nginx.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            now = set(re.findall(r"\d+", subprocess.run(["pgrep", "-P", str(nginx.proc.pid)], capture_output=True,
                                                          text=True).stdout))
            if now and not now & before:
                break
            assert time.monotonic() < deadline, (before, now, logs("nginx"))
            time.sleep(0.1)
        assert case("nginx", "hello") == (200, "ok"), logs("nginx")
        assert nginx.stop(signal.SIGQUIT) == 0
        log = (prefix / "logs" / "error.log").read_text()
        assert "[alert]" not in log and "exited on signal" not in log, log[-3000:]
        assert envoy.stop() == 0, envoy.text()[-3000:]

    steps = ([(name, on_both(name)) for name in CASES]
             + [("grpcio_interop", grpcio_interop), ("1000_concurrent_calls", concurrent_calls), ("client_abort_mid_stream", client_abort),
                ("server_restart", server_restart)])
    only = os.environ.get("GRPC_CASES")   # a regex: run only the matching steps
    if only:
        steps = [s for s in steps if re.search(only, s[0])]
    try:
        hosts.run([("start_hosts", start_hosts)] + steps + [("hosts_reload_and_stop_cleanly", hosts_reload_and_stop_cleanly)])
    finally:
        for s in servers:
            s.stop()
        for s in grpc_servers:
            s.stop()
        if os.environ.get("KEEP_WORK"):
            print("work dir:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
