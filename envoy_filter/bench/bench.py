"""wrk against one Envoy (--concurrency 1) with three listeners, measured in
the same run: the stock Lua filter answering with respond(), our filter doing
the same, and our filter calling the Rust echo runtime before respond().
Prints RPS, p50/p99 and Envoy CPU per request (median of RUNS runs, runs
interleaved), ratios against the stock filter, and Envoy's idle CPU."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import harness  # noqa: E402

ADMIN = 18199
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))

RESPOND = """
function envoy_on_request(handle)
  handle:respond({ [":status"] = "200" }, "hello")
end
"""

FFI_ECHO = """
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))
function envoy_on_request(handle)
  local ok, res = echo:echo("hello", handle)
  handle:respond({ [":status"] = ok and "200" or "500" }, res)
end
"""

TARGETS = [
    ("stock lua respond", 18190, harness.stock_lua(RESPOND)),
    ("ours respond", 18191, harness.ours(RESPOND)),
    ("ours ffi echo", 18192, harness.ours(FFI_ECHO)),
]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def to_us(text):
    value, unit = float(text[:-2] if text.endswith(("us", "ms")) else text[:-1]), text[-2:]
    if unit == "ms":
        return value * 1000
    if unit == "us":
        return value
    return value * 1e6  # seconds


def wrk(port, connections, pid):
    before = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{DURATION}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"port {port}: {errors.group(1)} failed responses")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Rows of the latency distribution; a "+/- Stdev" such as 89.50% must not match.
        "p50": to_us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": to_us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "cpu_us": cpu / max(requests, 1) * 1e6,
    }


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    harness.ensure_built()
    listeners = [harness.listener(name.replace(" ", "_"), port, flt) for name, port, flt in TARGETS]
    envoy = harness.Envoy(listeners, ADMIN, concurrency=1)
    pid = envoy.proc.pid
    try:
        for _, port, _ in TARGETS:  # warm up (and load the runtime)
            subprocess.run(["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{port}/"], capture_output=True, check=True)
        for connections in (32, 1):
            samples = {name: [] for name, _, _ in TARGETS}
            for _ in range(RUNS):
                for name, port, _ in TARGETS:
                    samples[name].append(wrk(port, connections, pid))
            print(f"\nwrk -t1 -c{connections} -d{DURATION}s, Envoy --concurrency 1, median of {RUNS} runs")
            print(f"{'':20} {'RPS':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>10} "
                  f"{'RPS x':>6} {'p99 x':>6}")
            base = None
            for name, _, _ in TARGETS:
                m = {k: median([s[k] for s in samples[name]]) for k in ("rps", "p50", "p99", "cpu_us")}
                base = base or m
                print(f"{name:20} {m['rps']:9.0f} {m['p50']:8.0f} {m['p99']:8.0f} {m['cpu_us']:10.1f} "
                      f"{m['rps'] / base['rps']:6.2f} {m['p99'] / base['p99']:6.2f}")
        before = cpu_seconds(pid)
        time.sleep(3)
        print(f"\nEnvoy idle CPU over 3 s after the runs: {(cpu_seconds(pid) - before) / 3 * 100:.1f}%")
    finally:
        envoy.stop()


if __name__ == "__main__":
    main()
