"""httpCall() and resty_ffi calls in one script, on one stream, in both
directions: each waits without blocking the worker, and headers obtained
before a runtime call stay usable after it (a stock-API wait ends them)."""

import concurrent.futures
import http.server
import threading
import time

import harness

SCRIPT = r"""
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))
local REQUEST = { [":method"] = "GET", [":authority"] = "upstream" }

local function call_upstream(handle, path)
  REQUEST[":path"] = path
  local headers, body = handle:httpCall("upstream", REQUEST, nil, 5000)
  return headers[":status"] .. " " .. body
end

function envoy_on_request(handle)
  local h = handle:headers()
  local id = h:get("x-id")
  local ok, before = echo:echo("before-" .. id)
  h:add("x-ffi-before", before)
  local upstream = call_upstream(handle, "/slow/request-" .. id)
  -- httpCall() ended `h` (as in the stock filter): take the headers again.
  local ok2, after = echo:echo("after-" .. id)
  handle:headers():add("x-mixed", before .. "|" .. upstream .. "|" .. after)
  local stale_ok = pcall(h.get, h, "x-id")
  handle:headers():add("x-stale-headers", tostring(stale_ok))
end

function envoy_on_response(handle)
  local id = handle:requestHeaders():get("x-id")
  local upstream = call_upstream(handle, "/response-" .. id)
  local ok, res = echo:echo("response-" .. id)
  handle:headers():add("x-response-mixed", upstream .. "|" .. res)
end
"""


class Upstream(http.server.BaseHTTPRequestHandler):
    """Answers the script's calls with their path (after 0.5 s for /slow*),
    and the request that went on with what the script added to it."""

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        if self.path == "/through":
            body = f"{self.headers.get('x-mixed')}\n{self.headers.get('x-stale-headers')}".encode()
        else:
            body = self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class UpstreamServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 100 connections arrive at once


def setup():
    upstream = UpstreamServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port, admin = harness.free_ports(2)
    listener = harness.listener("mixed", port, harness.ours(SCRIPT), route=harness.to_cluster("upstream"))
    envoy = harness.Envoy([listener], admin, clusters=[harness.cluster("upstream", upstream.server_address[1])])
    return envoy, port, upstream


def teardown(state):
    envoy, _, upstream = state
    envoy.stop()
    upstream.shutdown()


def one(port, i):
    status, headers, body = harness.request(port, "/through", headers={"x-id": str(i)})
    assert status == 200, (status, body)
    return body.decode(), dict(headers)


def case_both_directions_mix_http_calls_and_runtime_calls(state):
    envoy, port, _ = state
    body, headers = one(port, 7)
    # Request side: ffi, httpCall (0.5 s), ffi; headers taken before the
    # httpCall are out of scope after it.
    assert body == "before-7|200 /slow/request-7|after-7\nfalse", body
    # Response side: httpCall, then ffi.
    assert headers["x-response-mixed"] == "200 /response-7|response-7", headers
    envoy.assert_no_crash()


def case_a_hundred_streams_at_once_each_get_their_own_answers(state):
    # The waits do not block the worker: 100 streams, each waiting 0.5 s for
    # its upstream call, all finish within a few such waits.
    envoy, port, _ = state
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda i: one(port, 1000 + i), range(100)))
    took = time.monotonic() - started
    for i, (body, headers) in enumerate(results):
        n = 1000 + i
        assert body == f"before-{n}|200 /slow/request-{n}|after-{n}\nfalse", body
        assert headers["x-response-mixed"] == f"200 /response-{n}|response-{n}", headers
    assert 0.5 <= took < 10, took
    envoy.assert_no_crash()


if __name__ == "__main__":
    harness.run([(name, f) for name, f in sorted(globals().items()) if name.startswith("case_")], setup, teardown)
