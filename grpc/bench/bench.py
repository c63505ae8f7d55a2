#!/usr/bin/env python3
"""Unary gRPC calls from Lua (nginx, Envoy) against the same tonic client
called directly from Rust (the floor), in one run, same server.

For 1 and 100 calls in flight: calls/s and p50/p99 latency of each, and the
ratios to the floor (Lua's throughput / Rust's; Lua's added µs per call).
Then the round trip to the runtime alone (no gRPC), answered by its poll
thread or by a tokio task: where a serial call's added time goes.
Medians of BENCH_RUNS rounds (default 3). One nginx worker, one Envoy
worker thread, one tokio thread in each client. Writes $BENCH_RESULTS/grpc.json
(default target/bench) for ci/bench/report.py.

    python3 grpc/bench/bench.py [CALLS]       (default 20000 per measurement)
"""

import asyncio
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import test_grpc as t  # noqa: E402

hosts = t.hosts


def lua_run(port, calls, in_flight, case="bench/"):
    """(calls/s, p50 µs, p99 µs) of `calls` SayHello from Lua, `in_flight` requests at once."""
    per = calls // in_flight
    start = time.monotonic()
    bodies = asyncio.run(t.get_many(port, f"/case/{case}{per}", in_flight))
    took = time.monotonic() - start
    lat = []
    for b in bodies:
        text = t.body_text(b)
        assert text.startswith("ok "), text[:300]
        lat.extend(float(x) for x in text[3:].split(","))
    lat.sort()
    return per * in_flight / took, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def rust_run(port, calls, in_flight):
    out = subprocess.run([str(t.GRPC_BIN / "grpc_testserver"), "bench", f"http://127.0.0.1:{port}", str(calls),
                          str(in_flight)], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(os.environ.get("BENCH_RUNS", os.environ.get("ROUNDS", "3")))
    saved = {"cores": os.cpu_count(), "runs": rounds, "calls": calls, "rows": [], "ping": {},
             "date": datetime.date.today().isoformat()}
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_grpc_bench_"))
    servers = []
    try:
        server = t.GrpcServer(work, "plain")
        servers.append(server)
        nginx_port, envoy_port, admin = hosts.free_ports(3)
        (work / "grpc_test_env.lua").write_text(
            "require('resty.ffi.grpc').configure({ lib = %r })\n" % str(t.GRPC_BIN / "libresty_ffi_grpc.so")
            + "return { port = %d, tls_port = 0, mtls_port = 0, closed_port = 0, certs = '', protos = %r }\n"
            % (server.port, str(t.TESTS / "protos")))
        (work / "envoy.lua").write_text(t.ENVOY_SCRIPT)
        (work / "envoy.yaml").write_text(hosts.envoy_yaml("grpc_bench", envoy_port, admin, work / "envoy.lua"))
        prefix = work / "nginx"
        (prefix / "logs").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(t.NGINX_CONF.format(bin=t.BIN, lua=t.ROOT / "lua", work=work,
                                                               tests=t.TESTS, port=nginx_port))
        servers.append(hosts.nginx(prefix, prefix / "nginx.conf"))
        envoy_env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(t.BIN / "cargo"),
                         LUA_PATH=f"{t.ROOT / 'lua'}/?.lua;{work}/?.lua;{t.TESTS}/?.lua;;")
        servers.append(hosts.envoy(work / "envoy.yaml", work / "envoy.log", env=envoy_env, concurrency=1))
        hosts.wait_port(nginx_port, servers[1].proc)
        hosts.wait_port(envoy_port, servers[2].proc)
        runs = {
            "rust (floor)": lambda n, f: rust_run(server.port, n, f),
            "nginx + Lua": lambda n, f: lua_run(nginx_port, n, f),
            "envoy + Lua": lambda n, f: lua_run(envoy_port, n, f),
        }
        for in_flight in (1, 100):
            n = calls if in_flight > 1 else calls // 4
            for run in runs.values():
                run(max(n // 10, in_flight), in_flight)   # warm-up
            results = {name: [] for name in runs}
            for _ in range(rounds):
                for name, run in runs.items():
                    results[name].append(run(n, in_flight))
            med = {name: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for name, rs in results.items()}
            floor = med["rust (floor)"]
            print(f"\n{in_flight} in flight, {n} calls, median of {rounds}:")
            print(f"  {'client':14} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}  {'vs floor':>8} {'+µs p50':>8}")
            for name, (cps, p50, p99) in med.items():
                print(f"  {name:14} {cps:9.0f} {p50:8.1f} {p99:8.1f}  {cps / floor[0]:8.2f} {p50 - floor[1]:8.1f}")
                saved["rows"].append({"in_flight": in_flight, "calls": n, "client": name, "cps": cps, "p50": p50,
                                      "p99": p99, "vs_floor": cps / floor[0], "added_p50": p50 - floor[1]})
        # Where a serial call's extra time goes: a round trip to the runtime
        # without gRPC, answered by its poll thread or by a tokio task.
        print(f"\nround trips Lua -> runtime -> Lua without gRPC, serial, {calls // 4}, median of {rounds} (p50 µs):")
        for host, port in (("nginx", nginx_port), ("envoy", envoy_port)):
            row = []
            for mode in ("poll", "tokio"):
                lua_run(port, calls // 40, 1, f"ping/{mode}/")
                row.append(statistics.median(lua_run(port, calls // 4, 1, f"ping/{mode}/")[1] for _ in range(rounds)))
            print(f"  {host}: answered by the poll thread {row[0]:.1f}, by a tokio task {row[1]:.1f}")
            saved["ping"][host] = {"poll": row[0], "tokio": row[1]}
        saved["load"] = float(open("/proc/loadavg").read().split()[0])
        results = pathlib.Path(os.environ.get("BENCH_RESULTS", t.ROOT / "target" / "bench"))
        results.mkdir(parents=True, exist_ok=True)
        (results / "grpc.json").write_text(json.dumps(saved, indent=1))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
