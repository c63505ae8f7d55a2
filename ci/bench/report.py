"""Renders the results of one ci/bench.sh run (target/bench/*.json) as a
Markdown report with PNG plots (matplotlib).

report.py <markdown path> <plot dir> <step>...   (steps: core nginx envoy)
"""

import datetime
import json
import os
import pathlib
import subprocess
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

import common  # noqa: E402

PEER_ORDER = ["stock", "ours", "ffi", "ffi_spin", "httpcall", "ext_proc", "floor", "floor_hop", "floor_lua"]
NGINX_GOAL_SIZE = 102400


def load(step):
    path = common.RESULTS / f"{step}.json"
    return json.loads(path.read_text()) if path.exists() else None


# Plain numbers on log axes (not 4x10^0).
PLAIN = FuncFormatter(lambda v, _: f"{v:,.10g}")


def size_label(size):
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KB"
    if size == NGINX_GOAL_SIZE:
        return "100 KB"
    return f"{size} B"


def num(value, digits=0):
    return f"{value:,.{digits}f}"


def machine_line(data):
    before, after = data["machine_before"], data["machine_after"]
    stolen = ""
    if "steal_ticks" in before and after["all_ticks"] > before["all_ticks"]:
        stolen = (f"; {common.stolen_percent(before, after):.1f}% of the CPU time stolen by the VM's host "
                  "during this step")
    tally = data.get("steal", {})
    if tally.get("measurements"):
        waited = f", {tally['waited_s']:.0f} s spent waiting for a quiet machine" if "waited_s" in tally else ""
        worst = f", the worst {tally['worst_kept']:.1f}%" if tally["kept_over"] else ""
        stolen += (f" ({tally['retaken']} of {tally['measurements']} measurements taken again for more than "
                   f"{tally['limit']:g}% stolen{waited}; {tally['kept_over']} kept over it after "
                   f"{tally['retries']} retries{worst})")
    return (f"*{before['cores']} cores; load average {before['load']:.2f} at the start of this step, "
            f"{after['load']:.2f} at its end{stolen}; {data['seconds']:g} s per measurement, "
            f"medians of {data['runs']} round(s); {data['date']}.*")


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ plots --

