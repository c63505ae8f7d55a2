"""Cases: metadata, dynamic metadata, stream info, connection, stats,
base64, timestamps, logs, signatures and the Lua environment."""

from diff.model import TRY, Case, get, post, route, lua_filter

# Prints any Lua value, tables with sorted keys, so that two runs compare.
SHOW = r"""
local function show(v)
  if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. show(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
local function show_pairs(obj)
  local t = {}
  for k, v in pairs(obj) do t[k] = v end
  return show(t)
end
"""

ROUTE_METADATA = {
    "envoy.filters.http.lua": {
        "foo": "bar", "n": 42, "f": 1.5, "yes": True, "nothing": None,
        "list": ["a", 1, False, {"x": "y"}], "nested": {"a": {"b": {"c": "deep"}}, "empty": {}},
    },
    "other.ns": {"hidden": "not for lua"},
}

METADATA_SCRIPT = TRY + SHOW + r"""
function envoy_on_request(handle)
  local md = handle:metadata()
  local out = {}
  for _, key in ipairs({ "foo", "n", "f", "yes", "nothing", "list", "nested", "missing" }) do
    try(out, key, function() return show(md:get(key)) end)
  end
  try(out, "pairs", show_pairs, md)
  try(out, "get number key", md.get, md, 1)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end

function envoy_on_response(handle)
  handle:headers():add("x-response-foo", tostring(handle:metadata():get("foo")))
end
"""

STREAM_INFO_SCRIPT = TRY + SHOW + r"""
local function port_free(s)
  if type(s) ~= "string" then return tostring(s) end
  return (s:gsub(":%d+$", ":PORT"))
end
function envoy_on_request(handle)
  local si = handle:streamInfo()
  local out = {}
  try(out, "protocol", si.protocol, si)
  try(out, "routeName", si.routeName, si)
  try(out, "virtualClusterName", si.virtualClusterName, si)
  try(out, "requestedServerName", si.requestedServerName, si)
  for _, m in ipairs({ "downstreamLocalAddress", "downstreamDirectLocalAddress", "downstreamRemoteAddress",
                       "downstreamDirectRemoteAddress" }) do
    try(out, m, function() return port_free(si[m](si)) end)
  end
  try(out, "downstreamSslConnection", si.downstreamSslConnection, si)
  try(out, "dynamicTypedMetadata", si.dynamicTypedMetadata, si, "envoy.filters.http.set_metadata")
  try(out, "connection ssl", function() return handle:connection():ssl() end)
  try(out, "connectionStreamInfo metadata", function()
    return show_pairs(handle:connectionStreamInfo():dynamicMetadata())
  end)
  try(out, "connection dynamicTypedMetadata", function()
    return handle:connectionStreamInfo():dynamicTypedMetadata("envoy.filters.listener.proxy_protocol")
  end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""

LOG_SCRIPT = TRY + r"""
function envoy_on_request(handle)
  for _, level in ipairs({ "Trace", "Debug", "Info", "Warn", "Err", "Critical" }) do
    handle["log" .. level](handle, "handle " .. level)
  end
  local si = handle:streamInfo()
  handle:headers():logInfo("from headers")
  si:logWarn("from stream info")
  si:dynamicMetadata():logDebug("from dynamic metadata")
  handle:metadata():logErr("from metadata")
  handle:connection():logInfo("from connection")
  local out = {}
  try(out, "number", handle.logInfo, handle, 42)
  try(out, "nil", handle.logInfo, handle, nil)
  try(out, "table", handle.logInfo, handle, {})
  try(out, "none", handle.logInfo, handle)
  try(out, "multi-line", handle.logInfo, handle, "line1\nline2")
  try(out, "binary", handle.logInfo, handle, "a\0b")
  handle:headers():add("x-log-results", table.concat(out, ";"))
end

