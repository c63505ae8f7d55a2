"""Differential suite: "the same results as Envoy's Lua filter", measured.

Every case of `diff/cases_*.py` is a stock `envoy.filters.http.lua` config
(script, options, routes with LuaPerRoute configs). The suite writes one
Envoy config with a listener per case for the stock filter, converts it with
`envoy_filter/convert.py` (as a user would), and runs both sets of listeners
in ONE Envoy (`--concurrency 1`). Each request of a case goes to the stock
listener, then to ours, over HTTP/1.1 and over HTTP/2, one at a time; the two
must agree on:

- the answer: status, reason phrase (HTTP/1.1), headers (but date,
  x-request-id, x-envoy-upstream-service-time; compared by name, see
  docs/envoy.md), body, trailers, and how the stream ended (complete, reset,
  closed);
- what the recording upstream received in that window (the request if it
  continued, the script's httpCalls): method, path, headers, body, trailers;
- the log lines the filter wrote in that window (script logs and Lua errors);
- for cases that ask for it, the listener's `lua` stats.

    python3 envoy_filter/tests/test_diff.py [-v] [CASE ...]

prints one PASS/FAIL line per case (the first difference on FAIL; all of
them with -v) and `N passed, M failed`. A case with `differs` (a difference
docs/envoy.md explains) prints KNOWN while it differs and fails once it
does not, so the list stays true.
"""

import argparse
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

import harness
from diff import wire
from diff.cases import CASES

CONVERT = harness.ROOT / "envoy_filter" / "convert.py"
LUA_PATH_DIR = pathlib.Path(__file__).resolve().parent / "diff" / "lua"
PROTOCOLS = ("h1", "h2")
IGNORED_HEADERS = {"date", "x-request-id", "x-envoy-upstream-service-time"}
IGNORED_UPSTREAM_HEADERS = {"x-request-id"}
# Our filter logs through the dynamic_modules logger, the stock one through lua.
FILTER_LOGGERS = {"lua", "dynamic_modules"}
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")
LOG_LINE = re.compile(r"^\[(\w+)\]\[([\w.]+)\] (.*)$")

H2_PROTOCOL_OPTIONS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


# ------------------------------------------------------------------ config --

def h2_cluster(name, port):
    return {**harness.cluster(name, port), "typed_extension_protocol_options": H2_PROTOCOL_OPTIONS}


def clusters(upstream_port, closed_port):
    """`upstream` and `lua_cluster` reach the recording upstream, `upstream_b`
    too (route re-selection tells them apart by the header its route adds);
    `black_hole` has no endpoint, `refused` one where nothing listens."""
    return [h2_cluster("upstream", upstream_port), h2_cluster("upstream_b", upstream_port),
            h2_cluster("lua_cluster", upstream_port), harness.cluster("black_hole"),
            h2_cluster("refused", closed_port)]


def stock_listener(case, port=0):
    name = f"stock_{case.name}"
    vhost = {"name": "vh", "domains": ["*"],
             "routes": case.routes or [{"name": "default", "match": {"prefix": "/"},
                                        "route": {"cluster": "upstream", "timeout": "5s"}}]}
    vhost.update(case.vhost or {})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "http_protocol_options": {"enable_trailers": True},
        "route_config": {"name": f"{name}_routes", "virtual_hosts": [vhost], **(case.route_config or {})},
        "http_filters": [*case.stock_filters(), harness.ROUTER],
    }
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "enable_reuse_port": False,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def converted(stock_listeners, workdir, convert=True):
    """Our listeners: the stock ones through convert.py, renamed."""
    path = workdir / "stock.yaml"
    path.write_text(yaml.safe_dump({"static_resources": {"listeners": stock_listeners}}, sort_keys=False))
    if convert:
        out = subprocess.run([sys.executable, str(CONVERT), str(path)], check=True, capture_output=True, text=True)
        ours = yaml.safe_load(out.stdout)["static_resources"]["listeners"]
    else:
        # The stock filter on both sides: their shared VMs must stay apart.
        text = path.read_text().replace("shared_vm_id: ", "shared_vm_id: twice-")
        ours = yaml.safe_load(text)["static_resources"]["listeners"]
    for listener in ours:
        name = listener["name"].replace("stock_", "ours_", 1)
        listener["name"] = name
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["stat_prefix"] = name
        hcm["route_config"]["name"] = f"{name}_routes"
        for http_filter in hcm["http_filters"]:
            module = http_filter.get("typed_config", {}).get("dynamic_module_config", {})
            if "metrics_namespace" in module:
                module["metrics_namespace"] = f"http.{name}"
    return ours


ENV = {"LUA_PATH": f"{LUA_PATH_DIR}/?.lua;;"}


def validate(listeners, cluster_list, workdir):
    """None if Envoy (--mode validate, with our module) accepts these
    listeners, else its error."""
    path = workdir / "validate.yaml"
    path.write_text(json.dumps({"static_resources": {"listeners": listeners, "clusters": cluster_list}}))
    env = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(harness.RELEASE), "PATH": "/usr/bin:/bin", **ENV}
    out = subprocess.run([harness.envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "critical",
                          "--log-format", "%v"], capture_output=True, text=True, env=env, timeout=60,
                         cwd=harness.ROOT)
    if out.returncode == 0:
        return None
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {out.returncode}"


