"""Reliability of the Envoy filter on the stock Envoy 1.40 (issue 12): no hook
touches a destroyed stream, a local reply is final, no wake-up is lost, each
call keeps its own deadline, a panic fails the stream closed, old configs'
Lua VMs and runtimes go away; and the same under abort storms, config churn,
drains, large bodies, trailers and HTTP/2 resets.

RELIABILITY_ABORTS sets the size of the abort storm (default 10,000)."""

import asyncio
import concurrent.futures
import http.client
import json
import os
import pathlib
import random
import signal
import socket
import tempfile
import threading
import time

import harness

(PORT, PORT_CLOSED, PORT_NO_ROUTE, PORT_NO_UPSTREAM, PORT_UPSTREAM, PORT_SMALL_BUF, PORT_REQUEST_TIMEOUT,
 ADMIN) = harness.free_ports(8)

SCRIPT = r"""
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))
local tr = assert(ngx.load_ffi("test_runtime", "threads=64"))
local quick = assert(ngx.load_ffi("test_runtime", "threads=2", { timeout = 0.2 }))
local two_s = assert(ngx.load_ffi("test_runtime", "threads=3", { timeout = 2 }))
local slow_a = assert(ngx.load_ffi("test_runtime", "threads=4", { timeout = 0.8 }))
local wide

-- When the request side of /two-deadlines started, and when its call gave up.
local started_at, a_done_at

function envoy_on_request(handle)
  local h = handle:headers()
  local path = h:get(":path")
  if path == "/call-respond" then
    local ok, res = echo:echo("pong")
    handle:respond({ [":status"] = "200" }, res)
  elseif path == "/call-fail" then
    assert(echo:echo("x"))
    error("failing after a call")
  elseif path == "/call-continue" then
    assert(echo:echo("x"))
  elseif path == "/deny" then
    handle:respond({ [":status"] = "403" }, "denied")
  elseif path == "/late-answer-freed" then
    -- A: gives up at 0.2 s; its answer comes at 1 s, while B waits; C after.
    local size = h:get("x-size")
    local t0 = handle:timestamp()
    local a_ok, a_err = quick:call("late:1000:" .. size)
    local t1 = handle:timestamp()
    local b_ok, b_res = tr:call("sleep:1200:b")
    local t2 = handle:timestamp()
    local c_ok, c_res = quick:call("c")
    local t3 = handle:timestamp()
    handle:respond({ [":status"] = "200" }, table.concat({ tostring(a_ok), tostring(a_err), t1 - t0,
      tostring(b_ok), tostring(b_res), t2 - t1, tostring(c_ok), tostring(c_res), t3 - t2 }, "|"))
  elseif path == "/late-answer-then-call" then
    local ok, err = quick:call("sleep:300:late")
    h:add("x-first-call", tostring(ok) .. ":" .. tostring(err))
    handle:body()
  elseif path == "/two-deadlines" then
    started_at, a_done_at = handle:timestamp(), nil
    slow_a:call("never")
    a_done_at = handle:timestamp()
  elseif path:sub(1, 6) == "/sleep" then
    local ok, res = tr:call("sleep:" .. path:sub(8) .. ":slept")
    handle:respond({ [":status"] = "200" }, tostring(ok) .. "|" .. tostring(res))
  elseif path == "/wait-then-continue" then
    assert(tr:call("sleep:100:x"))
  elseif path == "/in-flight" then
    -- One runtime thread per call, so that all of a drain test's calls wait at once.
    wide = wide or assert(ngx.load_ffi("test_runtime", "threads=300"))
    local ok, res = wide:call("sleep:2000:slept")
    handle:respond({ [":status"] = "200" }, tostring(ok) .. "|" .. tostring(res))
  end
end

function envoy_on_response(handle)
  local h = handle:headers()
  local status = h:get(":status")
  if status == "403" then
    local ok = tr:call("sleep:300:x")
    h:add("x-waited", tostring(ok))
  elseif status == "408" then
    two_s:call("never")
    h:add("x-a-ms", tostring(a_done_at and a_done_at - started_at))
  elseif h:get("x-late-check") then
    local t0 = handle:timestamp()
    local ok, res = two_s:call("fast")
    h:add("x-call", tostring(ok) .. ":" .. tostring(res))
    h:add("x-call-ms", tostring(handle:timestamp() - t0))
  elseif h:get("x-wait-response") then
    assert(tr:call("sleep:100:x"))
  else
    local ok, res = echo:echo("resp")
    h:add("x-resp", res)
  end
end
"""


