"""Differential tests: each Lua script (handle API only, no ffi) runs under the
stock envoy.filters.http.lua filter and under ours, on two listeners of the
same Envoy; every request must get identical status, headers and body."""

import http.client

import harness


# Route metadata both filters can read through handle:metadata().
ROUTE_METADATA = {"envoy.filters.http.lua": {"greeting": "hi"}, "resty_ffi": {"greeting": "hi"}}

HEADERS_SCRIPT = r"""
function envoy_on_request(handle)
  local h = handle:headers()
  h:add("x-added", "one")
  h:add("x-added", "two")
  h:replace("x-replaced", "new")
  h:replace("x-fresh", "created")
  h:remove("x-removed")
  local seen = {}
  for k, v in pairs(h) do
    if k:sub(1, 2) == "x-" and k ~= "x-request-id" and k:sub(1, 11) ~= "x-forwarded" then
      seen[#seen + 1] = k .. "=" .. v
    end
  end
  local out = {
    "get=" .. tostring((h:get("x-multi"))),
    "n=" .. h:getNumValues("x-multi"),
    "n_missing=" .. h:getNumValues("x-missing"),
    "at0=" .. tostring((h:getAtIndex("x-multi", 0))),
    "at1=" .. tostring((h:getAtIndex("x-multi", 1))),
    "at5=" .. tostring((h:getAtIndex("x-multi", 5))),
    "missing=" .. tostring((h:get("x-missing"))),
    "method=" .. h:get(":method"),
    "path=" .. h:get(":path"),
    table.concat(seen, ";"),
  }
  handle:respond({ [":status"] = "201", ["content-type"] = "text/x-test", ["x-out"] = "yes" },
                 table.concat(out, "\n"))
end
"""

REQUEST_BODY_SCRIPT = r"""
function envoy_on_request(handle)
  local body = handle:body()
  local out = "nobody"
  if body then
    local n = body:length()
    out = n .. ":" .. body:getBytes(0, n) .. ":" .. (n >= 4 and body:getBytes(1, 3) or "")
  end
  handle:respond({ [":status"] = "200" }, out)
end
"""

RESPONSE_SCRIPT = r"""
function envoy_on_response(handle)
  local h = handle:headers()
  h:add("x-resp", "added")
  h:replace("content-type", "text/replaced")
  h:add("x-status", h:get(":status"))
  local body = handle:body()
  body:setBytes("[" .. body:getBytes(0, body:length()):upper() .. "]")
end
"""

STREAM_INFO_SCRIPT = r"""
function envoy_on_request(handle)
  local si = handle:streamInfo()
  local dm = si:dynamicMetadata()
  dm:set("test.ns", "s", "str")
  dm:set("test.ns", "n", 42)
  dm:set("test.ns", "b", true)
  local pairs_seen = {}
  for k, v in pairs(dm:get("test.ns")) do
    pairs_seen[#pairs_seen + 1] = k .. "=" .. tostring(v)
  end
  table.sort(pairs_seen)
  local md = handle:metadata()
  local out = {
    "protocol=" .. si:protocol(),
    "remote=" .. tostring(si:downstreamRemoteAddress():match("^127%.0%.0%.1:%d+$") ~= nil),
    "local=" .. tostring(si:downstreamLocalAddress():match("^127%.0%.0%.1:%d+$") ~= nil),
    "direct=" .. tostring(si:downstreamDirectRemoteAddress():match("^127%.0%.0%.1:%d+$") ~= nil),
    "meta=" .. table.concat(pairs_seen, ","),
    "missing=" .. tostring((dm:get("no.such.ns"))),
    "route=" .. tostring((md:get("greeting"))),
    "route_missing=" .. tostring((md:get("nope"))),
  }
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""

RESPOND_SCRIPT = r"""
function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  if path == "/deny" then
    handle:respond({ [":status"] = "403", ["x-reason"] = "denied" }, "nope")
  elseif path == "/empty" then
    handle:respond({ [":status"] = "204" })
  end
  handle:headers():add("x-req-seen", "1")
