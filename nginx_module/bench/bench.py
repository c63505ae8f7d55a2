"""nginx benchmark (not a test), in one nginx run per worker count:

- serial echo through resty_ffi (the Rust echo runtime) vs a Unix-socket echo
  server driven by cosocket, per payload size: latency and CPU per call; and
  the floor of such an echo on this machine (copy_floor.c: the same copies
  between two spinning threads, nothing else);
- 1,000 coroutines in one request: calls/s with 1 and 2 poll threads;
- wrk at 32 connections: a plain Lua answer vs one ffi call per request,
  with `worker_processes` 1 and 2 (scaling, and nginx CPU per ffi call);
- idle CPU of a worker with a runtime loaded.

Rounds of the compared cases are interleaved; medians of BENCH_RUNS rounds.
Writes target/bench/nginx.json (ci/bench/report.py renders it).
`STEPS=serial,concurrent,wrk,idle` picks parts; SIZES overrides the sizes.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "ci" / "bench"))
import common  # noqa: E402

ROOT = common.ROOT
OUT = ROOT / "target" / "nginx-bench"
RELEASE = ROOT / "target" / "release"
SIZES = [int(s) for s in os.environ.get("SIZES", "64 512 4096 16384 102400 1048576").split()]
STEPS = os.environ.get("STEPS", "serial,concurrent,wrk,idle").split(",")
COROUTINES = 1000
WRK_CONNECTIONS = 32


def build():
    cargo = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--manifest-path", str(ROOT / "Cargo.toml"),
                    "-p", "resty_ffi", "-p", "rust_echo"], check=True)
    subprocess.run([str(ROOT / "nginx_module" / "build.sh"), str(OUT / "module"), str(RELEASE / "include"),
                    str(RELEASE)], check=True)
    (OUT / "runtimes").mkdir(parents=True, exist_ok=True)
    shutil.copy2(RELEASE / "librust_echo.so", OUT / "runtimes" / "librust_echo.so")
    for program in ("uds_echo", "copy_floor"):
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(OUT / program), str(HERE / f"{program}.c")], check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, workers):
        self.port = free_port()
        prefix = OUT / f"w{workers}"
        for d in ("conf", "logs"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        (prefix / "conf" / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes {workers};
error_log logs/error.log warn;
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module {OUT}/module/ngx_http_resty_ffi_module.so;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    lua_package_path "{ROOT}/lua/?.lua;{HERE}/?.lua;;";
    server {{
        listen 127.0.0.1:{self.port} reuseport;
        location /serial {{ content_by_lua_block {{ require("bench").serial() }} }}
        location /concurrent {{ content_by_lua_block {{ require("bench").concurrent() }} }}
        location /plain {{ content_by_lua_block {{ ngx.print("hello") }} }}
        location /ffi {{ content_by_lua_block {{ require("bench").ffi() }} }}
    }}
}}
""")
        env = {**os.environ, "LD_LIBRARY_PATH": str(OUT / "runtimes")}
        self.proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", "conf/nginx.conf"], env=env)
        deadline = time.time() + 20
        while True:
            try:
                self.get("/plain")
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(prefix / 'logs' / 'error.log').read_text()}")
                time.sleep(0.1)
        while len(self.workers()) < workers:
            time.sleep(0.1)

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def get(self, path, timeout=600):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


def serial_calls(nginx, mode, size, seconds, sock, uds_pid):
    """One coroutine's serial calls for `seconds`: ns per call, CPU ns per call
    (the worker's and runtime's, or the worker's and the echo server's)."""
    server0 = common.cpu_seconds(uds_pid)
    n, ns, ticks = nginx.get(f"/serial?mode={mode}&seconds={seconds}&size={size}&sock={sock}").split()
    server = common.cpu_seconds(uds_pid) - server0 if mode == "uds" else 0
    return {"ns": float(ns), "cpu_ns": (int(ticks) * common.TICK + server) * 1e9 / int(n)}


def copy_floor(size, seconds):
    out = subprocess.run([str(OUT / "copy_floor"), str(size), str(seconds)], check=True,
                         capture_output=True, text=True).stdout
    return {"ns": float(out.split()[1])}