def plot_nginx_latency(nginx, path):
    sizes = [r["size"] for r in nginx["serial"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(sizes, [r["ffi_ns"] / 1000 for r in nginx["serial"]], "o-", label="resty_ffi (Rust echo runtime)")
    ax.plot(sizes, [r["uds_ns"] / 1000 for r in nginx["serial"]], "s-", label="Unix-socket echo (cosocket)")
    ax.plot(sizes, [r["floor_ns"] / 1000 for r in nginx["serial"]], ":", color="gray",
            label="floor: the copies alone, two spinning threads")
    for r in nginx["serial"]:
        ax.annotate(f"{r['speedup']:.1f}x", (r["size"], r["ffi_ns"] / 1000), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [size_label(s) for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(PLAIN)
    ax.set_xlabel("payload (request = answer)")
    ax.set_ylabel("µs per serial call (median)")
    ax.set_title(f"nginx, one worker: serial echo latency ({nginx['machine_before']['cores']} cores, "
                 f"load {nginx['machine_before']['load']:.1f})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_envoy_peers(envoy, path):
    conns = sorted(int(c) for c in envoy["table"])
    keys = [k for k in PEER_ORDER if k in envoy["peers"]]
    fig, (rps_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in keys:
        rows = [envoy["table"][str(c)][key] for c in conns]
        rps_ax.plot(conns, [r["rps"] for r in rows], "o-", label=envoy["peers"][key])
        p99_ax.plot(conns, [r["p99"] / 1000 for r in rows], "o-", label=envoy["peers"][key])
    for ax in (rps_ax, p99_ax):
        ax.set_xscale("log")
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("connections (wrk -t1)")
        ax.grid(True, which="both", alpha=0.3)
    p99_ax.set_yscale("log")
    p99_ax.yaxis.set_major_formatter(PLAIN)
    p99_ax.yaxis.set_minor_formatter(PLAIN)
    rps_ax.yaxis.set_major_formatter(PLAIN)
    rps_ax.set_ylabel("requests/s (median)")
    p99_ax.set_ylabel("p99 latency, ms (median)")
    rps_ax.set_title("Envoy --concurrency 1: throughput")
    p99_ax.set_title("Envoy --concurrency 1: p99")
    rps_ax.legend(fontsize=8)
    fig.suptitle(f"{envoy['machine_before']['cores']} cores, load {envoy['machine_before']['load']:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_rows(nginx, envoy):
    """(label, µs of CPU per request: host, sidecar, extra over a plain answer)."""
    rows = []
    if nginx and "wrk" in nginx:
        w = nginx["wrk"]["1"]
        rows.append(("nginx: Lua answer", w["plain"]["cpu_us"], 0.0, None))
        rows.append(("nginx: + ffi echo", w["ffi"]["cpu_us"], 0.0, w["ffi"]["cpu_us"] - w["plain"]["cpu_us"]))
    if envoy and "table" in envoy and "32" in envoy["table"]:
        t = envoy["table"]["32"]
        base = t["stock"]["cpu0_us"]
        for key in PEER_ORDER:
            if key not in t:
                continue
            m = t[key]
            if key == "ffi":
                extra = m["cpu0_us"] - t["ours"]["cpu0_us"] if "ours" in t else None
            elif key in ("httpcall", "ext_proc"):
                extra = m["cpu0_us"] + m["sidecar_cpu_us"] - base
            elif key == "floor_hop":
                extra = m["cpu0_us"] - t["floor"]["cpu0_us"] if "floor" in t else None
            elif key == "floor_lua":
                extra = m["cpu0_us"] - base
            else:
                extra = None
            rows.append((f"Envoy: {envoy['peers'][key]}", m["cpu0_us"], m["sidecar_cpu_us"], extra))
    return rows


def plot_cpu(rows, path):
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    labels = [r[0] for r in rows][::-1]
    host = [r[1] for r in rows][::-1]
    sidecar = [r[2] for r in rows][::-1]
    ax.barh(labels, host, label="host process (incl. runtime threads)")
    ax.barh(labels, sidecar, left=host, label="sidecar process")
    for i, (h, s) in enumerate(zip(host, sidecar)):
        ax.text(h + s, i, f" {h + s:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, max(h + s for h, s in zip(host, sidecar)) * 1.12)
    ax.set_xlabel("CPU µs per request (wrk -c32; nginx: 1 worker, Envoy: --concurrency 1)")
    ax.set_title("CPU per request, by host and peer")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------- sections --

def goals_section(nginx, envoy):
    rows = []
    if envoy:
        for g in envoy.get("goals", []):
            floor = f"{g['floor']:.2f}" if g.get("floor") is not None else "–"
            rows.append((g["goal"], f"{g['value']:.2f}", "met" if g["met"] else "**not met**", floor))
    if nginx and "serial" in nginx:
        for r in nginx["serial"]:
            if r["size"] == NGINX_GOAL_SIZE:
                rows.append(("nginx 100 KB serial echo: UDS time / ffi time >= 6", f"{r['speedup']:.2f}",
                             "met" if r["speedup"] >= 6 else "**not met**", f"{r['floor_speedup']:.2f}"))
    if nginx and "idle_cpu_percent" in nginx:
        v = nginx["idle_cpu_percent"]
        rows.append(("nginx idle CPU with a runtime loaded ~0%", f"{v:.2f}%", "met" if v < 1 else "**not met**", "–"))
    if envoy and "idle_cpu_percent" in envoy:
        v = envoy["idle_cpu_percent"]
        rows.append(("Envoy idle CPU with a runtime loaded ~0%", f"{v:.2f}%", "met" if v < 1 else "**not met**", "–"))
    if not rows:
        return ""
    return ("## Goals (issue 14), judged by this run\n\n"
            "\"Floor\" is the goal's own formula with ours + ffi replaced by the stock Lua filter's\n"
            "respond() behind the cheapest thread round trip (`envoy_filter/bench/floor`, a native\n"
            "dynamic module without Lua: a channel send to a thread of its own, its answer, Envoy's\n"
            "dispatcher post, then the request goes on), in the same rounds: the least a Lua filter\n"
            "making one call answered on another thread could cost on this machine. For nginx's\n"
            "100 KB echo the floor is the copy floor of the serial echo below.\n\n"
            + table(("goal", "this run", "", "floor"), rows) + "\n")


def core_section(core):
    rows = [(c["case"], num(c["core_ns"]), num(c["mpsc_ns"]), f"{c['ratio']:.2f}x") for c in core["cases"]]
    return f"""## Core round trip

`cargo bench -p resty_ffi --bench roundtrip`: post → poll → respond → drain through the
core with a runtime thread, against `std::sync::mpsc` there and back plus an eventfd
wake-up; 512 B, {num(core['calls'])} calls per case.

{machine_line(core)}

{table(("case", "core ns/call", "mpsc + eventfd ns/call", "speed-up"), rows)}
"""


def nginx_section(nginx, plot_dir, md_dir):
    out = ["## nginx (Debian's nginx 1.22 + lua-nginx-module, one worker)\n", machine_line(nginx) + "\n"]
    if "serial" in nginx:
        plot = plot_dir / "nginx_latency.png"
        plot_nginx_latency(nginx, plot)
        rows = [(size_label(r["size"]), num(r["ffi_ns"]), num(r["uds_ns"]),
                 f"{r['speedup']:.1f}x ({r['speedup_min']:.1f} – {r['speedup_max']:.1f})",
                 num(r["ffi_cpu_ns"]), num(r["uds_cpu_ns"]), num(r["floor_ns"]), f"{r['ffi_over_floor']:.2f}x")
                for r in nginx["serial"]]
        out.append(f"""### Serial echo: resty_ffi vs a Unix-socket echo server

One coroutine calls in a loop: `rt:echo(payload)` through the Rust echo runtime, or a
cosocket round trip to a C echo server on a Unix socket (4-byte length prefix). CPU is
the worker's including the runtime's threads (and, for the socket, the echo server's).
The speed-up is the median of the rounds' own ratios (min – max). The floor
(`nginx_module/bench/copy_floor.c`, in the same rounds) is the same bytes moved with nothing
else: one thread copies the payload into a request buffer, a second copies it into an
answer, the first compares the answer with the payload, the two handing over by spinning.
It is about the least any echo answered on another thread can cost here (rounds differ by
the machine's noise); for large payloads it is the time to move the bytes between two
cores, whatever carries them.

{table(("payload", "ffi ns/call", "UDS ns/call", "speed-up", "ffi CPU ns/call", "UDS CPU ns/call",
        "floor ns/call", "ffi / floor"), rows)}

![nginx serial latency vs payload size]({os.path.relpath(plot, md_dir)})
""")
    if "concurrent" in nginx:
        rows = [(r["threads"], num(r["calls_per_s"]), f"{num(r['min'])} – {num(r['max'])}", num(r["cpu_ns"]))
                for r in nginx["concurrent"]]
        out.append(f"""### Concurrency: {nginx['concurrent'][0]['coroutines']} coroutines in one request

{table(("runtime poll threads", "calls/s (median)", "min – max", "CPU ns/call (worker + runtime)"), rows)}
""")
    if "wrk" in nginx:
        w1, w2 = nginx["wrk"]["1"], nginx["wrk"].get("2")
        rows = []
        for path, label in (("plain", "Lua answer (`ngx.print`)"), ("ffi", "one ffi echo, then the answer")):
            row = [label, num(w1[path]["rps"]), num(w1[path]["p99"]), num(w1[path]["cpu_us"], 1)]
            if w2:
                row += [num(w2[path]["rps"]), f"{w2[path]['rps'] / w1[path]['rps']:.2f}x"]
            rows.append(row)
        header = ["location", "1 worker RPS", "p99 µs", "CPU µs/req"]
        if w2:
            header += ["2 workers RPS", "2 / 1"]
        per_call = w1["ffi"]["cpu_us"] - w1["plain"]["cpu_us"]
        out.append(f"""### wrk -c32: CPU per ffi call, and `worker_processes` 2 vs 1 (scaling)

Each worker loads its own runtime. wrk shares the machine's cores with nginx, so 2 workers
cannot double; what matters is that the ffi location scales like the plain one.
nginx CPU per ffi call (ffi − plain): **{per_call:.1f} µs**.

{table(header, rows)}
""")
    if "idle_cpu_percent" in nginx:
        out.append(f"Idle: the worker with a runtime loaded used {nginx['idle_cpu_percent']:.2f}% CPU over 3 s.\n")
    return "\n".join(out)


def envoy_section(envoy, plot_dir, md_dir):
    out = ["## Envoy 1.40 (stock binary, `--concurrency 1`, our filter as a dynamic module)\n",
           machine_line(envoy) + "\n"]
    if "table" in envoy:
        plot = plot_dir / "envoy_peers.png"
        plot_envoy_peers(envoy, plot)
        out.append("""Every peer answers `hello` to `GET /` (with `x-echo: hello`, which the ext_proc
sidecar echoes). The sidecars listen on Unix sockets (`pipe` clusters; HTTP/1.1 to Go,
HTTP/2 gRPC to tonic). Envoy CPU excludes the sidecar's, shown apart. `RPS ×` and
`p99 ×` are against the stock Lua filter's respond() in the same rounds; `ffi ÷` is
ours + ffi echo's RPS over the row's (medians of per-round ratios).
""")
        for c in sorted(int(c) for c in envoy["table"]):
            rows = []
            for key in PEER_ORDER:
                m = envoy["table"][str(c)].get(key)
                if not m:
                    continue
                r = envoy["ratios"][str(c)][key]
                rows.append((m["label"], num(m["rps"]), num(m["p50"]), num(m["p99"]), num(m["cpu0_us"], 1),
                             num(m["sidecar_cpu_us"], 1) if m["sidecar_cpu_us"] else "–",
                             f"{r['rps']:.2f}", f"{r['p99']:.2f}", f"{r.get('ffi_rps_over', 0):.2f}"))
            out.append(f"### {c} connection{'s' if c > 1 else ''}\n\n" + table(
                ("peer", "RPS", "p50 µs", "p99 µs", "Envoy CPU µs/req", "sidecar CPU µs/req", "RPS ×", "p99 ×",
                 "ffi ÷"), rows) + "\n")
        out.append(f"![Envoy RPS and p99 per peer]({os.path.relpath(plot, md_dir)})\n")
    if "scaling" in envoy:
        s = envoy["scaling"]
        rows = [(label, num(s["1"][key]["rps"]), num(s["2"][key]["rps"]), f"{s['2'][key]['rps'] / s['1'][key]['rps']:.2f}x")
                for key, label in (("stock", "stock Lua respond"), ("ffi", "ours + ffi echo"))]
        out.append(f"""### Scaling: `--concurrency 2` vs 1, 32 connections

Each worker has its own Lua VM and completion queue; the runtime is shared. wrk takes
part of the same cores, so 2 workers cannot double.

{table(("peer", "--concurrency 1 RPS", "--concurrency 2 RPS", "2 / 1"), rows)}
""")
    if "instructions" in envoy:
        counts = envoy["instructions"]
        stock = counts.get("stock")
        rows = [(m["label"], num(m["worker"]), num(m["all"]), f"{m['all'] / stock['all']:.2f}" if stock else "–")
                for m in counts.values()]
        out.append(f"""### Instructions per request (callgrind)

CPU time on this shared VM swings by tens of percent between rounds; instruction
counts do not. Each peer in its own Envoy under `valgrind --tool=callgrind`, wrk
-c4 for 5 s after a 2-s warm-up; the worker thread, and all threads (the runtime's
or the floor's thread included). Valgrind runs one thread at a time, so this counts
the work of a request, not the cost of spinning or of waking threads.

{table(("peer", "worker", "all threads", "× stock"), rows)}
""")
    if "idle_cpu_percent" in envoy:
        out.append(f"Idle: Envoy with the runtime loaded used {envoy['idle_cpu_percent']:.2f}% CPU over 3 s "
                   "after the runs.\n")
    return "\n".join(out)


def cpu_section(nginx, envoy, plot_dir, md_dir):
    rows = cpu_rows(nginx, envoy)
    if not rows:
        return ""
    plot = plot_dir / "cpu_per_call.png"
    plot_cpu(rows, plot)
    md_rows = [(label, num(h, 1), num(s, 1) if s else "–", num(extra, 1) if extra is not None else "–")
               for label, h, s, extra in rows]
    return f"""## CPU per call, by host (wrk -c32)

"extra" is what the call costs over a plain answer: nginx `/ffi` − `/plain`; Envoy
ours + ffi − ours respond; the floor module's thread hop − its respond, and the hop
in front of the stock filter − the stock filter alone; for the sidecars, Envoy +
sidecar − the stock filter's respond.

{table(("host: peer", "host CPU µs/req", "sidecar CPU µs/req", "extra per call µs"), md_rows)}

![CPU per request by host]({os.path.relpath(plot, md_dir)})
"""


HEADER = """# Benchmarks

Written by `ci/bench.sh` from one run: every number below comes from that run, with the
machine's core count, load average and the share of CPU time its VM host took away
("stolen") beside it. Benchmarks are not tests (nothing in `bazel test //...` runs
them). The machine is a shared VM: absolute numbers move by ±30% with its load, so
compare ratios, which are taken within one run (rounds of the compared cases
interleaved, medians of several rounds). Its host takes CPU time away in bursts of
tens of seconds (up to ~40% of it, so that one peer's 5 s could run on much less CPU
than the next one's): a measurement of the nginx and Envoy steps during which more
than `BENCH_MAX_STEAL` (default 3) percent was stolen is taken again once a probe keeping
every vCPU busy sees the machine quiet (waiting at most `BENCH_STEAL_WAIT`, default 300 s,
per step), up to `BENCH_RETRIES` (default 3) times, keeping the least stolen; each step's
line says the limit it used and how many were.

| what | command |
| --- | --- |
| everything, rewriting this page and its plots | `ci/bench.sh` |
| one part, report in `target/bench/report.md` | `ci/bench.sh core`, `ci/bench.sh nginx`, `ci/bench.sh envoy` |
| quick look (1 s per measurement, 1 round) | `BENCH_SECONDS=1 BENCH_RUNS=1 ci/bench.sh envoy` |
| the drivers alone | `cargo bench -p resty_ffi --bench roundtrip`, `nginx_module/bench/nginx_bench.sh`, `envoy_filter/bench/bench.sh` |

The Envoy driver also takes `BENCH_CONNECTIONS="1 32"`, `BENCH_PEERS=ffi,ours` and
`ENVOY_STEPS=peers,pairs,scaling,idle,instructions` (and `BENCH_PAIR_ROUNDS`); the nginx driver `SIZES` and `STEPS`. What each change
to the hot paths bought, measured at the time: [performance.md](performance.md).
"""


def shdict_section(shdict):
    rows = []
    for r in shdict["rows"]:
        kind = r["kind"]
        label = "Lua, one worker" if kind == "lua" else f"runtime, {kind.split(':')[1]} thread(s)"
        rows.append([label, num(r["nginx_set"]), num(r["envoy_set"]), f"{r['envoy_set'] / r['nginx_set']:.2f}x",
                     num(r["nginx_get"]), num(r["envoy_get"]), f"{r['envoy_get'] / r['nginx_get']:.2f}x"])
    return "\n".join([
        "## Shared dicts: `ngx.shared` on Envoy vs lua-resty-core's on nginx\n",
        f"*{shdict['cores']} cores; load average {shdict['load']:.2f} at the end of this step; medians of "
        f"{shdict['runs']} round(s) of {shdict['n']:,} operations; {shdict['date']}.*\n",
        "`ci/bench_shdict.py`: one nginx worker and one Envoy worker; Lua loops of `set`, then `get` (1,000 "
        "keys, 16-byte values), and the C test runtime's threads calling `resty_ffi_shdict_set`/`_get`.\n",
        table(["what", "nginx set/s", "Envoy set/s", "Envoy / nginx", "nginx get/s", "Envoy get/s",
               "Envoy / nginx"], rows),
    ])


def grpc_section(grpc):
    rows = [[str(r["in_flight"]), r["client"], num(r["cps"]), num(r["p50"], 1), num(r["p99"], 1),
             f"{r['vs_floor']:.2f}", num(r["added_p50"], 1)] for r in grpc["rows"]]
    ping = [[host, num(p["poll"], 1), num(p["tokio"], 1)] for host, p in grpc["ping"].items()]
    return "\n".join([
        "## gRPC: `resty.ffi.grpc` from Lua vs tonic from Rust\n",
        f"*{grpc['cores']} cores; load average {grpc['load']:.2f} at the end of this step; medians of "
        f"{grpc['runs']} round(s); {grpc['date']}.*\n",
        "`grpc/bench/bench.py`: unary `SayHello` to the tonic test server, one connection; the floor is tonic's "
        "client called directly from Rust (one tokio thread); Lua in one nginx worker and one Envoy worker, each "
        "with a one-thread runtime; latencies measured around each call in Lua. Goals (issue 21): ≤ 10 µs added "
        "per call, ≥ 0.8 of the floor's throughput at 100 in flight.\n",
        table(["in flight", "client", "calls/s", "p50 µs", "p99 µs", "vs floor", "added µs (p50)"], rows),
        "\nA round trip Lua → runtime → Lua without gRPC (serial, p50 µs): where a serial call's added time "
        "goes ([grpc.md](grpc.md#performance)).\n",
        table(["host", "answered by the poll thread", "by a tokio task"], ping),
    ])


def main():
    md_path = pathlib.Path(sys.argv[1])
    plot_dir = pathlib.Path(sys.argv[2])
    steps = sys.argv[3:]
    plot_dir.mkdir(parents=True, exist_ok=True)
    md_dir = md_path.parent
    core = load("core") if "core" in steps else None
    nginx = load("nginx") if "nginx" in steps else None
    envoy = load("envoy") if "envoy" in steps else None
    shdict = load("shdict") if "shdict" in steps else None
    grpc = load("grpc") if "grpc" in steps else None
    commit = subprocess.run(["git", "-C", str(common.ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(common.ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    parts = [HEADER, f"Run of {datetime.date.today().isoformat()} at commit `{commit}`"
             f"{' (with local changes)' if dirty else ''}, {os.cpu_count()} cores.\n",
             goals_section(nginx, envoy)]
    if core:
        parts.append(core_section(core))
    if nginx:
        parts.append(nginx_section(nginx, plot_dir, md_dir))
    if envoy:
        parts.append(envoy_section(envoy, plot_dir, md_dir))
    parts.append(cpu_section(nginx, envoy, plot_dir, md_dir))
    if shdict:
        parts.append(shdict_section(shdict))
    if grpc:
        parts.append(grpc_section(grpc))
    md_path.write_text("\n".join(p for p in parts if p).rstrip() + "\n")
    print(f"report: {md_path}")


if __name__ == "__main__":
    main()
