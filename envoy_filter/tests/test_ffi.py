"""resty_ffi calls from Envoy (lua/resty_ffi.lua on our filter): payloads,
errors, queue limits, unload, concurrency, client aborts, flow control and
the fail_closed switch. One Envoy serves every case, with --concurrency
$ENVOY_CONCURRENCY (default 2; run_all.sh runs 1 and 2)."""

import concurrent.futures
import http.client
import json
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time

import harness

(PORT,                    # main listener
 PORT_SMALL_BUF,          # 64 KiB buffer limit (flow control)
 PORT_FAIL_OPEN,
 PORT_FAIL_CLOSED,
 PORT_LOAD_ERROR,
 PORT_LOAD_ERROR_CLOSED,
 PORT_RESPONSE_CALL,
 PORT_FILENAME,
 PORT_IDLE_TIMEOUT,
 PORT_TWO_FILTERS,
 PORT_METADATA_OWN,       # metadata_namespace set
 PORT_METADATA_DEFAULT,   # metadata_namespace unset: the filter_name
 PORT_RESPONSE_FAIL_CLOSED,
 PORT_TOP_LEVEL,
 ADMIN) = harness.free_ports(15)

WORK = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_test_ffi_"))
WORKERS = int(os.environ.get("ENVOY_CONCURRENCY", "2"))  # Envoy's --concurrency

SCRIPT = r"""
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))
local tr = assert(ngx.load_ffi("test_runtime", "threads=8"))
local single = assert(ngx.load_ffi("test_runtime", "threads=1", { max_queue = 1 }))

local function show(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[#parts + 1] = tostring((select(i, ...)))
  end
  return table.concat(parts, "|")
end

local function whole_body(handle)
  local body = handle:body()
  return body and body:getBytes(0, body:length()) or ""
end

local routes = {}

routes["/echo"] = function(handle)
  local ok, res = echo:echo(whole_body(handle), handle)
  return ok and 200 or 500, res
end

routes["/runtime"] = function(handle)
  return 200, show(tr:call(whole_body(handle)))
end

routes["/single"] = function(handle)
  return 200, show(single:call(whole_body(handle)))
end

routes["/nil-request"] = function()
  return 200, show(tr:call(nil))
end

routes["/bad-request"] = function()
  return 200, show(pcall(tr.call, tr, 42))
end

routes["/unload"] = function()
  local rt = assert(ngx.load_ffi("test_runtime", "threads=2"))
  local before = show(rt:call("before"))
  rt:__unload()
  local after = show(rt:call("after"))
  local fresh = show(assert(ngx.load_ffi("test_runtime", "threads=2")):call("fresh"))
  return 200, before .. "\n" .. after .. "\n" .. fresh
end

routes["/unknown-library"] = function()
  return 200, show(ngx.load_ffi("/nonexistent/libnope.so"))
end

routes["/init-rc"] = function()
  return 200, show(ngx.load_ffi("test_runtime", "init_rc=9"))
end

routes["/two-calls"] = function()
  local a = show(tr:call("sleep:20:first"))
  local b = show(echo:call("second"))
  return 200, a .. "," .. b
end

routes["/wait-then-body"] = function(handle)
  local waited = show(tr:call("sleep:200:waited"))
  return 200, waited .. "," .. #whole_body(handle)
end

-- A full collection (twice: objects with finalizers go in the second), so
-- that memory measured next holds only what is still referenced.
routes["/collect"] = function()
  collectgarbage()
  collectgarbage()
  return 200, "collected"
end

-- Dynamic metadata, which the stream's store keeps too (a distinct 1 KB value).
routes["/store"] = function(handle)
  handle:streamInfo():dynamicMetadata():set("test.store", "value", string.rep("s", 1024) .. math.random())
  return 200, "stored"
end

-- KB that this worker's Lua holds after a full collection.
routes["/lua-kb"] = function()
  collectgarbage()
  collectgarbage()
  return 200, tostring(collectgarbage("count"))
end

routes["/keep-handle"] = function(handle)
  kept_handle = handle
  return 200, "kept"
end

routes["/use-kept-handle"] = function()
  return 200, show(pcall(function() return kept_handle:headers():get(":path") end))
end

routes["/unknown-method"] = function(handle)
  return 200, show(handle.noSuchMethod == nil, pcall(function() return handle:noSuchMethod() end))
end

function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  if path == "/bad-yield" then
    coroutine.yield("not a resty_ffi wait")
  end
  if path == "/wait-then-continue" then
    assert(tr:call("sleep:200:x"))
    return
  end
  local route = routes[path]
  if route then
    local status, body = route(handle)
    handle:respond({ [":status"] = tostring(status) }, body)
  end
end
"""