def loadable(cases, stock, ours, cluster_list, workdir):
    """{case name: None (passed) or why it failed} for the cases that cannot
    run: those whose configs Envoy must refuse (checked here, for both
    filters), and those whose configs it refuses unexpectedly (Envoy refuses a
    whole config for one bad listener, so they are left out of the run)."""
    settled = {}
    for case, s, o in zip(cases, stock, ours):
        if case.refused:
            stock_why, our_why = validate([s], cluster_list, workdir), validate([o], cluster_list, workdir)
            if stock_why is None:
                settled[case.name] = "the stock config loads (a broken case)"
            else:
                settled[case.name] = None if our_why else f"stock refuses the config ({stock_why}), ours loads it"
    run = [(c, s, o) for c, s, o in zip(cases, stock, ours) if not c.refused]
    if validate([s for _, s, _ in run] + [o for _, _, o in run], cluster_list, workdir) is None:
        return settled
    stock_ok = validate([s for _, s, _ in run], cluster_list, workdir) is None
    for case, s, o in run:
        if not stock_ok and (why := validate([s], cluster_list, workdir)):
            settled[case.name] = f"the stock config does not load (a broken case): {why}"
        elif (why := validate([o], cluster_list, workdir)):
            settled[case.name] = f"the converted config does not load: {why}"
    return settled


# ----------------------------------------------------------------- running --

class Window:
    """What Envoy logged and the upstream received between start() and end()."""

    def __init__(self, envoy, upstream):
        self.envoy, self.upstream = envoy, upstream

    def start(self):
        self.log_at = self.envoy.log_path.stat().st_size
        self.records_at = len(self.upstream.records)

    def end(self, settle):
        # Quiet for `settle` seconds (at most 1 s): late log lines and
        # fire-and-forget httpCalls belong to this window.
        deadline = time.monotonic() + 1
        last = None
        while time.monotonic() < deadline:
            now = (self.envoy.log_path.stat().st_size, len(self.upstream.records))
            if now == last:
                break
            last = now
            time.sleep(settle)
        with open(self.envoy.log_path, "rb") as f:
            f.seek(self.log_at)
            text = f.read().decode(errors="replace")
        return filter_logs(text), sorted(received(r) for r in self.upstream.records[self.records_at:])


