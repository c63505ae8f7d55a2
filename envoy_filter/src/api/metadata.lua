-- handle:metadata() (route metadata under the filter's namespace), and the
-- metadata reads and writes that streamInfo():dynamicMetadata() shares.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")

local api, check, buf, num, array = base.api, base.check, base.buf, base.num, base.array
local ffi_str = ffi.string
local setmetatable, type, error, tostring = setmetatable, type, error, tostring

-- Sources and value types of api.metadata_* (api/metadata.rs).
local DYNAMIC, ROUTE = 0, 1
local NONE, STRING, NUMBER, BOOL = 0, 1, 2, 3

local function value(ctx, source, ns, key, level)
  local t = check(api.metadata_get(ctx, source, ns, #ns, key, #key, buf, num), level + 1)
  if t == STRING then
    return ffi_str(buf[0].ptr, buf[0].len)
  elseif t == NUMBER then
    return num[0]
  elseif t == BOOL then
    return num[0] ~= 0
  end
  return nil
end

local M = { DYNAMIC = DYNAMIC, ROUTE = ROUTE }

-- The values of namespace `ns` as a table, or nil when it has none.
function M.namespace(ctx, source, ns)
  local n = check(api.metadata_keys(ctx, source, ns, #ns, nil, 0), 3)
  if n == 0 then
    return nil
  end
  local keys = array("resty_ffi_envoy_buf", n)
  n = check(api.metadata_keys(ctx, source, ns, #ns, keys, n), 3)
  local names = {}
  for i = 0, n - 1 do
    names[i + 1] = ffi_str(keys[i].ptr, keys[i].len)
  end
  local values = {}
  for _, key in ipairs(names) do
    values[key] = value(ctx, source, ns, key, 3)
  end
  return values
end

function M.set(ctx, ns, key, v)
  local t = type(v)
  local rc
  if t == "string" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, STRING, v, #v, 0)
  elseif t == "number" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, NUMBER, nil, 0, v)
  elseif t == "boolean" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, BOOL, nil, 0, v and 1 or 0)
  else
    base.fail("metadata values must be strings, numbers, booleans or tables, not " .. t)
  end
  check(rc, 3)
end

local RouteMetadata = base.loggable({})
RouteMetadata.__index = RouteMetadata

function RouteMetadata:get(key)
  key = base.string_arg(key, 2)
  local v = value(self.ctx, ROUTE, self.namespace, key, 2)
  if v ~= nil then
    return v
  end
end

-- Like the stock filter: the filter's own namespace, or the Lua filter's
-- canonical name when the route has no metadata under it.
local CANONICAL = "envoy.filters.http.lua"
function M.route(ctx, namespace)
  if check(api.metadata_keys(ctx, ROUTE, namespace, #namespace, nil, 0), 2) == 0 then
    namespace = CANONICAL
  end
  return setmetatable({ ctx = ctx, namespace = namespace }, RouteMetadata)
end

return M