RESPONSE_CALL_SCRIPT = r"""
require("resty_ffi")
local tr = assert(ngx.load_ffi("test_runtime", "threads=2"))
function envoy_on_request(handle)
  if handle:headers():get(":path") == "/local" then
    handle:respond({ [":status"] = "403" }, "denied\n")
  end
end

function envoy_on_response(handle)
  local ok, res = tr:call("sleep:30:from-runtime")
  handle:headers():add("x-runtime", ok and res or "failed")
  local body = handle:body()
  body:setBytes(body:getBytes(0, body:length()) .. res .. "\n")
end
"""

FIRST_FILTER_SCRIPT = r"""
require("resty_ffi")
local tr = assert(ngx.load_ffi("test_runtime", "threads=2"))
function envoy_on_request(handle)
  local ok, res = tr:call("sleep:20:from-first")
  handle:headers():add("x-first", res)
end
"""

SECOND_FILTER_SCRIPT = r"""
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))
function envoy_on_request(handle)
  local ok, res = echo:echo(handle:headers():get("x-first") .. "+second")
  handle:respond({ [":status"] = "200" }, res)
end
"""

ERROR_SCRIPT = """
function envoy_on_request(handle)
  error("boom")
end
"""

LOAD_ERROR_SCRIPT = """
error("the script fails while loading")
"""

# Passes the config check (its top level runs once when the config loads)
# and fails on the workers: their requests pass, or get a 500 (fail_closed).
WORKER_LOAD_ERROR_SCRIPT = """
if not package.loaded["resty_ffi.envoy"].config_check then
  error("the script fails on the worker")
end
"""

RESPONSE_ERROR_SCRIPT = """
function envoy_on_response(handle)
  error("boom on the response path")
end
"""

METADATA_SCRIPT = """
function envoy_on_request(handle)
  handle:respond({ [":status"] = "200" }, tostring(handle:metadata():get("who")))
end
"""

# A runtime called at the top level of a script (no stream to wait on).
TOP_LEVEL_SCRIPT = r"""
require("resty_ffi")
local rt = assert(ngx.load_ffi("rust_echo"))
local ok, err = pcall(rt.echo, rt, "x")
function envoy_on_request(handle)
  handle:respond({ [":status"] = "200" }, tostring(ok) .. "|" .. tostring(err) .. "|" .. select(2, rt:echo("in a stream")))
end
"""

ROUTE_METADATA = {"own.namespace": {"who": "own namespace"}, "resty_ffi": {"who": "filter name"}}