def filter_logs(text):
    """The filter's lines: script logs at any level, anything at info or above."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m or m.group(2) not in FILTER_LOGGERS:
            continue
        level, message = m.group(1), m.group(3)
        if "script log: " in message or LOG_LEVELS.index(level) >= LOG_LEVELS.index("info"):
            out.append(f"[{level}] {message}")
    return out


def received(r):
    headers = sorted((k, v) for k, v in r.headers if k not in IGNORED_UPSTREAM_HEADERS)
    return (r.method, r.path, tuple(headers), r.body, tuple(r.trailers or ()))


def answer_view(a):
    headers = sorted(((k, v) for k, v in a.headers if k not in IGNORED_HEADERS), key=lambda kv: kv[0])
    return dataclasses.replace(a, headers=headers)


def lua_stats(envoy, listener):
    _, text = envoy.admin(f"/stats?filter=^http\\.{listener}\\.lua\\.")
    prefix = f"http.{listener}."
    return sorted(line.replace(prefix, "", 1) for line in text.splitlines() if line.startswith(prefix))


def describe_received(stock, ours):
    """How two lists of upstream requests differ, request by request."""
    if len(stock) != len(ours):
        return (f"{len(stock)} requests != {len(ours)}: stock {short([r[:2] for r in stock])} "
                f"ours {short([r[:2] for r in ours])}")
    for s, o in zip(stock, ours):
        if s == o:
            continue
        parts = [f"{s[0]} {s[1]}"]
        if s[:2] != o[:2]:
            parts.append(f"ours {o[0]} {o[1]}")
        if s[2] != o[2]:
            parts.append("headers " + describe(list(s[2]), list(o[2])))
        if s[3] != o[3]:
            parts.append("body " + describe(s[3], o[3]))
        if s[4] != o[4]:
            parts.append("trailers " + describe(list(s[4]), list(o[4])))
        return ": ".join(parts)
    return "?"


def describe(stock, ours):
    """A short account of how two values differ."""
    if isinstance(stock, bytes) and isinstance(ours, bytes):
        s_lines, o_lines = stock.split(b"\n"), ours.split(b"\n")
        for i, (a, b) in enumerate(zip(s_lines, o_lines)):
            if a != b:
                return f"line {i + 1}: stock {short(a)} != ours {short(b)}"
        return f"stock {short(stock)} != ours {short(ours)}"
    if isinstance(stock, list) and isinstance(ours, list):
        only_stock = [x for x in stock if x not in ours]
        only_ours = [x for x in ours if x not in stock]
        if not only_stock and not only_ours:
            return f"same items, other order: stock {short(stock)} != ours {short(ours)}"
        return f"only stock {short(only_stock)}, only ours {short(only_ours)}"
    return f"stock {short(stock)} != ours {short(ours)}"


# Differences in the order that explains a failure best (a body that differs
# also changes content-length).
ORDER = ("outcome", "status", "body", "logs", "headers", "upstream received", "trailers", "reason")


def differences(stock, ours):
    """[(what, account)] for every part of the results that differs."""
    (s_answer, s_logs, s_upstream), (o_answer, o_logs, o_upstream) = stock, ours
    pairs = {f.name: (getattr(s_answer, f.name), getattr(o_answer, f.name)) for f in dataclasses.fields(wire.Answer)}
    pairs["upstream received"] = (s_upstream, o_upstream)
    pairs["logs"] = (s_logs, o_logs)
    if pairs["body"][0] != pairs["body"][1]:
        # content-length follows the body
        pairs["headers"] = tuple([kv for kv in h if kv[0] != "content-length"] for h in pairs["headers"])
    return [(what, (describe_received if what == "upstream received" else describe)(*pairs[what]))
            for what in ORDER if pairs[what][0] != pairs[what][1]]


def short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def run_case(case, envoy, window, ports, verbose):
    stock_port, our_port = ports
    found = []
    for i, req in enumerate(case.requests):
        for proto in PROTOCOLS:
            sides = []
            for port in (stock_port, our_port):
                window.start()
                answer = answer_view(wire.CLIENTS[proto](port, req))
                logs, upstream = window.end(case.settle)
                sides.append((answer, logs, upstream))
            for what, account in differences(*sides):
                found.append(f"{proto} {req.method} {req.path} #{i}: {what}: {account}")
    if case.stats:
        s, o = lua_stats(envoy, f"stock_{case.name}"), lua_stats(envoy, f"ours_{case.name}")
        if s != o:
            found.append(f"lua stats: {describe(s, o)}")
    if not envoy.alive():
        found.append("Envoy died")
        return report(case, found, verbose)
    if case.differs:
        if not found:
            print(f"FAIL {case.name}: no longer differs; drop its `differs` and the docs/envoy.md entry", flush=True)
            return False
        print(f"KNOWN {case.name}: {case.differs}: {found[0]}", flush=True)
        return True
    return report(case, found, verbose)


def report(case, found, verbose):
    """Prints the case's result; True if nothing differs."""
    if found:
        print(f"FAIL {case.name}: {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""), flush=True)
        if verbose:
            for line in found[1:]:
                print(f"     {line}", flush=True)
        return False
    print(f"PASS {case.name}", flush=True)
    return True


def start_envoy(stock, ours, cluster_list):
    """Envoy with these listener pairs on ports picked now (again if another
    process took one meanwhile); returns (envoy, [(stock port, our port)])."""
    for attempt in range(3):
        admin, *ports = harness.free_ports(1 + len(stock) + len(ours))
        for listener, port in zip(stock + ours, ports):
            listener["address"]["socket_address"]["port_value"] = port
        try:
            envoy = harness.Envoy(stock + ours, admin, clusters=cluster_list, env=ENV, log_format="[%l][%n] %v",
                                  extra_args=["--component-log-level", "lua:trace,dynamic_modules:trace"])
        except RuntimeError as e:
            if "Address already in use" in str(e) and attempt < 2:
                continue
            raise
        return envoy, list(zip(ports[:len(stock)], ports[len(stock):]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*", help="only these cases")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--stock-twice", action="store_true",
                        help="run the stock config on both sides (checks that the cases are deterministic)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "case names must be unique"

    harness.ensure_built()
    upstream = wire.RecordingUpstream()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_diff_"))
    envoy = None
    passed = failed = 0
    start = time.monotonic()
    try:
        closed = harness.free_ports(1)[0]
        stock = [stock_listener(c) for c in cases]
        ours = converted(stock, workdir, convert=not args.stock_twice)
        cluster_list = clusters(upstream.port, closed)
        settled = loadable(cases, stock, ours, cluster_list, workdir)
        keep = [i for i, c in enumerate(cases) if c.name not in settled]
        envoy, ports = start_envoy([stock[i] for i in keep], [ours[i] for i in keep], cluster_list)
        case_ports = dict(zip([cases[i].name for i in keep], ports))
        window = Window(envoy, upstream)
        for case in cases:
            if case.name in settled:
                why = settled[case.name]
                print(f"FAIL {case.name}: {why}" if why else f"PASS {case.name} (both refuse the config)", flush=True)
                ok = why is None
            else:
                try:
                    ok = run_case(case, envoy, window, case_ports[case.name], args.verbose)
                except Exception as e:  # a broken case must not stop the others
                    print(f"FAIL {case.name}: {type(e).__name__}: {e}", flush=True)
                    ok = False
            passed, failed = passed + ok, failed + (not ok)
    finally:
        if envoy:
            envoy.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"({len(cases)} cases, {len(PROTOCOLS)} protocols, {time.monotonic() - start:.1f}s)")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