class RecordingUpstream:
    """An HTTP/1.1 upstream on 127.0.0.1 that records each request (method,
    path, body length) and answers 200 "upstream\\n", or a body of
    `x-body-size` bytes."""

    def __init__(self):
        self.requests = []
        upstream = self

        class Handler(harness.http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.do_GET()

            def do_GET(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append((self.command, self.path, len(body)))
                size = self.headers.get("x-body-size")
                data = b"r" * int(size) if size else harness.UPSTREAM_BODY.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.send_header("x-late-check", self.headers.get("x-late-check") or "")
                if self.headers.get("x-wait-response"):
                    self.send_header("x-wait-response", "1")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = harness._Upstream(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class State:
    def __init__(self):
        self.upstream = RecordingUpstream()
        ours = harness.ours(SCRIPT)
        no_route = harness.listener("no_route", PORT_NO_ROUTE, ours)
        vhost = no_route["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
        vhost["routes"][0]["match"] = {"path": "/never-matches"}
        listeners = [
            harness.listener("main", PORT, ours, buffer_limit=4 << 20),
            harness.listener("closed", PORT_CLOSED, harness.ours(SCRIPT, fail_closed=True)),
            no_route,
            harness.listener("no_upstream", PORT_NO_UPSTREAM, ours, route=harness.to_cluster("empty")),
            harness.listener("upstream", PORT_UPSTREAM, ours, route=harness.to_cluster("recording")),
            harness.listener("small_buf", PORT_SMALL_BUF, ours, buffer_limit=64 << 10,
                             route=harness.to_cluster("recording")),
            harness.listener("request_timeout", PORT_REQUEST_TIMEOUT, ours,
                             hcm_options={"request_timeout": "0.3s"}),
        ]
        clusters = [harness.cluster("empty"), harness.cluster("recording", self.upstream.port)]
        self.envoy = harness.Envoy(listeners, ADMIN, concurrency=2, clusters=clusters)

    def stop(self):
        self.envoy.stop()
        self.upstream.stop()


def setup():
    return State()


def teardown(state):
    state.stop()


def request(port, path, method="GET", body=None, headers=None):
    return harness.request(port, path, method=method, body=body, headers=headers)


def header(headers, name):
    return next((v for k, v in headers if k == name), None)


def post_headers_then_body(port, path, body, delay, headers=()):
    """POSTs with the body sent `delay` seconds after the headers; returns
    (status, headers, body) and the seconds until the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        start = time.monotonic()
        conn.putrequest("POST", path)
        conn.putheader("content-length", str(len(body)))
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        time.sleep(delay)
        conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return (resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data), time.monotonic() - start
    finally:
        conn.close()


# ------------------------------------------------------- defect 1: re-entrancy --

def case_hooks_that_end_the_stream_leave_no_dangling_filter(state):
    # A call, then: a local reply (sent from the scheduled hook), a failure
    # answered 500, or a continue whose route answers at once (direct
    # response, no route, no healthy upstream) and runs envoy_on_response
    # (which calls a runtime too) inside our own scheduled hook. Each ends
    # the stream over HTTP/1 before our hook returns.
    expected = [
        (PORT, "/call-respond", 200, b"pong"),
        (PORT_CLOSED, "/call-fail", 500, b""),
        (PORT, "/call-continue", 200, harness.UPSTREAM_BODY.encode()),
        (PORT_NO_ROUTE, "/call-continue", 404, b""),
        (PORT_NO_UPSTREAM, "/call-continue", 503, b"no healthy upstream"),
    ]

    def one(i):
        port, path, status, body = expected[i % len(expected)]
        got_status, headers, got_body = request(port, path)
        assert (got_status, got_body) == (status, body), (path, got_status, got_body)
        if port != PORT_CLOSED:
            assert header(headers, "x-resp") == "resp", (path, headers)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(1000)))
    state.envoy.assert_no_crash()


# -------------------------------------------------- defect 2: the reply is final --

def case_a_local_reply_never_reaches_the_upstream(state):
    # respond(403) in envoy_on_request; envoy_on_response waits on a runtime
    # while the request body arrives. The old filter continued the request.
    before = len(state.upstream.requests)
    (status, headers, body), _ = post_headers_then_body(PORT_UPSTREAM, "/deny", b"hello", 0.1)
    assert (status, body) == (403, b"denied"), (status, body)
    assert header(headers, "x-waited") == "true", headers
    time.sleep(0.3)
    assert state.upstream.requests[before:] == [], state.upstream.requests[before:]
    state.envoy.assert_no_crash()


# ------------------------------------------------- defect 3: no lost wake-up --

def case_a_late_answer_does_not_delay_the_next_call(state):
    # The first call times out (0.2 s); its answer comes at 0.3 s while the
    # script waits for the body (sent at 0.6 s). The response's call must be
    # prompt: the old filter woke it only at its own 2 s deadline.
    (status, headers, body), elapsed = post_headers_then_body(
        PORT_UPSTREAM, "/late-answer-then-call", b"body", 0.6, headers=[("x-late-check", "1")])
    assert status == 200, (status, body)
    assert header(headers, "x-call") == "true:fast", headers
    assert int(header(headers, "x-call-ms")) < 1000, headers
    # The body comes at 0.6 s; the call must not wait for its own 2 s timeout.
    assert 0.6 <= elapsed < 1.8, elapsed
    state.envoy.assert_no_crash()


def case_late_answers_are_freed_and_the_next_call_is_prompt(state):
    # Per stream: call A gives up at its 0.2 s timeout; its 6 MiB answer comes
    # at 1 s (from a thread of the runtime's own) while call B waits, which it
    # must neither end nor delay; call C after is prompt. Over 32 streams,
    # the late answers (192 MiB) must be freed: Envoy's allocator (which the
    # runtime's malloc is) holds no more than a few of them at the end.
    def one(_):
        status, _, body = request(PORT, "/late-answer-freed", headers={"x-size": str(6 << 20)})
        assert status == 200, (status, body)
        return body.decode().split("|")

    def allocated():
        return int(json.loads(state.envoy.admin("/memory")[1])["allocated"])

    one(0)  # warm-up: Lua VMs, runtimes, the allocator's caches
    before = allocated()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    for a_ok, a_err, a_ms, b_ok, b_res, b_ms, c_ok, c_res, c_ms in results:
        assert (a_ok, a_err) == ("false", "resty_ffi: runtime did not answer in time"), results
        assert 200 <= int(a_ms) < 1000, a_ms
        assert (b_ok, b_res, c_ok, c_res) == ("true", "b", "true", "c"), results
        assert 1200 <= int(b_ms) < 3000 and int(c_ms) < 200, (b_ms, c_ms)
    grown = allocated() - before
    assert grown < 32 << 20, f"allocated memory grew by {grown} bytes over 32 late answers of 6 MiB"
    state.envoy.assert_no_crash()


# ------------------------------------------- defect 4: independent deadlines --

def case_each_call_keeps_its_own_deadline(state):
    # The request side waits on a call with a 0.8 s timeout; Envoy answers 408
    # at 0.3 s (request_timeout: the body never comes); envoy_on_response then
    # waits on a call with a 2 s timeout. The request side's call must still
    # time out at 0.8 s: the old filter let the second call's timer replace it.
    conn = http.client.HTTPConnection("127.0.0.1", PORT_REQUEST_TIMEOUT, timeout=20)
    try:
        conn.putrequest("POST", "/two-deadlines")
        conn.putheader("content-length", "10")
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        status, headers = resp.status, [(k.lower(), v) for k, v in resp.getheaders()]
    finally:
        conn.close()
    assert status == 408, status
    a_ms = header(headers, "x-a-ms")
    assert a_ms not in (None, "nil") and 700 <= float(a_ms) < 1500, headers
    state.envoy.assert_no_crash()


# ------------------------------------------- large bodies and trailers ----------

def case_request_body_beyond_the_buffer_limit_while_a_call_waits(state):
    # Flow control, not a 413: the script does not read the body, so all of it
    # reaches the upstream once the call returns.
    before = len(state.upstream.requests)
    body = os.urandom(1 << 20)
    status, _, _ = request(PORT_SMALL_BUF, "/wait-then-continue", method="POST", body=body)
    assert status == 200
    assert state.upstream.requests[before:] == [("POST", "/wait-then-continue", len(body))]


def case_response_body_beyond_the_buffer_limit_while_a_call_waits(state):
    status, headers, body = request(PORT_SMALL_BUF, "/", headers={"x-body-size": str(1 << 20),
                                                                 "x-wait-response": "1"})
    assert status == 200 and body == b"r" * (1 << 20), (status, len(body))


def h2_connect(port):
    import h2.config
    import h2.connection

    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_exchange(sock, conn, open_streams, reset=()):
    """Reads until every stream in `open_streams` ended or was reset; returns
    {stream_id: (status, body)}. Streams in `reset` are reset by us once their
    request is out."""
    import h2.events

    for stream_id in reset:
        conn.reset_stream(stream_id)
    sock.sendall(conn.data_to_send())
    results = {sid: [None, b""] for sid in open_streams}
    pending = set(open_streams) - set(reset)
    deadline = time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                results[event.stream_id][0] = dict(event.headers).get(b":status")
            elif isinstance(event, h2.events.DataReceived):
                results[event.stream_id][1] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                pending.discard(event.stream_id)
        sock.sendall(conn.data_to_send())
    assert not pending, f"streams without an answer: {sorted(pending)}"
    return {sid: tuple(v) for sid, v in results.items() if sid not in reset}


def case_trailers_arrive_while_a_call_waits(state):
    sock, conn = h2_connect(PORT_UPSTREAM)
    try:
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(":method", "POST"), (":path", "/wait-then-continue"),
                                      (":scheme", "http"), (":authority", "t")])
        conn.send_data(stream_id, b"data")
        conn.send_headers(stream_id, [("x-trailer", "1")], end_stream=True)
        results = h2_exchange(sock, conn, [stream_id])
    finally:
        sock.close()
    assert results[stream_id] == (b"200", harness.UPSTREAM_BODY.encode()), results


def case_http2_hundred_streams_half_reset_while_calls_wait(state):
    sock, conn = h2_connect(PORT)
    try:
        ids = []
        for i in range(100):
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [(":method", "GET"), (":path", f"/sleep:{random.randint(20, 200)}"),
                                          (":scheme", "http"), (":authority", "t")], end_stream=True)
            ids.append(stream_id)
        sock.sendall(conn.data_to_send())
        time.sleep(0.01)
        results = h2_exchange(sock, conn, ids, reset=ids[::2])
    finally:
        sock.close()
    assert len(results) == 50 and all(v == (b"200", b"true|slept") for v in results.values()), results
    # The connection's streams are gone; the worker still answers.
    assert request(PORT, "/call-respond")[2] == b"pong"
    state.envoy.assert_no_crash()


def case_http11_and_http2_answer_the_same(state):
    sock, conn = h2_connect(PORT)
    try:
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(":method", "GET"), (":path", "/call-respond"),
                                      (":scheme", "http"), (":authority", "t")], end_stream=True)
        h2_result = h2_exchange(sock, conn, [stream_id])[stream_id]
    finally:
        sock.close()
    status, _, body = request(PORT, "/call-respond")
    assert h2_result == (str(status).encode(), body) == (b"200", b"pong"), h2_result


# ------------------------------------------------------------- abort storm --

async def abort_one(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(random.uniform(0, 0.05))
    writer.transport.abort()


async def abort_storm(port, n, concurrency=200):
    gate = asyncio.Semaphore(concurrency)

    async def one():
        async with gate:
            await abort_one(port, f"/sleep:{random.randint(0, 50)}")

    await asyncio.gather(*(one() for _ in range(n)))


def wait_for_backlog(port):
    """Until the runtime has worked off the calls of aborted streams (it
    still runs them, in order): a new call answers at once."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert request(port, "/sleep:0")[2] == b"true|slept"
        if time.monotonic() - started < 0.1:
            return
    raise AssertionError("the runtime never caught up with the aborted calls")


def case_abort_storm_then_every_call_answers(state):
    # The runtime still runs the calls of aborted streams (queued behind
    # each other), so memory is compared once it caught up: a storm's
    # allocations are reused by the next one; a leak would add to them.
    n = int(os.environ.get("RELIABILITY_ABORTS", "10000"))
    envoy = state.envoy
    asyncio.run(abort_storm(PORT, n))
    wait_for_backlog(PORT)
    warm = envoy.rss_kib()
    started = time.monotonic()
    asyncio.run(abort_storm(PORT, n))
    took = time.monotonic() - started
    envoy.assert_no_crash()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: request(PORT, f"/sleep:{i % 7}")[2], range(1000)))
    assert answers == [b"true|slept"] * 1000
    wait_for_backlog(PORT)
    grown = envoy.rss_kib() - warm
    print(f"  {n} aborts in {took:.1f}s; RSS {warm} KiB after a first storm, grew {grown} KiB", flush=True)
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


# --------------------------------------------------------- defect 5: panics --

# The answer comes 20 ms late: it reaches the stream through a scheduler
# event (the "scheduled" hook), not the caller's brief busy-wait.
FAULT_SCRIPT = r"""
require("resty_ffi")
local tr = assert(ngx.load_ffi("test_runtime", "threads=1"))
function envoy_on_request(handle)
  assert(tr:call("sleep:20:x"))
end
function envoy_on_response(handle)
  handle:headers():add("x-resp", "1")
end
"""


def case_a_panic_fails_the_stream_closed(_):
    module_dir = harness.build_test_faults()
    # 500 while the response headers have not gone out (Envoy replaces the
    # response it is encoding), a reset once they have.
    for point, expect in [("filter_new", 500), ("request_headers", 500), ("scheduled", 500),
                          ("response_headers", 500), ("response_body", "reset")]:
        port, admin = harness.free_ports(2)
        envoy = harness.Envoy([harness.listener("faults", port, harness.ours(FAULT_SCRIPT))], admin,
                              module_dir=module_dir, env={"RESTY_FFI_TEST_PANIC_AT": point})
        try:
            try:
                status, _, _ = request(port, "/")
                got = status
            except (http.client.HTTPException, ConnectionError):
                got = "reset"
            assert got == expect, (point, got)
            assert f"panic in {point}; failing the stream closed" in envoy.log_text() or point == "filter_new", point
            if point == "filter_new":
                assert "panic in filter_new" in envoy.log_text()
            envoy.assert_no_crash(panics_expected=True)
        finally:
            envoy.stop()


# ------------------------------------------------ defect 6: config churn --

CHURN_SCRIPT = r"""
require("resty_ffi")
local rt = assert(ngx.load_ffi("lifecycle_runtime", "%(file)s|v%(version)d"))
function envoy_on_request(handle)
  local ok, res = rt:call("v%(version)d")
  handle:respond({ [":status"] = ok and "200" or "500" }, res)
end
"""


def churn_listener(port, life_file, version):
    return harness.listener("churn", port, harness.ours(CHURN_SCRIPT % {"file": life_file, "version": version}))


def write_lds(path, listener):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}))
    os.rename(tmp, path)


