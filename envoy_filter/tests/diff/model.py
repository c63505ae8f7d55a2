"""What a differential case is: a Lua script (or a whole stock Lua filter
config) with the routes it runs under and the requests sent to it."""

import dataclasses

from diff.wire import Request

LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
LUA_FILTER = "envoy.filters.http.lua"


@dataclasses.dataclass
class Case:
    name: str
    lua: str = None            # default_source_code.inline_string (None: no default script)
    requests: list = dataclasses.field(default_factory=lambda: [get()])
    lua_config: dict = None    # further fields of the Lua proto (source_codes, stat_prefix, ...)
    filter_name: str = LUA_FILTER
    filters: list = None       # the whole list of stock http filters (before the router) instead
    routes: list = None        # the virtual host's routes (default: everything to the upstream)
    vhost: dict = None         # further fields of the virtual host
    route_config: dict = None  # further fields of the route configuration
    stats: bool = False        # also compare the listener's lua stats
    refused: bool = False      # Envoy must refuse the config (both filters); no requests
    settle: float = 0.02       # quiet time that ends a request's window (logs, upstream requests)
    differs: str = None        # why ours must differ (docs/envoy.md); the case fails once it does not

    def stock_filters(self):
        if self.filters is not None:
            return self.filters
        config = {"@type": LUA}
        if self.lua is not None:
            config["default_source_code"] = {"inline_string": self.lua}
        config.update(self.lua_config or {})
        return [{"name": self.filter_name, "typed_config": config}]


def get(path="/", headers=(), **kw):
    return Request("GET", path, list(headers), **kw)


def post(path="/", body=b"", headers=(), **kw):
    return Request("POST", path, list(headers), body=body, **kw)


def route(prefix="/", cluster="upstream", name=None, per_route=None, filter_name=LUA_FILTER, headers=None, **extra):
    """A route to `cluster` for `prefix` (and request `headers` matchers);
    `per_route` is a LuaPerRoute (without @type) for `filter_name`."""
    out = {"match": {"prefix": prefix, **({"headers": headers} if headers else {})},
           "route": {"cluster": cluster, "timeout": "5s"}}
    if name:
        out["name"] = name
    if per_route is not None:
        out["typed_per_filter_config"] = {filter_name: lua_per_route(**per_route)}
    out.update(extra)
    return out


def lua_per_route(**fields):
    return {"@type": LUA_PER_ROUTE, **fields}


def lua_filter(name, source=None, **fields):
    """A stock Lua http filter named `name` (for cases with several)."""
    config = {"@type": LUA}
    if source is not None:
        config["default_source_code"] = {"inline_string": source}
    config.update(fields)
    return {"name": name, "typed_config": config}


# A helper many scripts share: report `pcall` results with the error's
# position removed (positions are compared once, in `error_position`).
TRY = r"""
local function clean(v)
  if type(v) == "string" then return (v:gsub("^[^\n]-:%d+: ", "")) end
  return tostring(v)
end
local function pack(...) return { n = select("#", ...), ... } end
local function try(out, label, f, ...)
  local r = pack(pcall(f, ...))
  local parts = {}
  for i = 2, r.n do parts[#parts + 1] = clean(r[i]) end
  out[#out + 1] = label .. (r[1] and " = " or " ! ") .. table.concat(parts, " | ")
end
"""