def setup():
    listeners = [
        harness.listener("main", PORT, harness.ours(SCRIPT), buffer_limit=4 << 20),
        harness.listener("small_buf", PORT_SMALL_BUF, harness.ours(SCRIPT), buffer_limit=64 << 10),
        harness.listener("fail_open", PORT_FAIL_OPEN, harness.ours(ERROR_SCRIPT)),
        harness.listener("fail_closed", PORT_FAIL_CLOSED, harness.ours(ERROR_SCRIPT, fail_closed=True)),
        harness.listener("load_error", PORT_LOAD_ERROR, harness.ours(WORKER_LOAD_ERROR_SCRIPT)),
        harness.listener("load_error_closed", PORT_LOAD_ERROR_CLOSED,
                         harness.ours(WORKER_LOAD_ERROR_SCRIPT, fail_closed=True)),
        harness.listener("response_call", PORT_RESPONSE_CALL, harness.ours(RESPONSE_CALL_SCRIPT)),
        harness.listener("idle_timeout", PORT_IDLE_TIMEOUT, harness.ours(SCRIPT),
                         hcm_options={"stream_idle_timeout": "0.2s"}),
        harness.listener("two_filters", PORT_TWO_FILTERS,
                         [harness.ours(FIRST_FILTER_SCRIPT), harness.ours(SECOND_FILTER_SCRIPT)]),
        harness.listener("filename", PORT_FILENAME, harness.ours_file(harness.ROOT / "envoy_filter" / "tests" / "echo_body.lua")),
        harness.listener("metadata_own", PORT_METADATA_OWN, harness.ours(METADATA_SCRIPT, metadata_namespace="own.namespace"),
                         route_metadata=ROUTE_METADATA),
        harness.listener("metadata_default", PORT_METADATA_DEFAULT, harness.ours(METADATA_SCRIPT),
                         route_metadata=ROUTE_METADATA),
        harness.listener("response_fail_closed", PORT_RESPONSE_FAIL_CLOSED,
                         harness.ours(RESPONSE_ERROR_SCRIPT, fail_closed=True)),
        harness.listener("top_level", PORT_TOP_LEVEL, harness.ours(TOP_LEVEL_SCRIPT)),
    ]
    return harness.Envoy(listeners, ADMIN, concurrency=WORKERS)


def teardown(envoy):
    envoy.stop()
    shutil.rmtree(WORK, ignore_errors=True)


def post(path, body=b"", port=PORT):
    status, _, data = harness.request(port, path, method="POST", body=body)
    return status, data


def payload(size, seed):
    data = bytearray(os.urandom(size))
    for i in range(0, size, 97):
        data[i] = 0  # NUL bytes all along
    return bytes(data) if size else b""


def case_payload_sizes(_):
    for size in [0, 1, 7, 1000, 65536, 1 << 20]:
        body = payload(size, size)
        status, data = post("/echo", body)
        assert status == 200, (size, status)
        assert data == body, f"size {size}: got {len(data)} bytes"


def case_rc_not_zero(_):
    assert post("/runtime", b"rc:7:bad thing") == (200, b"false|7|bad thing")
    assert post("/runtime", b"rc:3:") == (200, b"false|3|nil")


def case_nil_and_cstr_requests(_):
    assert post("/nil-request") == (200, b"true|")
    assert post("/runtime", b"cstr:text") == (200, b"true|text")


def case_bad_request_type_raises(_):
    status, data = post("/bad-request")
    assert status == 200 and data.startswith(b"false|") and b"request must be a string" in data, data


def case_queue_full(_):
    # Each worker has its own runtime (max_queue 1, one poll thread, held by a
    # gate): a worker holds at most 2 of the 8 calls (one polled, one queued),
    # so at least 4 find the queue full, at once; the others are answered when
    # the gate opens.
    gate = WORK / "queue_full_gate"
    full = (200, b"false|resty_ffi: task queue full")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, "/single", f"gate:{gate}:slow".encode()) for _ in range(8)]
        harness.wait_until(lambda: sum(f.done() for f in futures) >= 4, 20)
        assert all(f.result() == full for f in futures if f.done()), [f.result() for f in futures if f.done()]
        gate.touch()
        results = [f.result() for f in futures]
    answered = results.count((200, b"true|slow"))
    assert answered >= 1 and results.count(full) >= 4 and answered + results.count(full) == 8, results