def case_config_churn_keeps_answering_and_unloads_old_runtimes(_):
    port, admin = harness.free_ports(2)
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_churn_"))
    life_file, lds = work / "life.txt", work / "lds.json"
    write_lds(lds, churn_listener(port, life_file, 0))
    config = {
        "node": {"id": "churn", "cluster": "churn"},
        "dynamic_resources": {"lds_config": {"path_config_source": {
            "path": str(lds), "watched_directory": {"path": str(work)}}}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
    }
    envoy = harness.Envoy([], admin, concurrency=2, config_text=json.dumps(config),
                          extra_args=["--drain-time-s", "1", "--drain-strategy", "immediate"])
    stop = threading.Event()
    answers, failures, retried = [], [], [0]

    def client():
        conn = None
        while not stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or not body.startswith(b"v"):
                    failures.append((resp.status, body))
                answers.append(body)
                if resp.getheader("connection") == "close":
                    conn.close()
                    conn = None
            except (ConnectionError, http.client.HTTPException, OSError):
                # A drained connection closed before this request was sent.
                retried[0] += 1
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.01)

    try:
        harness.wait_until(lambda: request(port, "/")[2] == b"v0", 10)
        threads = [threading.Thread(target=client) for _ in range(200)]
        for t in threads:
            t.start()
        versions = 50
        for version in range(1, versions + 1):
            write_lds(lds, churn_listener(port, life_file, version))
            harness.wait_until(lambda: f"v{version}".encode() in answers[-400:], 20)
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        assert len(answers) > 1000, len(answers)

        def old_runtimes_unloaded():
            events = life_file.read_text().split("\n")
            return all(events.count(f"init v{v}") == events.count(f"exit v{v}") for v in range(versions))

        harness.wait_until(old_runtimes_unloaded, 30)
        events = life_file.read_text().split("\n")
        inits = sum(1 for e in events if e.startswith("init"))
        exits = sum(1 for e in events if e.startswith("exit"))
        print(f"  {len(answers)} answers over {versions} updates ({retried[0]} requests re-sent on closed "
              f"connections); {inits} runtimes started, {exits} unloaded", flush=True)
        assert events.count(f"exit v{versions}") == 0
        envoy.assert_no_crash()
    finally:
        stop.set()
        envoy.stop()


