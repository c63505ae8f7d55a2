"""Cases: handle:httpCall() (the recording upstream answers as the x-up-*
headers of each call say; see wire.py)."""

from diff.model import TRY, Case, get, post

SHOW_HEADERS = r"""
local function show_headers(h)
  if type(h) ~= "table" then return tostring(h) end
  local keys = {}
  for k in pairs(h) do
    if k ~= "date" and k ~= "x-envoy-upstream-service-time" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = h[k]
    if type(v) == "table" then v = "[" .. table.concat(v, ",") .. "]" end
    parts[#parts + 1] = k .. "=" .. tostring(v)
  end
  return table.concat(parts, ";")
end
"""

CASES = [
    # The examples of Envoy's Lua filter docs.
    Case("doc_httpcall_add_headers", r"""
function envoy_on_request(request_handle)
  -- Make an HTTP call to an upstream host with the following headers, body, and timeout.
  local headers, body = request_handle:httpCall(
  "lua_cluster",
  {
    [":method"] = "POST",
    [":path"] = "/",
    [":authority"] = "lua_cluster",
    ["x-up-headers"] = "foo=from-call",
  },
  "hello world",
  5000)

  request_handle:headers():add("upstream_foo", headers["foo"])
  request_handle:headers():add("upstream_body_size", #body)
end
"""),

    Case("doc_httpcall_respond", r"""
function envoy_on_request(request_handle)
  local headers, body = request_handle:httpCall(
  "lua_cluster",
  {
    [":method"] = "POST",
    [":path"] = "/",
    [":authority"] = "lua_cluster",
    ["set-cookie"] = { "lang=lua; Path=/", "type=binding; Path=/" },
    ["x-up-headers"] = "foo=bar",
  },
  "hello world",
  5000)

  request_handle:respond(
    {[":status"] = "403",
     ["upstream_foo"] = headers["foo"]},
    "nope")
end
"""),

    Case("httpcall_sync_result", SHOW_HEADERS + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local headers, body = handle:httpCall("lua_cluster", {
    [":method"] = h:get("x-call-method") or "GET",
    [":path"] = "/call" .. h:get(":path"),
    [":authority"] = "calls",
    ["x-up-status"] = h:get("x-call-status") or "200",
    ["x-up-body"] = h:get("x-call-body"),
    ["x-up-no-body"] = h:get("x-call-no-body"),
    ["x-up-trailers"] = h:get("x-call-trailers"),
    ["x-forwarded"] = h:get("x-forward-me"),
  }, h:get("x-call-request-body"), 3000)
  handle:respond({ [":status"] = "200" }, show_headers(headers) .. "\n" .. tostring(body))
end
""", [get("/plain"), get("/status", [("x-call-status", "503"), ("x-call-body", "down")]),
      get("/nobody", [("x-call-no-body", "1")]), get("/empty", [("x-call-body", "")]),
      get("/post", [("x-call-method", "POST"), ("x-call-request-body", "payload")]),
      get("/trailers", [("x-call-trailers", "t=1")]), get("/fwd", [("x-forward-me", "yes")])]),

    Case("httpcall_then_continue", r"""
function envoy_on_request(handle)
  local headers, body = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/auth", [":authority"] = "auth", ["x-up-headers"] = "x-user=bob" }, nil, 2000)
  handle:headers():add("x-user", headers["x-user"])
  handle:headers():add("x-auth-status", headers[":status"])
end
""", [get("/"), post("/", b"request body")]),

    Case("httpcall_then_body", r"""
function envoy_on_request(handle)
  local headers = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/first", [":authority"] = "a", ["x-up-delay-ms"] = "100" }, "", 2000)
  local body = handle:body()
  handle:headers():add("x-call", headers[":status"])
  handle:headers():add("x-body", tostring(body and body:getBytes(0, body:length())))
end
""", [post("/", [b"sent ", b"while ", b"calling"]), get("/")]),

    Case("httpcall_in_response", r"""
function envoy_on_response(handle)
  local b = handle:body()
  local headers, body = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/from-response", [":authority"] = "r" }, "", 2000)
  handle:headers():add("x-call-body", (body:gsub("\n", "")))
  b:setBytes(b:getBytes(0, b:length()) .. "+" .. headers[":status"])
end
""", [get("/")]),

    Case("httpcall_async", r"""
function envoy_on_request(handle)
  local a, b = handle:httpCall("lua_cluster",
    { [":method"] = "POST", [":path"] = "/fire-and-forget", [":authority"] = "async" }, "async body", 1000, true)
  handle:headers():add("x-async-returned", type(a) .. " " .. type(b))
end
""", settle=0.1),

    Case("httpcall_options_table", SHOW_HEADERS + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local which = h:get("x-options")
  local options = ({
    timeout = { timeout_ms = 2000 },
    sync = { asynchronous = false, trace_sampled = false, timeout_ms = 2000 },
    async = { asynchronous = true },
    noxff = { send_xff = false, timeout_ms = 2000 },
    empty = {},
  })[which]
  local headers, body = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/options/" .. which, [":authority"] = "opt" }, "", options)
  handle:headers():add("x-result", show_headers(headers) .. " body=" .. tostring(body):gsub("\n", "\\n"))
end
""", [get("/", [("x-options", o), ("x-forwarded-for", "10.0.0.1")]) for o in ("timeout", "sync", "async", "noxff", "empty")],
         settle=0.1,
         differs="send_xff = false: Envoy 1.40's ABI always adds x-forwarded-for to callouts"),

    Case("httpcall_timeout", SHOW_HEADERS + r"""
function envoy_on_request(handle)
  local headers, body = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/slow", [":authority"] = "slow", ["x-up-delay-ms"] = "600" }, "", 100)
  handle:respond({ [":status"] = "200" }, show_headers(headers) .. "\n" .. tostring(body))
end
""", settle=0.1),

    Case("httpcall_no_healthy_upstream", SHOW_HEADERS + r"""
function envoy_on_request(handle)
  local cluster = handle:headers():get("x-cluster")
  local headers, body = handle:httpCall(cluster,
    { [":method"] = "GET", [":path"] = "/", [":authority"] = "x" }, "", 1000)
  handle:respond({ [":status"] = "200" }, show_headers(headers) .. "\n" .. tostring(body))
end
""", [get("/", [("x-cluster", "black_hole")]), get("/", [("x-cluster", "refused")])]),

    Case("httpcall_errors", TRY + r"""
local GOOD = { [":method"] = "GET", [":path"] = "/", [":authority"] = "x" }
function envoy_on_request(handle)
  local out = {}
  try(out, "unknown cluster", handle.httpCall, handle, "no_such_cluster", GOOD, "", 100)
  try(out, "no path", handle.httpCall, handle, "lua_cluster", { [":method"] = "GET", [":authority"] = "x" }, "", 100)
  try(out, "no method", handle.httpCall, handle, "lua_cluster", { [":path"] = "/", [":authority"] = "x" }, "", 100)
  try(out, "no authority", handle.httpCall, handle, "lua_cluster", { [":method"] = "GET", [":path"] = "/" }, "", 100)
  try(out, "headers not a table", handle.httpCall, handle, "lua_cluster", "x", "", 100)
  try(out, "cluster nil", handle.httpCall, handle, nil, GOOD, "", 100)
  try(out, "negative timeout", handle.httpCall, handle, "lua_cluster", GOOD, "", -1)
  try(out, "timeout string", handle.httpCall, handle, "lua_cluster", GOOD, "", "soon")
  try(out, "body table", handle.httpCall, handle, "lua_cluster", GOOD, {}, 100)
  try(out, "options bad type", handle.httpCall, handle, "lua_cluster", GOOD, "", { timeout_ms = "x" })
  try(out, "options unknown key", handle.httpCall, handle, "lua_cluster", GOOD, "", { nope = true, asynchronous = true })
  try(out, "header value bool", handle.httpCall, handle, "lua_cluster",
      { [":method"] = "GET", [":path"] = "/", [":authority"] = "x", ["x-b"] = true }, "", 100)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", settle=0.1),

    Case("httpcall_duplicate_headers", SHOW_HEADERS + r"""
function envoy_on_request(handle)
  local dup = handle:headers():get("x-dup") == "1"
  local headers = handle:httpCall("lua_cluster",
    { [":method"] = "GET", [":path"] = "/dup", [":authority"] = "d", ["x-up-headers"] = "key=value_0;key=value_1;key=value_2;foo=bar" },
    "", { timeout_ms = 2000, return_duplicate_headers = dup })
  handle:respond({ [":status"] = "200" }, show_headers(headers))
end
""", [get("/", [("x-dup", "1")]), get("/", [("x-dup", "0")])]),

    Case("httpcall_multiple_sequential", r"""
function envoy_on_request(handle)
  local statuses = {}
  for i = 1, 3 do
    local h = handle:httpCall("lua_cluster",
      { [":method"] = "GET", [":path"] = "/seq/" .. i, [":authority"] = "s", ["x-up-status"] = tostring(200 + i) }, "", 2000)
    statuses[#statuses + 1] = h[":status"]
  end
  handle:respond({ [":status"] = "200" }, table.concat(statuses, ","))
end
"""),

    Case("httpcall_header_value_list", r"""
function envoy_on_request(handle)
  handle:httpCall("lua_cluster", {
    [":method"] = "PUT", [":path"] = "/list", [":authority"] = "l",
    ["x-many"] = { "one", "two", "three" }, ["x-single"] = "s",
  }, "body", 2000)
end
"""),
]