def case_unload(_):
    assert post("/unload") == (200, b"true|before\nfalse|resty_ffi: runtime unloaded\ntrue|fresh")


def case_unknown_library(_):
    status, data = post("/unknown-library")
    assert status == 200 and data.startswith(b"nil|resty_ffi: "), data
    assert b"libnope.so" in data, data


def case_init_rc(_):
    assert post("/init-rc") == (200, b"nil|9")


def case_two_calls_in_one_request(_):
    assert post("/two-calls") == (200, b"true|first,true|second")


def case_200_concurrent_clients(_):
    def one(i):
        body = f"sleep:50:client-{i}".encode()
        return post("/runtime", body)

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    for i, (status, data) in enumerate(results):
        assert (status, data) == (200, f"true|client-{i}".encode()), (i, status, data)


def case_client_abort_while_waiting(envoy):
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", PORT))
        body = b"sleep:150:gone"
        sock.sendall(b"POST /runtime HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.02)
        sock.close()
    time.sleep(0.4)  # let the late answers arrive for streams that are gone
    assert envoy.alive(), envoy.log_tail()
    assert post("/echo", b"still up") == (200, b"still up")
    assert "panic" not in envoy.log_text()


def memory_allocated():
    """Bytes Envoy's allocator handed out plus what the workers' Lua VMs hold
    after a full collection (Lua allocates from LuaJIT's own allocator, which
    /memory does not count): the largest of 8 readings on new connections,
    which go to either worker, once per worker."""
    _, _, data = harness.request(ADMIN, "/memory")
    lua_kb = max(float(post("/lua-kb")[1]) for _ in range(8)) * WORKERS
    return int(json.loads(data)["allocated"]) + int(lua_kb * 1024)


def abort_calls(n, path, body):
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", PORT))
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body))
        if i % 3:
            time.sleep(0.002 * (i % 5))  # vary the race against the answer
        sock.close()


def case_aborts_race_answers_without_leaking(envoy):
    def aborts_then_traffic(n):
        abort_calls(n, b"/runtime", b"sleep:3:x")
        time.sleep(0.5)
        for _ in range(300):
            post("/echo", b"x" * 100)
        # Else the growth measured is garbage Lua has not collected yet (up to
        # 1.5 MB here, depending on where its collector's cycle stands).
        assert post("/collect", b"") == (200, b"collected")

    aborts_then_traffic(300)
    before = memory_allocated()
    # Envoy's allocated bytes move by a few hundred KB between readings even
    # after a full collection (one read 1.16 MB after 600 aborts, the next
    # rounds far less): a leak is growth that stays. After 1,200 and again
    # after 1,800 aborted calls it must have come back under 1 MB at least
    # once; a leak of 1 KB per aborted call would read >= 1.2 MB both times.
    grown = []
    for _ in range(3):
        aborts_then_traffic(600)
        grown.append(memory_allocated() - before)
    print(f"  allocated memory grew by {grown} bytes after 600, 1,200, 1,800 aborted calls")
    assert envoy.alive(), envoy.log_tail()
    assert post("/echo", b"after aborts") == (200, b"after aborts")
    assert min(grown[1:]) < 1 << 20, f"allocated memory grew by {grown} bytes after 600, 1,200, 1,800 aborted calls"


def case_stream_stores_are_forgotten_when_streams_end(_):
    # One connection: every request reaches the same worker (and Lua VM).
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)

    def get(path):
        conn.request("POST", path, body=b"")
        resp = conn.getresponse()
        return resp.status, resp.read()

    try:
        for _ in range(50):
            assert get("/store") == (200, b"stored")
        before = float(get("/lua-kb")[1])
        for _ in range(1000):
            assert get("/store") == (200, b"stored")
        grown = float(get("/lua-kb")[1]) - before
    finally:
        conn.close()
    print(f"  Lua memory grew by {grown:.0f} KB after 1,000 streams that stored 1 KB each")
    # Kept stores would hold >= 1,000 KB.
    assert grown < 200, f"Lua memory grew by {grown:.0f} KB after 1,000 streams that stored 1 KB each"