# ------------------------------------------------------------------ drains --

def calls_in_flight(port, n, path="/in-flight"):
    """Starts `n` requests at once; returns the pool's futures of (status, body)
    or the exception each ended with."""
    pool = concurrent.futures.ThreadPoolExecutor(n)

    def one(_):
        try:
            status, _, body = harness.request(port, path, timeout=30)
            return status, body
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            return e

    return pool, [pool.submit(one, i) for i in range(n)]


def case_drain_listeners_and_sigterm_with_calls_in_flight(_):
    for how in ("drain_listeners", "sigterm"):
        port, admin = harness.free_ports(2)
        envoy = harness.Envoy([harness.listener("drain", port, harness.ours(SCRIPT))], admin, concurrency=2)
        try:
            pool, futures = calls_in_flight(port, 500)
            harness.wait_until(lambda: envoy.stat("http.drain.downstream_rq_active") >= 450, 10)
            if how == "drain_listeners":
                assert envoy.admin("/drain_listeners?graceful", method="POST")[0] == 200
            else:
                envoy.proc.send_signal(signal.SIGTERM)
            results = [f.result(timeout=30) for f in futures]
            pool.shutdown()
            answered = sum(1 for r in results if r == (200, b"true|slept"))
            broken = [r for r in results if not isinstance(r, Exception) and r != (200, b"true|slept")]
            assert not broken, broken[:5]
            if how == "drain_listeners":
                assert answered == 500, answered
                envoy.proc.send_signal(signal.SIGTERM)
            assert envoy.proc.wait(timeout=15) == 0, envoy.log_tail()
            log = envoy.log_text()
            assert "Caught" not in log and "freed filter" not in log, log[-3000:]
            print(f"  {how}: {answered} of 500 answered, the rest reset", flush=True)
        finally:
            envoy.stop()


CASES = [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