function envoy_on_response(handle)
  handle:logInfo("response status " .. handle:headers():get(":status"))
  local b = handle:body()
  if b then b:logInfo("from body " .. b:length()) end
end
"""

CASES = [
    Case("metadata_route", METADATA_SCRIPT, routes=[route(name="md", metadata={"filter_metadata": ROUTE_METADATA})],
         differs="a struct inside a metadata list cannot be read through Envoy 1.40's ABI"),

    Case("metadata_missing", TRY + SHOW + r"""
function envoy_on_request(handle)
  local md = handle:metadata()
  local out = {}
  try(out, "get", md.get, md, "foo")
  try(out, "pairs", show_pairs, md)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", routes=[route(metadata={"filter_metadata": {"other.ns": {"foo": "x"}}})]),

    # The stock namespace rule: the filter's name first, then envoy.filters.http.lua.
    Case("metadata_namespace_filter_name", METADATA_SCRIPT, filter_name="my.lua",
         routes=[route(metadata={"filter_metadata": {"my.lua": {"foo": "by filter name"},
                                                     "envoy.filters.http.lua": {"foo": "canonical"}}})]),
    Case("metadata_namespace_fallback", METADATA_SCRIPT, filter_name="my.lua",
         routes=[route(metadata={"filter_metadata": ROUTE_METADATA})],
         differs="a struct inside a metadata list cannot be read through Envoy 1.40's ABI"),

    Case("route_and_virtual_host_metadata", TRY + SHOW + r"""
function envoy_on_request(handle)
  local out = {}
  try(out, "route", function() return show_pairs(handle:route():metadata()) end)
  try(out, "route get", function() return show(handle:route():metadata():get("from")) end)
  try(out, "vhost", function() return show_pairs(handle:virtualHost():metadata()) end)
  try(out, "vhost get", function() return show(handle:virtualHost():metadata():get("level")) end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", routes=[route(metadata={"filter_metadata": {"envoy.filters.http.lua": {"from": "route", "list": [1, 2]}}})],
         vhost={"metadata": {"filter_metadata": {"envoy.filters.http.lua": {"level": "vhost",
                                                                             "deep": {"k": ["v"]}}}}},
         differs="virtualHost():metadata() and nested structs: not in Envoy 1.40's ABI"),

    Case("dynamic_metadata_scalars", TRY + SHOW + r"""
function envoy_on_request(handle)
  local dm = handle:streamInfo():dynamicMetadata()
  dm:set("test.ns", "s", "str")
  dm:set("test.ns", "n", 42)
  dm:set("test.ns", "f", -0.25)
  dm:set("test.ns", "b", true)
  dm:set("test.ns", "b2", false)
  dm:set("other.ns", "k", "v")
  local out = {}
  try(out, "get", function() return show(dm:get("test.ns")) end)
  try(out, "missing ns", dm.get, dm, "no.such.ns")
  try(out, "pairs", show_pairs, dm)
  try(out, "overwrite", function() dm:set("test.ns", "s", "again") return dm:get("test.ns").s end)
  try(out, "set nil", function() dm:set("test.ns", "n", nil) return show(dm:get("test.ns").n) end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    Case("dynamic_metadata_tables", TRY + SHOW + r"""
function envoy_on_request(handle)
  local dm = handle:streamInfo():dynamicMetadata()
  local out = {}
  try(out, "nested", function()
    dm:set("t.ns", "obj", { a = { 1, 2, { b = true } }, n = 1.5, s = "x", empty = {} })
    return show(dm:get("t.ns").obj)
  end)
  try(out, "list", function() dm:set("t.ns", "list", { "x", "y", 3 }) return show(dm:get("t.ns").list) end)
  try(out, "number keys", function() dm:set("t.ns", "nk", { [1] = "a", [3] = "c" }) return show(dm:get("t.ns").nk) end)
  try(out, "mixed keys", function() dm:set("t.ns", "mk", { "a", k = "v" }) return show(dm:get("t.ns").mk) end)
  try(out, "function", dm.set, dm, "t.ns", "fn", function() end)
  try(out, "table key", dm.set, dm, "t.ns", "tk", { [{}] = 1 })
  try(out, "number ns", function() dm:set(7, "k", "v") return show(dm:get("7")) end)
  try(out, "no key", dm.set, dm, "t.ns")
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    # What the route's header formatter (and so any later filter) sees.
    Case("dynamic_metadata_reaches_the_route", r"""
function envoy_on_request(handle)
  local dm = handle:streamInfo():dynamicMetadata()
  dm:set("lua.out", "user", handle:headers():get("x-user") or "anonymous")
  dm:set("lua.out", "info", { id = 7, tags = { "a", "b" } })
end
""", [get("/", [("x-user", "alice")]), get("/")],
         routes=[route(request_headers_to_add=[
             {"header": {"key": "x-dm-user", "value": "%DYNAMIC_METADATA(lua.out:user)%"}},
             {"header": {"key": "x-dm-info", "value": "%DYNAMIC_METADATA(lua.out:info)%"}}])]),

    # The doc example: set a table in the request, read it in the response.
    Case("doc_dynamic_metadata_request_info", r"""
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  request_handle:streamInfo():dynamicMetadata():set("envoy.filters.http.lua", "request.info", {
    auth = headers:get("authorization"),
    token = headers:get("x-request-token"),
  })
end

function envoy_on_response(response_handle)
  local meta = response_handle:streamInfo():dynamicMetadata():get("envoy.filters.http.lua")["request.info"]
  response_handle:logInfo("Auth: " .. meta.auth .. ", token: " .. meta.token)
end
""", [get("/", [("authorization", "Bearer x"), ("x-request-token", "t0k3n")])]),

    Case("stream_info", STREAM_INFO_SCRIPT, routes=[route(name="the-route")],
         vhost={"virtual_clusters": [{"name": "vc-get", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}]},
         differs="dynamicTypedMetadata(): not in Envoy 1.40's ABI"),

    Case("stream_info_in_response", TRY + r"""
function envoy_on_response(handle)
  local si = handle:streamInfo()
  local out = {}
  try(out, "protocol", si.protocol, si)
  try(out, "route", si.routeName, si)
  handle:headers():add("x-stream-info", table.concat(out, ";"))
end
""", routes=[route(name="resp-route")]),

    Case("drain_connection_upon_completion", r"""
function envoy_on_request(handle)
  if handle:headers():get(":path") == "/drain" then
    handle:streamInfo():drainConnectionUponCompletion()
  end
end
""", [get("/drain"), get("/keep")],
         differs="drainConnectionUponCompletion: not in Envoy 1.40's ABI"),

    Case("filter_state", TRY + r"""
function envoy_on_request(handle)
  local fs = handle:streamInfo():filterState()
  local out = {}
  try(out, "missing", fs.get, fs, "no.such.object")
  try(out, "missing field", fs.get, fs, "no.such.object", "field")
  try(out, "set two args", fs.set, fs, "lua.key", "value")
  try(out, "set unknown factory", fs.set, fs, "lua.key", "no.such.factory", "value")
  try(out, "set string", fs.set, fs, "lua.key", "envoy.string", "value")
  try(out, "get set", fs.get, fs, "lua.key")
  try(out, "get field of a string", fs.get, fs, "lua.key", "field")
  try(out, "set again", fs.set, fs, "lua.key", "envoy.string", "other")
  try(out, "get number", fs.get, fs, 5)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""",
         differs="filterState():set() reaches only envoy.string and the object's own factory"),

    Case("base64", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  try(out, "escape", handle.base64Escape, handle, "\0\1\2hello\255")
  try(out, "escape empty", handle.base64Escape, handle, "")
  try(out, "escape number", handle.base64Escape, handle, 123)
  try(out, "escape nil", handle.base64Escape, handle, nil)
  try(out, "decode", handle.base64Decode, handle, "aGVsbG8=")
  try(out, "decode no padding", handle.base64Decode, handle, "aGVsbG8")
  try(out, "decode url alphabet", handle.base64Decode, handle, "-_-_")
  try(out, "decode invalid", handle.base64Decode, handle, "!!!")
  try(out, "decode empty", handle.base64Decode, handle, "")
  try(out, "round trip", function() return handle:base64Decode(handle:base64Escape("\0x\0")) == "\0x\0" end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    Case("timestamps", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  local ms = handle:timestamp()
  local now = os.time() * 1000
  out[#out + 1] = "timestamp " .. type(ms) .. " " .. tostring(math.abs(ms - now) < 5000) .. " " .. tostring(ms % 1 == 0)
  try(out, "timestamp ms", function() return type(handle:timestamp(EnvoyTimestampResolution.MILLISECOND)) end)
  try(out, "timestamp us", handle.timestamp, handle, EnvoyTimestampResolution.MICROSECOND)
  try(out, "timestamp bad", handle.timestamp, handle, 9)
  try(out, "timestamp string arg", handle.timestamp, handle, "x")
  try(out, "string ms", function() local s = handle:timestampString() return type(s) .. " " .. #s end)
  try(out, "string us", function()
    local s = handle:timestampString(EnvoyTimestampResolution.MICROSECOND) return type(s) .. " " .. #s
  end)
  try(out, "string bad", handle.timestampString, handle, 5)
  try(out, "resolutions", function()
    return EnvoyTimestampResolution.MILLISECOND, EnvoyTimestampResolution.MICROSECOND
  end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    Case("logs_on_every_object", LOG_SCRIPT, [get("/"), post("/", b"logged body")]),

    Case("stats", TRY + r"""
function envoy_on_request(handle)
  local s = handle:stats()
  local out = {}
  try(out, "counter", function() local c = s:counter("requests") c:inc() c:add(4) return c:value() end)
  try(out, "gauge", function()
    local g = s:gauge("level") g:set(10) g:inc() g:add(5) g:dec() g:sub(2) return g:value()
  end)
  try(out, "histogram", function() s:histogram("sizes"):recordValue(42) return "recorded" end)
  try(out, "counter no name", s.counter, s)
  try(out, "gauge negative", function() local g = s:gauge("neg") g:sub(1) return g:value() end)
  handle:headers():add("x-stats", table.concat(out, ";"))
end
""", [get("/"), get("/")], lua_config={"stat_prefix": "scripted"}, stats=True),

    Case("verify_signature", TRY + r"""
local function unhex(s) return (s:gsub("..", function(c) return string.char(tonumber(c, 16)) end)) end
local KEY = unhex("30819f300d06092a864886f70d010101050003818d0030818902818100c591fa11124fce89621454ca227e24a10ffabfb5a265cd800752670b19566cf57eae4b2dc3605189e052fb492c573d21fa7f107cb853432c0824d2a493a24f7019fc4c982095dc0b374df109f1bceb1c9bae3f9fcf45e2106c39e8f30b6425f7dc9e804194985b9b15f7e586cacc26dd0ec4d68be09bbb78bbdf781bf22b902b0203010001")
local SIG = unhex("280ebafe445e0208e49d455e39eee464b4b916f0c44a13b3d693804ba24d8452073f83da5c2923df0efdcfc61459967185deaa3d5056842af57cf6f8418683eba570054a40a5c2eb45807d0c35e14bce40e4c16ef729910b3892c5f456c5cddefd52f427635c7c8dee46245785a9a2dbcb678ad46b5a2e0dd612bbd776f26391")
function envoy_on_request(handle)
  local out = {}
  local wrapper = handle:importPublicKey(KEY, #KEY)
  try(out, "key made", function() return wrapper ~= nil end)
  -- As the docs write it; Envoy 1.40 wants the key's bytes (wrapper:get()).
  local key = wrapper:get()
  try(out, "key", type, key)
  try(out, "valid", handle.verifySignature, handle, "sha256", key, SIG, #SIG, "hello", 5)
  try(out, "wrong data", handle.verifySignature, handle, "sha256", key, SIG, #SIG, "hellO", 5)
  try(out, "wrong hash", handle.verifySignature, handle, "sha1", key, SIG, #SIG, "hello", 5)
  try(out, "unknown hash", handle.verifySignature, handle, "md4", key, SIG, #SIG, "hello", 5)
  try(out, "SHA256 upper", handle.verifySignature, handle, "SHA256", key, SIG, #SIG, "hello", 5)
  try(out, "short lengths", handle.verifySignature, handle, "sha256", key, SIG, 10, "hello", 3)
  try(out, "empty key", handle.verifySignature, handle, "sha256", "", SIG, #SIG, "hello", 5)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    Case("set_upstream_override_host", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  local host = handle:headers():get("x-host")
  try(out, "override " .. host, handle.setUpstreamOverrideHost, handle, host, handle:headers():get("x-strict") == "1")
  handle:headers():add("x-override", table.concat(out, ";"))
end
""", [get("/", [("x-host", "127.0.0.1"), ("x-strict", "0")]), get("/", [("x-host", "not-an-ip")]),
      get("/", [("x-host", "10.255.255.1"), ("x-strict", "1")]), get("/", [("x-host", "::1")])]),

    Case("lua_environment", TRY + r"""
function envoy_on_request(handle)
  local names = {}
  for k in pairs(_G) do names[#names + 1] = k end
  table.sort(names)
  local out = { "globals: " .. table.concat(names, " ") }
  try(out, "version", function() return _VERSION, jit and jit.version end)
  try(out, "package.path", function() return package.path end)
  try(out, "ffi", function() return type(require("ffi")) end)
  try(out, "print", print, "printed")
  try(out, "handle type", type, handle)
  try(out, "tostring handle", function() return (tostring(handle):gsub("0x%x+", "ADDR")) end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""",
         differs="objects are Lua tables, not userdata"),

    Case("require_from_lua_path", r"""
local mylibrary = require("mylibrary")

function envoy_on_request(request_handle)
  request_handle:headers():add("foo", mylibrary.foobar())
end
"""),

    # Globals live as long as the worker's Lua state (one worker here).
    Case("per_worker_state", r"""
local count = 0
function envoy_on_request(handle)
  count = count + 1
  handle:respond({ [":status"] = "200" }, "request " .. count)
end
""", [get("/a"), get("/b")]),

    Case("only_envoy_on_response", r"""
function envoy_on_response(handle)
  handle:headers():add("x-only-response", "1")
end
""", [get("/"), post("/", b"x")]),

    Case("no_hooks_at_all", r"""
local x = 1
"""),

    Case("script_loaded_once_per_worker", r"""
loaded_times = (loaded_times or 0) + 1
function envoy_on_request(handle)
  handle:headers():add("x-loaded", tostring(loaded_times))
end
""", [get("/"), get("/")]),

    Case("two_lua_filters_in_one_chain", None, filters=[
        lua_filter("first.lua", r"""
function envoy_on_request(handle)
  handle:headers():add("x-first", "1")
  handle:streamInfo():dynamicMetadata():set("chain", "first", "was here")
end
function envoy_on_response(handle)
  handle:headers():add("x-order", "first-last")
end
"""),
        lua_filter("second.lua", r"""
function envoy_on_request(handle)
  local dm = handle:streamInfo():dynamicMetadata():get("chain")
  handle:headers():add("x-second-saw", tostring(handle:headers():get("x-first")) .. " " .. tostring(dm and dm.first))
end
function envoy_on_response(handle)
  handle:headers():add("x-order", "second-first")
end
""")]),
]
