#!/usr/bin/env python3
"""Starts the test Greeter, then nginx.conf and envoy.yaml of this folder
(paths filled in), and asks each for /hello: both answer through hello.lua.
Exits non-zero if either answer is wrong.

    python3 examples/grpc/run.py     (after `bazel build //grpc:grpc //nginx_module:module //:cargo_release`)
"""

import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "hosts"))
import hosts  # noqa: E402

ROOT, BIN = hosts.ROOT, hosts.BIN
HERE = ROOT / "examples" / "grpc"


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_grpc_example_"))
    servers = []
    try:
        greeter = hosts.Server([str(BIN / "grpc" / "cargo" / "grpc_testserver"), "serve"], work / "greeter.log")
        servers.append(greeter)
        while not re.search(r"listening \d+", greeter.text()):
            assert greeter.proc.poll() is None, greeter.text()
            time.sleep(0.05)
        greeter_port = re.search(r"listening (\d+)", greeter.text()).group(1)
        env = dict(os.environ, GREETER=f"127.0.0.1:{greeter_port}", GRPC_PROTOS=str(ROOT / "grpc" / "tests" / "protos"),
                   LUA_PATH=f"{ROOT}/lua/?.lua;{HERE}/?.lua;;", ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(BIN / "cargo"))
        nginx_port, envoy_port = hosts.free_ports(2)

        def fill(name, port):
            text = (HERE / name).read_text().replace("@ROOT@", str(ROOT)).replace("@BIN@", str(BIN))
            (work / name).write_text(text.replace("@PORT@", str(port)))
            return work / name

        (work / "logs").mkdir()
        servers.append(hosts.nginx(work, fill("nginx.conf", nginx_port), env=env))
        servers.append(hosts.envoy(fill("envoy.yaml", envoy_port), work / "envoy.log", env=env, concurrency=1))
        ok = True
        for name, port, server in (("nginx", nginx_port, servers[1]), ("envoy", envoy_port, servers[2])):
            hosts.wait_port(port, server.proc)
            status, body = hosts.get(port, f"/hello?name={name}")
            print(f"{name}: {status} {body.decode().strip()}")
            ok = ok and (status, body) == (200, f"Hello {name}!\n".encode())
        sys.exit(0 if ok else 1)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