end

function envoy_on_response(handle)
  local h = handle:headers()
  h:add("x-on-response", "ran")
  h:add("x-seen-status", h:get(":status"))
  h:add("x-seen-type", tostring((h:get("content-type"))))
  h:add("x-seen-reason", tostring((h:get("x-reason"))))
  local body = handle:body()
  if body then
    body:setBytes(body:getBytes(0, body:length()) .. "!")
  end
end
"""

ERROR_SCRIPT = r"""
function envoy_on_request(handle)
  handle:headers():add("x-before", "1")
  error("boom")
end

function envoy_on_response(handle)
  handle:headers():add("x-resp", "1")
end
"""

LOG_SCRIPT = r"""
function envoy_on_request(handle)
  handle:logTrace("trace")
  handle:logDebug("debug")
  handle:logInfo("info")
  handle:logWarn("warn")
  handle:logErr("err")
  handle:logCritical("critical")
  local ts = handle:timestamp()
  handle:respond({ [":status"] = "200" }, type(ts) .. ":" .. tostring(ts > 1600000000000))
end
"""

MULTI = [("x-multi", "a"), ("x-multi", "b"), ("x-removed", "gone"), ("x-replaced", "old")]

SCRIPTS = [
    ("headers", HEADERS_SCRIPT, [("GET", "/h?q=1", MULTI, None)]),
    ("request_body", REQUEST_BODY_SCRIPT, [("POST", "/", [], b"hello world"), ("GET", "/", [], None),
                                           ("POST", "/", [], b"")]),
    ("response", RESPONSE_SCRIPT, [("GET", "/", [], None)]),
    ("stream_info", STREAM_INFO_SCRIPT, [("GET", "/", [], None)]),
    ("respond", RESPOND_SCRIPT, [("GET", "/deny", [], None), ("GET", "/empty", [], None),
                                 ("GET", "/allow", [], None)]),
    ("lua_error", ERROR_SCRIPT, [("GET", "/", [], None)]),
    ("log", LOG_SCRIPT, [("GET", "/", [], None)]),
]

ADMIN, *_LISTENER_PORTS = harness.free_ports(1 + 2 * len(SCRIPTS))
# script name -> (port of the stock Lua filter, port of ours)
PORTS = {name: tuple(_LISTENER_PORTS[2 * i:2 * i + 2]) for i, (name, _, _) in enumerate(SCRIPTS)}

IGNORED_HEADERS = {"date", "x-envoy-upstream-service-time", "x-request-id"}


def setup():
    listeners = []
    for name, script, _ in SCRIPTS:
        stock_port, our_port = PORTS[name]
        listeners.append(harness.listener(f"stock_{name}", stock_port, harness.stock_lua(script),
                                          route_metadata=ROUTE_METADATA))
        listeners.append(harness.listener(f"ours_{name}", our_port, harness.ours(script),
                                          route_metadata=ROUTE_METADATA))
    return harness.Envoy(listeners, ADMIN, concurrency=2)


def teardown(envoy):
    envoy.stop()


def fetch(port, method, path, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path)
        for key, value in headers:
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        # Compared by name: headers our filter replaces move to the end of
        # Envoy's map (the ABI's set_header removes, then adds).
        got_headers = sorted(((k.lower(), v) for k, v in resp.getheaders() if k.lower() not in IGNORED_HEADERS),
                             key=lambda kv: kv[0])
        return resp.status, got_headers, resp.read()
    finally:
        conn.close()


def make_case(name, requests):
    def case(_):
        stock_port, our_port = PORTS[name]
        for method, path, headers, body in requests:
            stock = fetch(stock_port, method, path, headers, body)
            ours = fetch(our_port, method, path, headers, body)
            assert stock == ours, f"{method} {path}\n stock: {stock}\n ours:  {ours}"
    return case


CASES = [(f"case_same_as_stock_lua_{name}", make_case(name, requests)) for name, _, requests in SCRIPTS]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