def case_client_abort_while_waiting_for_body(envoy):
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", PORT))
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
        time.sleep(0.01)
        sock.close()
    time.sleep(0.2)
    assert envoy.alive(), envoy.log_tail()
    assert post("/echo", b"ok") == (200, b"ok")


def case_handle_kept_after_its_stream_raises(_):
    # One connection, so both requests reach the same worker (and Lua VM).
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    try:
        results = []
        for path in ("/keep-handle", "/use-kept-handle"):
            conn.request("POST", path, body=b"")
            resp = conn.getresponse()
            results.append((resp.status, resp.read()))
    finally:
        conn.close()
    assert results[0] == (200, b"kept"), results
    assert results[1][0] == 200 and results[1][1].startswith(b"false|"), results
    assert b"object used outside of proper scope" in results[1][1], results


def case_call_in_envoy_on_response(_):
    status, headers, data = harness.request(PORT_RESPONSE_CALL)
    assert status == 200 and ("x-runtime", "from-runtime") in headers, headers
    assert data == harness.UPSTREAM_BODY.encode() + b"from-runtime\n", data


def case_call_in_envoy_on_response_to_a_local_reply(_):
    status, headers, data = harness.request(PORT_RESPONSE_CALL, "/local")
    assert status == 403 and ("x-runtime", "from-runtime") in headers, headers
    assert data == b"denied\nfrom-runtime\n", data


def case_two_of_our_filters_in_one_chain(_):
    # Two configs: two Lua VMs per worker, and two sinks and schedulers per stream.
    assert post("/", port=PORT_TWO_FILTERS) == (200, b"from-first+second")


def case_script_from_filename(_):
    assert post("/", b"file body", port=PORT_FILENAME) == (200, b"file body")


def case_body_keeps_arriving_while_waiting(_):
    # 2 MiB through a 64 KiB buffer limit while a call waits: watermarks, no 413.
    status, data = post("/wait-then-continue", b"x" * (2 << 20), port=PORT_SMALL_BUF)
    assert (status, data) == (200, harness.UPSTREAM_BODY.encode()), (status, data[:100])


