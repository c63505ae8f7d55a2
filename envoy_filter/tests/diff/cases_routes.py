"""Cases: per-route configs (LuaPerRoute), source_codes, filter_context,
clear_route_cache, several Lua filters, and the config shapes of Envoy's
docs and examples."""

from diff.model import TRY, Case, LUA_FILTER, get, post, route, lua_filter, lua_per_route

def marking(hook, name, log=None):
    """A script whose `hook` logs `log` and adds x-script: `name`."""
    handle = f"{hook}_handle"
    logs = f'  {handle}:logInfo("{log}")\n' if log else ""
    return f"""
function envoy_on_{hook}({handle})
{logs}  {handle}:headers():add("x-script", "{name}")
end
"""


# The scripts of Envoy's docs example lua-filter-override.yaml, marked.
HELLO = marking("request", "hello.lua", "Hello World.")
BYE = marking("response", "bye.lua", "Bye Bye.")
INLINE = marking("response", "inline", "Goodbye.")
DEFAULT = marking("request", "default") + r"""
function envoy_on_response(response_handle)
  response_handle:headers():add("x-default-response", "1")
end
"""

SOURCE_CODES = {"source_codes": {"hello.lua": {"inline_string": HELLO}, "bye.lua": {"inline_string": BYE}}}

FILTER_CONTEXT = TRY + r"""
local function show(v)
  if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. show(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
function envoy_on_request(handle)
  local out = {}
  try(out, "made", function() return handle:filterContext() ~= nil end)
  try(out, "key", function() return show(handle:filterContext()["key"]) end)
  try(out, "nested", function() return show(handle:filterContext().nested) end)
  try(out, "list", function() return show(handle:filterContext().list) end)
  try(out, "missing", function() return show(handle:filterContext().missing) end)
  for _, key in ipairs({ "key", "n", "nested", "list", "missing" }) do
    try(out, "get " .. key, function() return show(handle:filterContext():get(key)) end)
  end
  try(out, "pairs", function()
    local t = {}
    for k, v in pairs(handle:filterContext()) do t[k] = v end
    return show(t)
  end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""

PATHS = r"""
function envoy_on_request(handle)
  handle:respond({ [":status"] = "200" }, package.path .. "\n" .. package.cpath)