def serial(nginx, sock, uds_pid):
    """Per size and round: ffi, UDS, then the copy floor, each for half of BENCH_SECONDS."""
    seconds = max(common.SECONDS / 2, 0.3)
    samples = {(mode, size): [] for size in SIZES for mode in ("ffi", "uds")}
    floor = {size: [] for size in SIZES}
    for r in range(common.RUNS):
        common.progress(f"nginx serial echo, round {r + 1}/{common.RUNS}: sizes {SIZES}")
        for size in SIZES:
            for mode in ("ffi", "uds"):
                samples[(mode, size)].append(common.unstolen(lambda: serial_calls(nginx, mode, size, seconds, sock,
                                                                                  uds_pid)))
            floor[size].append(common.unstolen(lambda: copy_floor(size, seconds))["ns"])
    rows = []
    print(f"{'size':>8} {'ffi ns/call':>12} {'uds ns/call':>12} {'speed-up':>9} {'ffi cpu ns':>11} {'uds cpu ns':>11}"
          f" {'floor ns':>9} {'ffi/floor':>9}")
    for size in SIZES:
        ffi = common.medians(samples[("ffi", size)], ("ns", "cpu_ns"))
        uds = common.medians(samples[("uds", size)], ("ns", "cpu_ns"))
        # The ratios of each round (measured side by side), medians.
        ratios = [u["ns"] / f["ns"] for f, u in zip(samples[("ffi", size)], samples[("uds", size)])]
        row = {"size": size, "ffi_ns": ffi["ns"], "uds_ns": uds["ns"], "speedup": common.median(ratios),
               "speedup_min": min(ratios), "speedup_max": max(ratios),
               "ffi_cpu_ns": ffi["cpu_ns"], "uds_cpu_ns": uds["cpu_ns"], "floor_ns": common.median(floor[size]),
               "floor_speedup": common.median([u["ns"] / f for f, u in zip(floor[size], samples[("uds", size)])]),
               "ffi_over_floor": common.median([f["ns"] / fl for f, fl in zip(samples[("ffi", size)], floor[size])])}
        rows.append(row)
        print(f"{size:>8} {row['ffi_ns']:>12.0f} {row['uds_ns']:>12.0f} {row['speedup']:>8.1f}x "
              f"{row['ffi_cpu_ns']:>11.0f} {row['uds_cpu_ns']:>11.0f} {row['floor_ns']:>9.0f} "
              f"{row['ffi_over_floor']:>8.2f}x", flush=True)
    return rows


def concurrent_calls(nginx, calls, threads):
    rate, ticks = nginx.get(f"/concurrent?n={calls}&c={COROUTINES}&threads={threads}").split()
    return {"rate": float(rate), "cpu_ns": int(ticks) * common.TICK * 1e9 / calls}


def concurrent(nginx):
    calls = int(max(100_000, 200_000 * common.SECONDS))
    samples = {1: [], 2: []}
    for r in range(common.RUNS):
        common.progress(f"nginx concurrency, round {r + 1}/{common.RUNS}: {COROUTINES} coroutines, {calls} calls")
        for threads in (1, 2):
            samples[threads].append(common.unstolen(lambda: concurrent_calls(nginx, calls, threads)))
    rows = []
    for threads, s in samples.items():
        m = common.medians(s, ("rate", "cpu_ns"))
        rows.append({"threads": threads, "calls_per_s": m["rate"], "min": min(x["rate"] for x in s),
                     "max": max(x["rate"] for x in s), "cpu_ns": m["cpu_ns"], "coroutines": COROUTINES})
        print(f"concurrent: {m['rate']:.0f} calls/s (median), {COROUTINES} coroutines, {threads} poll thread(s), "
              f"{m['cpu_ns']:.0f} ns CPU per call", flush=True)
    return rows


def wrk_cases(nginx, workers):
    """/plain vs /ffi, interleaved rounds; CPU of all workers."""
    samples = {"plain": [], "ffi": []}
    for path in samples:  # warm up, load the runtime in every worker
        common.wrk(nginx.url(f"/{path}"), 8, seconds=1)
    for r in range(common.RUNS):
        common.progress(f"nginx wrk -c{WRK_CONNECTIONS}, worker_processes {workers}, round {r + 1}/{common.RUNS}")
        for path in samples:
            samples[path].append(common.unstolen(
                lambda: common.wrk(nginx.url(f"/{path}"), WRK_CONNECTIONS, pids=nginx.workers())))
    out = {}
    for path, s in samples.items():
        out[path] = common.medians(s, ("rps", "p50", "p99", "cpu_us"))
        print(f"wrk -c{WRK_CONNECTIONS}, {workers} worker(s), {path:5}: {out[path]['rps']:.0f} RPS, "
              f"p99 {out[path]['p99']:.0f} us, {out[path]['cpu_us']:.1f} us CPU/request", flush=True)
    return out


def idle(nginx):
    pids = nginx.workers()
    before = sum(common.cpu_seconds(p) for p in pids)
    time.sleep(3)
    return (sum(common.cpu_seconds(p) for p in pids) - before) / 3 * 100


def main():
    build()
    result = {"machine_before": common.machine(), "sizes": SIZES}
    sock = OUT / "echo.sock"
    uds = subprocess.Popen([str(OUT / "uds_echo"), str(sock)])
    nginx = Nginx(1)
    try:
        if "serial" in STEPS:
            result["serial"] = serial(nginx, sock, uds.pid)
        if "concurrent" in STEPS:
            result["concurrent"] = concurrent(nginx)
        if "wrk" in STEPS:
            result["wrk"] = {"1": wrk_cases(nginx, 1)}
        if "idle" in STEPS:
            nginx.get("/ffi")
            result["idle_cpu_percent"] = idle(nginx)
            print(f"idle: workers with a runtime loaded used {result['idle_cpu_percent']:.2f}% CPU over 3 s")
    finally:
        nginx.stop()
        uds.terminate()
    if "wrk" in STEPS:
        nginx = Nginx(2)
        try:
            result["wrk"]["2"] = wrk_cases(nginx, 2)
        finally:
            nginx.stop()
    result["machine_after"] = common.machine()
    print(f"results: {common.save('nginx', result)}")


if __name__ == "__main__":
    main()