def case_body_after_wait_beyond_buffer_limit_is_413(_):
    # body() after a call, with more body than the 64 KiB buffer limit: the
    # flow-controlled part already fills the buffer, so 413 (not a stall).
    sock = socket.create_connection(("127.0.0.1", PORT_SMALL_BUF), timeout=10)
    body = b"z" * (1 << 20)
    sock.sendall(b"POST /wait-then-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))

    def send_body():
        try:
            sock.sendall(body)
        except OSError:
            pass  # Envoy stops reading and closes after answering

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    start = time.time()
    status_line = sock.makefile("rb").readline()
    sock.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert time.time() - start < 5


def case_body_after_wait_is_whole(_):
    assert post("/wait-then-body", b"y" * 40000, port=PORT_SMALL_BUF) == (200, b"true|waited,40000")


def case_unknown_handle_method_is_absent(_):
    # As in the stock filter: scripts probe for methods, and calling a missing one
    # is Lua's own error.
    status, data = post("/unknown-method")
    assert status == 200, status
    assert data.startswith(b"true|false|") and b"attempt to call method 'noSuchMethod'" in data, data


def case_unexpected_yield_is_a_lua_error(_):
    # Fails open (logged), so the request reaches the route.
    assert post("/bad-yield") == (200, harness.UPSTREAM_BODY.encode())


def case_envoy_times_out_a_waiting_stream(envoy):
    # Envoy answers 504 itself while the script waits; the late answer and the
    # script's respond() must not touch the finished stream.
    status, data = post("/runtime", b"sleep:600:late", port=PORT_IDLE_TIMEOUT)
    assert (status, data) == (504, b"stream timeout"), (status, data)
    time.sleep(0.7)
    assert envoy.alive(), envoy.log_tail()
    assert post("/runtime", b"sleep:10:fine", port=PORT_IDLE_TIMEOUT) == (200, b"true|fine")


def case_lua_error_fails_open_by_default(_):
    assert post("/", port=PORT_FAIL_OPEN) == (200, harness.UPSTREAM_BODY.encode())


def case_lua_error_fails_closed_when_asked(_):
    status, _ = post("/", port=PORT_FAIL_CLOSED)
    assert status == 500


def case_script_that_does_not_compile_rejects_the_config(_):
    port, admin = harness.free_ports(2)
    try:
        envoy = harness.Envoy([harness.listener("bad", port, harness.ours("function envoy_on_request(handle"))],
                              admin)
    except RuntimeError as e:
        assert "envoy exited with" in str(e), e
        return
    envoy.stop()
    raise AssertionError("Envoy took a config whose script does not compile")


def case_fail_closed_on_the_response_path_resets_the_stream(_):
    # envoy_on_response fails with fail_closed: no byte of an answer reaches
    # the client; the connection is closed or reset.
    sock = socket.create_connection(("127.0.0.1", PORT_RESPONSE_FAIL_CLOSED), timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"", f"an answer instead of a reset: {data!r}"
    finally:
        sock.close()


def case_metadata_namespace(_):
    assert post("/", port=PORT_METADATA_OWN) == (200, b"own namespace")
    assert post("/", port=PORT_METADATA_DEFAULT) == (200, b"filter name")


def case_calling_a_runtime_at_a_scripts_top_level_raises(_):
    status, data = post("/", port=PORT_TOP_LEVEL)
    ok, err, later = data.split(b"|")
    assert (status, ok, later) == (200, b"false", b"in a stream"), data
    assert err.endswith(b"resty_ffi: runtimes can only be called from envoy_on_request or envoy_on_response"), data


def case_the_timer_thread_blocks_every_signal(envoy):
    # Calls wait with a deadline, so the core's timer thread runs; Envoy's
    # signals (SIGTERM, SIGINT, SIGHUP, SIGUSR1, ...) must stay with Envoy's threads.
    assert post("/echo", b"x") == (200, b"x")
    tasks = pathlib.Path(f"/proc/{envoy.proc.pid}/task")
    timers = [t for t in tasks.iterdir() if (t / "comm").read_text().strip() == "resty_ffi_timer"]
    assert len(timers) == 1, [(t / "comm").read_text() for t in tasks.iterdir()]
    status = (timers[0] / "status").read_text()
    blocked = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
    # All but SIGKILL and SIGSTOP, which no thread can block, and glibc's own 32 and 33.
    unblocked = [sig for sig in range(1, 65) if sig not in (9, 19, 32, 33) and not blocked >> (sig - 1) & 1]
    assert not unblocked, f"signals not blocked: {unblocked}"


def case_load_error_on_a_worker(envoy):
    assert post("/", port=PORT_LOAD_ERROR) == (200, harness.UPSTREAM_BODY.encode())
    status, _ = post("/", port=PORT_LOAD_ERROR_CLOSED)
    assert status == 500
    assert "the script fails on the worker" in envoy.log_text()


def case_a_script_whose_top_level_fails_rejects_the_config(_):
    # As the stock filter: the config is refused, with the script's error.
    _, admin = harness.free_ports(2)
    listener = harness.listener("refused", harness.free_ports(1)[0], harness.ours(LOAD_ERROR_SCRIPT))
    try:
        envoy = harness.Envoy([listener], admin)
    except RuntimeError as e:
        assert 'script load error: [string "..."]:2: the script fails while loading' in str(e), e
    else:
        envoy.stop()
        raise AssertionError("Envoy accepted a config whose script fails")


CASES = [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