end
"""

# Each filter counts the requests it saw, in a global of its Lua state.
SHARED = r"""
seen = seen or {}
function envoy_on_request(handle)
  seen[#seen + 1] = handle:headers():get(":path")
  handle:headers():add("x-seen", tostring(#seen))
end
"""

CONTEXT = {"key": "xxxxxx", "n": 3, "nested": {"a": {"b": True}}, "list": ["x", 2]}


# x-target: b selects upstream_b; the route tells the upstream which one it was.
BY_TARGET_HEADER = [
    route("/", cluster="upstream_b", headers=[{"name": "x-target", "string_match": {"exact": "b"}}],
          request_headers_to_add=[{"header": {"key": "x-route", "value": "b"}}]),
    route("/", request_headers_to_add=[{"header": {"key": "x-route", "value": "a"}}])]


def prefixed(prefix, **per_route):
    return route(prefix, per_route=per_route or None)


CASES = [
    # The shape of docs/.../_include/lua-filter-override.yaml.
    Case("doc_per_route_override", DEFAULT, [get("/"), get("/lua-disabled"), get("/lua-custom"), get("/lua-inline")],
         lua_config=SOURCE_CODES,
         routes=[prefixed("/lua-disabled", disabled=True), prefixed("/lua-custom", name="hello.lua"),
                 prefixed("/lua-inline", source_code={"inline_string": INLINE}), route("/")]),

    Case("per_route_name_response_script", DEFAULT, [get("/bye"), post("/bye", b"x")], lua_config=SOURCE_CODES,
         routes=[prefixed("/bye", name="bye.lua"), route("/")]),

    Case("per_route_virtual_host_and_route", DEFAULT, [get("/"), get("/enabled"), get("/named")],
         lua_config=SOURCE_CODES,
         vhost={"typed_per_filter_config": {LUA_FILTER: lua_per_route(disabled=True)}},
         routes=[prefixed("/enabled", source_code={"inline_string": HELLO}), prefixed("/named", name="bye.lua"),
                 route("/")]),

    Case("per_route_route_configuration", DEFAULT, [get("/"), get("/route")], lua_config=SOURCE_CODES,
         route_config={"typed_per_filter_config": {LUA_FILTER: lua_per_route(name="hello.lua")}},
         routes=[prefixed("/route", name="bye.lua"), route("/")]),

    Case("per_route_weighted_cluster", DEFAULT, [get("/weighted")], lua_config=SOURCE_CODES, routes=[{
        "match": {"prefix": "/"},
        "route": {"timeout": "5s", "weighted_clusters": {"clusters": [
            {"name": "upstream", "weight": 100,
             "typed_per_filter_config": {LUA_FILTER: lua_per_route(name="hello.lua")}},
            {"name": "upstream_b", "weight": 0}]}}}]),

    Case("per_route_without_default_script", None, [get("/"), get("/hello")], lua_config=SOURCE_CODES,
         routes=[prefixed("/hello", name="hello.lua"), route("/")]),

    Case("per_route_disabled_everything", DEFAULT, [get("/"), post("/", b"x")],
         routes=[route("/", per_route={"disabled": True})]),

    Case("filter_context_per_route", FILTER_CONTEXT, [get("/ctx"), get("/none")],
         routes=[prefixed("/ctx", source_code={"inline_string": FILTER_CONTEXT}, filter_context=CONTEXT),
                 route("/")]),

    Case("filter_context_with_name", DEFAULT, [get("/ctx")],
         lua_config={"source_codes": {"ctx.lua": {"inline_string": FILTER_CONTEXT}}},
         routes=[prefixed("/ctx", name="ctx.lua", filter_context=CONTEXT)]),

    Case("filter_context_filter_level", FILTER_CONTEXT, [get("/"), get("/route")],
         lua_config={"filter_context": {"key": "filter level", "n": 1}},
         routes=[prefixed("/route", source_code={"inline_string": FILTER_CONTEXT}, filter_context=CONTEXT),
                 route("/")]),

    # clear_route_cache (default true): a header change re-selects the route.
    Case("clear_route_cache_default", r"""
function envoy_on_request(handle)
  if handle:headers():get("x-go-b") then
    handle:headers():replace("x-target", "b")
  end
end
""", [get("/"), get("/", [("x-go-b", "1")])], routes=BY_TARGET_HEADER),

    Case("clear_route_cache_false", r"""
function envoy_on_request(handle)
  handle:headers():replace("x-target", "b")
  if handle:headers():get("x-clear") then
    handle:clearRouteCache()
  end
end
""", [get("/"), get("/", [("x-clear", "1")])], lua_config={"clear_route_cache": False}, routes=BY_TARGET_HEADER),

    Case("clear_route_cache_path_rewrite", r"""
function envoy_on_request(handle)
  handle:headers():replace(":path", "/to-b" .. handle:headers():get(":path"))
end
""", [get("/x")], routes=[
        route("/to-b", cluster="upstream_b", request_headers_to_add=[{"header": {"key": "x-route", "value": "b"}}]),
        route("/", request_headers_to_add=[{"header": {"key": "x-route", "value": "a"}}])]),

    Case("stat_prefix_and_errors", r"""
function envoy_on_request(handle)
  if handle:headers():get(":path") == "/fail" then error("counted") end
end
""", [get("/ok"), get("/fail"), get("/fail")], lua_config={"stat_prefix": "mine"}, stats=True),

    # The shape of Envoy's examples/lua/envoy.yaml: two Lua filters with
    # custom names, the second without a default script, enabled per route.
    Case("example_two_named_filters", None, [get("/"), get("/multiple/lua/scripts")], filters=[
        lua_filter("lua_filter_with_custom_name_0", r"""
local mylibrary = require("mylibrary")

function envoy_on_request(request_handle)
  request_handle:headers():add("foo", mylibrary.foobar())
end
"""),
        lua_filter("lua_filter_with_custom_name_1")],
         routes=[route("/multiple/lua/scripts", per_route={"source_code": {"inline_string": r"""
function envoy_on_response(response_handle)
  response_handle:headers():add("header_key_1", "header_value_1")
end
"""}}, filter_name="lua_filter_with_custom_name_1"), route("/")]),

    # The docs' first example (request_body_size / response_body_size).
    Case("doc_body_sizes", r"""
-- Called on the request path.
function envoy_on_request(request_handle)
  -- Wait for the entire request body and add a request header with the body size.
  request_handle:headers():add("request_body_size", request_handle:body():length())
end

-- Called on the response path.
function envoy_on_response(response_handle)
  -- Wait for the entire response body and add a response header with the body size.
  response_handle:headers():add("response_body_size", response_handle:body():length())
  -- Remove a response header named 'foo'
  response_handle:headers():remove("foo")
end
""", [post("/", b"twelve bytes", [("x-up-headers", "foo=removed")]), get("/")]),

    Case("doc_log_request", r"""
function envoy_on_request(request_handle)
  -- Log information about the request
  request_handle:logInfo("Authority: "..request_handle:headers():get(":authority"))
  request_handle:logInfo("Method: "..request_handle:headers():get(":method"))
  request_handle:logInfo("Path: "..request_handle:headers():get(":path"))
end

function envoy_on_response(response_handle)
  -- Log response status code
  response_handle:logInfo("Status: "..response_handle:headers():get(":status"))
end
""", [get("/logged"), post("/posted", b"x")]),

    Case("doc_rewrite_body", r"""
function envoy_on_response(response_handle)
  response_handle:body():setBytes("<html><b>Not Found<b></html>")
  response_handle:headers():replace("content-type", "text/html")
end
""", [get("/", [("x-up-status", "404")]), get("/", [("x-up-chunks", "3")])]),

    Case("doc_rewrite_body_chunks", r"""
function envoy_on_response(response_handle)

  -- Sets the content-type.
  response_handle:headers():replace("content-type", "text/html")

  local last
  for chunk in response_handle:bodyChunks() do
    -- Clears each received chunk.
    chunk:setBytes("")
    last = chunk
  end

  last:setBytes("<html><b>Not Found<b></html>")
end
""", [get("/", [("x-up-status", "404")]), get("/", [("x-up-chunks", "3")])]),

    Case("doc_body_chunks_log", r"""
function envoy_on_request(request_handle)
  for chunk in request_handle:bodyChunks() do
    request_handle:logInfo(chunk:length())
  end
end
""", [post("/", [b"12345", b"123"])]),

    Case("doc_route_name", r"""
function envoy_on_request(request_handle)
  local route_name = request_handle:streamInfo():routeName()
  request_handle:logInfo("Matched route: " .. route_name)
end
""", routes=[route(name="my-route")]),

    Case("doc_virtual_cluster_name", r"""
function envoy_on_request(request_handle)
  local virtual_cluster = request_handle:streamInfo():virtualClusterName()
  request_handle:logInfo("Matched virtual cluster: " .. virtual_cluster)
end
""", vhost={"virtual_clusters": [{"name": "all-gets", "headers": [
        {"name": ":method", "string_match": {"exact": "GET"}}]}]}),

    Case("doc_filter_state", r"""
function envoy_on_request(request_handle)
  local filter_state = request_handle:streamInfo():filterState()

  -- Get authentication result
  local auth_result = filter_state:get("auth.result")
  if auth_result then
    request_handle:headers():add("x-auth-result", auth_result)
  end
  request_handle:headers():add("x-auth-checked", "1")
end
"""),

    Case("doc_clear_route_cache_and_override_host", r"""
function envoy_on_request(request_handle)
  -- Clear the route cache
  request_handle:clearRouteCache()
  -- Override upstream host without strict mode
  request_handle:setUpstreamOverrideHost("127.0.0.1", false)
end
"""),

    # Configs: what loads, what Envoy refuses.
    Case("config_script_from_file", None, [get("/")],
         lua_config={"default_source_code": {"filename": "envoy_filter/tests/diff/lua/main.lua"}}),
    Case("config_empty_lua_filter", None, [get("/"), post("/", b"x")]),
    Case("config_top_level_error", 'error("top level boom")\nfunction envoy_on_request(h) end\n', refused=True),
    Case("config_top_level_runtime_error", "local x = nil .. 1\n", refused=True),
    Case("config_syntax_error", "function envoy_on_request(h)\n", refused=True),
    Case("config_missing_file", None, lua_config={"default_source_code": {"filename": "/no/such/script.lua"}},
         refused=True),
    Case("config_source_codes_syntax_error", DEFAULT, lua_config={"source_codes": {"bad.lua": {"inline_string": "end"}}},
         refused=True),
    Case("per_route_unknown_name", DEFAULT, [get("/x"), get("/")], lua_config=SOURCE_CODES,
         routes=[prefixed("/x", name="no_such.lua"), route("/")]),
    Case("config_per_route_syntax_error", DEFAULT, refused=True,
         routes=[prefixed("/x", source_code={"inline_string": "function ("}), route("/")]),

    # Envoy 1.40's package path fields and shared VMs.
    Case("config_package_paths", PATHS, lua_config={"package_paths": ["/opt/lua/a/?.lua", "/opt/lua/b/?.lua"],
                                                   "package_cpaths": ["/opt/lua/c/?.so"]}),
    Case("per_route_package_paths", PATHS, [get("/"), get("/route")],
         routes=[prefixed("/route", source_code={"inline_string": PATHS}, package_paths=["/opt/route/?.lua"]),
                 route("/")]),
    Case("config_shared_vm_id", None, [get("/"), get("/")], filters=[
        lua_filter("vm.first", SHARED, shared_vm_id="shared-vm"),
        lua_filter("vm.second", SHARED, shared_vm_id="shared-vm")],
         differs="shared_vm_id is ignored: one VM per filter config and worker"),
]
