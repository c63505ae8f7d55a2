"""Pieces shared by the benchmark drivers (nginx_module/bench/bench.py,
envoy_filter/bench/bench.py, ci/bench/core.py) that ci/bench.sh runs: run
lengths, wrk, CPU and load readings, medians and the results files that
ci/bench/report.py turns into docs/benchmarks.md."""

import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Seconds per measurement and rounds per case (medians of the rounds; rounds
# of different peers are interleaved). BENCH_SECONDS=1 BENCH_RUNS=1: a quick look.
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
RESULTS = pathlib.Path(os.environ.get("BENCH_RESULTS", ROOT / "target" / "bench"))
# On a shared VM the host takes CPU time away ("steal") in bursts of tens of
# seconds, enough to decide a comparison: a measurement during which it took
# more than BENCH_MAX_STEAL percent is taken again once the machine is quiet,
# up to BENCH_RETRIES times, and the least stolen one is kept (`unstolen`).
# Waiting for quiet takes at most BENCH_STEAL_WAIT seconds per step in all.
MAX_STEAL = float(os.environ.get("BENCH_MAX_STEAL", "3"))
RETRIES = int(os.environ.get("BENCH_RETRIES", "3"))
STEAL_WAIT = float(os.environ.get("BENCH_STEAL_WAIT", "300"))
STEAL_TALLY = {"measurements": 0, "retaken": 0, "kept_over": 0, "worst_kept": 0.0, "waited_s": 0.0}
# Steal is only seen while the vCPUs want to run: the quiet probe keeps every
# one busy for QUIET_PROBE_SECONDS.
QUIET_PROBE_SECONDS = 0.5
QUIET_PROBE = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"
TICK = 1 / os.sysconf("SC_CLK_TCK")


def load():
    """The 1-minute load average."""
    return float(open("/proc/loadavg").read().split()[0])


def cpu_ticks():
    """The machine's CPU ticks so far, from /proc/stat: all of them, and the
    stolen ones (the VM's host ran something else while a vCPU wanted to run)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return {"steal_ticks": fields[7], "all_ticks": sum(fields)}


def stolen_percent(before, after):
    """The share of CPU time stolen between two `cpu_ticks` readings, in %."""
    ticks = after["all_ticks"] - before["all_ticks"]
    return 100 * (after["steal_ticks"] - before["steal_ticks"]) / ticks if ticks > 0 else 0.0


def with_steal(measure):
    """`measure()` (a dict of results) with the share (%) of CPU time stolen
    while it ran added as "stolen"."""
    before = cpu_ticks()
    sample = measure()
    sample["stolen"] = stolen_percent(before, cpu_ticks())
    return sample


def unstolen(measure):
    """`measure()` (a dict of results) with its "stolen" share (%) added; taken
    again while more than MAX_STEAL was stolen, up to RETRIES times, keeping
    the least stolen. Counted in STEAL_TALLY, which `save` writes."""
    kept = None
    for attempt in range(RETRIES + 1):
        if attempt:
            wait_for_quiet()
        sample = with_steal(measure)
        if kept is None or sample["stolen"] < kept["stolen"]:
            kept = sample
        if sample["stolen"] <= MAX_STEAL:
            break
    STEAL_TALLY["measurements"] += 1
    STEAL_TALLY["retaken"] += attempt > 0
    if kept["stolen"] > MAX_STEAL:
        STEAL_TALLY["kept_over"] += 1
        STEAL_TALLY["worst_kept"] = max(STEAL_TALLY["worst_kept"], kept["stolen"])
    return kept


def wait_for_quiet():
    """Returns once a probe keeping every vCPU busy sees at most MAX_STEAL
    stolen, or when the step's STEAL_WAIT is used up."""
    while STEAL_TALLY["waited_s"] < STEAL_WAIT:
        started = time.time()
        before = cpu_ticks()
        probes = [subprocess.Popen([sys.executable, "-c", QUIET_PROBE, str(QUIET_PROBE_SECONDS)])
                  for _ in range(os.cpu_count())]
        for probe in probes:
            probe.wait()
        quiet = stolen_percent(before, cpu_ticks()) <= MAX_STEAL
        if not quiet:
            time.sleep(2)
        STEAL_TALLY["waited_s"] += time.time() - started
        if quiet:
            return


def machine():
    return {"cores": os.cpu_count(), "load": load(), **cpu_ticks()}


def cpu_seconds(pid):
    """User + system CPU of process `pid`, all its threads."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def medians(samples, keys):
    """{key: median over samples} for a list of dicts."""
    return {k: median([s[k] for s in samples]) for k in keys}


def progress(text):
    print(f"[bench {time.strftime('%H:%M:%S')} load {load():.2f}] {text}", flush=True)


def _to_us(text):
    for unit, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def wrk(url, connections, seconds=None, pids=(), headers=()):
    """wrk -t1 against `url`; RPS, p50/p99 (µs), requests, and CPU µs per
    request of `pids` (each pid's total over the run)."""
    seconds = seconds or SECONDS
    before = [cpu_seconds(p) for p in pids]
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    cpu = [cpu_seconds(p) - b for p, b in zip(pids, before)]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed responses")
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Rows of the latency distribution; a "+/- Stdev" such as 89.50% must not match.
        "p50": _to_us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": _to_us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "requests": requests,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }
    for i, c in enumerate(cpu):
        result[f"cpu{i}_us"] = c / max(requests, 1) * 1e6
    result["cpu_us"] = sum(cpu) / max(requests, 1) * 1e6
    return result


def save(name, data):
    """Writes RESULTS/<name>.json with the run's settings and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": SECONDS,
            "runs": RUNS, "steal": {"limit": MAX_STEAL, "retries": RETRIES, **STEAL_TALLY}, **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path
