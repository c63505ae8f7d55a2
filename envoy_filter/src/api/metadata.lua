-- Metadata objects: handle:metadata() and route():metadata() (route
-- metadata under the filter's namespace), and the reads and writes that
-- streamInfo():dynamicMetadata() shares.
--
-- Envoy 1.40's ABI reads strings, numbers, booleans and lists of them; a
-- value that is itself a struct cannot be read, and a read of the wrong type
-- makes Envoy log an error. So what a script stores in dynamic metadata is
-- written to Envoy and also kept in the stream's store: the script reads its
-- own values back from there, tables included.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")

local api, check, buf, num, array = base.api, base.check, base.buf, base.num, base.array
local ffi_str = ffi.string
local type, pairs, ipairs, next = type, pairs, ipairs, next
local char, concat, floor = string.char, table.concat, math.floor

-- Sources and value types of api.metadata_* (api/metadata.rs).
local DYNAMIC, ROUTE = 0, 1
local NONE, STRING, NUMBER, BOOL = 0, 1, 2, 3
local NOT_A_LIST = -3

local function scalar(t)
  if t == STRING then
    return ffi_str(buf[0].ptr, buf[0].len)
  elseif t == NUMBER then
    return num[0]
  elseif t == BOOL then
    return num[0] ~= 0
  end
  return nil
end

-- The value at `ns`/`key`: a scalar, a list of scalars (a table), or nil.
local function value(ctx, source, ns, key)
  local v = scalar(check(api.metadata_get(ctx, source, ns, #ns, key, #key, buf, num)))
  if v ~= nil then
    return v
  end
  local n = check(api.metadata_list_len(ctx, source, ns, #ns, key, #key))
  if n == NOT_A_LIST then
    return nil
  end
  local list = {}
  for i = 0, n - 1 do
    list[i + 1] = scalar(check(api.metadata_list_item(ctx, source, ns, #ns, key, #key, i, buf, num)))
  end
  return list
end

-- Names from a (count, fill) pair of api functions.
local function names(count, fill)
  local n = check(count())
  if n == 0 then
    return {}
  end
  local out = array("resty_ffi_envoy_buf", n)
  n = check(fill(out, n))
  local list = {}
  for i = 0, n - 1 do
    list[i + 1] = ffi_str(out[i].ptr, out[i].len)
  end
  return list
end

local function keys(ctx, source, ns)
  return names(function() return api.metadata_keys(ctx, source, ns, #ns, nil, 0) end,
    function(out, n) return api.metadata_keys(ctx, source, ns, #ns, out, n) end)
end

local M = { DYNAMIC = DYNAMIC, ROUTE = ROUTE }

-- What the store holds for a value set to nil (Envoy holds a null).
local NULL = {}

-- The values of namespace `ns` as a table (with `stored`, what the script
-- set there), or nil when it has none.
function M.namespace(ctx, source, ns, stored)
  stored = stored or {}
  local values, found = {}, false
  for _, key in ipairs(keys(ctx, source, ns)) do
    if stored[key] == nil then
      values[key] = value(ctx, source, ns, key)
    end
    found = true
  end
  for key, v in pairs(stored) do
    if v ~= NULL then
      values[key] = v
    end
    found = true
  end
  return found and values or nil
end

function M.namespaces(ctx, source)
  return names(function() return api.metadata_namespaces(ctx, source, nil, 0) end,
    function(out, n) return api.metadata_namespaces(ctx, source, out, n) end)
end

-- google.protobuf.Struct in protobuf's wire format ---------------------------

local function varint(n)
  local out = {}
  repeat
    local low = n % 128
    n = floor(n / 128)
    out[#out + 1] = char(n > 0 and low + 128 or low)
  until n == 0
  return concat(out)
end

local function field(number, bytes)
  return varint(number * 8 + 2) .. varint(#bytes) .. bytes
end

local double = ffi.new("double[1]")

-- As the stock filter converts tables: only number keys make a list (of
-- t[1] .. t[#t]), else a struct, whose keys must all be strings.
local function is_list(t)
  local k = next(t)
  if k == nil then
    return false
  end
  for key in pairs(t) do
    if type(key) ~= "number" then
      return false
    end
  end
  return true
end

local encode_struct

-- A google.protobuf.Value.
local function encode_value(v)
  local t = type(v)
  if t == "nil" then
    return varint(1 * 8) .. varint(0)
  elseif t == "number" then
    double[0] = v
    return varint(2 * 8 + 1) .. ffi_str(double, 8)
  elseif t == "string" then
    return field(3, v)
  elseif t == "boolean" then
    return varint(4 * 8) .. varint(v and 1 or 0)
  elseif t == "table" then
    if is_list(v) then
      local items = {}
      for i = 1, #v do
        items[i] = field(1, encode_value(v[i]))
      end
      return field(6, concat(items))
    end
    return field(5, encode_struct(v))
  end
  base.fail("unexpected type '" .. t .. "' in dynamicMetadata")
end

-- A google.protobuf.Struct's entry.
local function entry(key, v)
  return field(1, field(1, key) .. field(2, encode_value(v)))
end

encode_struct = function(t)
  local entries = {}
  for key, v in pairs(t) do
    local kt = type(key)
    if kt ~= "string" then
      base.fail("unexpected type " .. kt .. " in table key (only string keys are supported)")
    end
    entries[#entries + 1] = entry(key, v)
  end
  return concat(entries)
end

-- Sets `key` in dynamic metadata namespace `ns`, and in `stored` (the
-- stream's copy of what the script set there).
function M.set(ctx, ns, key, v, stored)
  local t = type(v)
  local rc
  if t == "string" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, STRING, v, #v, 0)
  elseif t == "number" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, NUMBER, nil, 0, v)
  elseif t == "boolean" then
    rc = api.metadata_set(ctx, ns, #ns, key, #key, BOOL, nil, 0, v and 1 or 0)
  else
    local bytes = entry(key, v)
    rc = api.metadata_merge(ctx, ns, #ns, bytes, #bytes)
  end
  check(rc)
  if v == nil then
    v = NULL
  end
  stored[key] = v
end

-- Route metadata ----------------------------------------------------------------

local RouteMetadata = base.class("RouteMetadata")

function RouteMetadata:get(key)
  key = base.string_arg(key, 2)
  local v = value(self.ctx, ROUTE, self.namespace, key)
  if v ~= nil then
    return v
  end
end

function RouteMetadata:__pairs()
  return next, M.namespace(self.ctx, ROUTE, self.namespace) or {}, nil
end

-- Like the stock filter: the filter's own namespace, or the Lua filter's
-- canonical name when the route has no metadata under it.
local CANONICAL = "envoy.filters.http.lua"
function M.route(ctx, namespace)
  if check(api.metadata_keys(ctx, ROUTE, namespace, #namespace, nil, 0)) == 0 then
    namespace = CANONICAL
  end
  return base.new(RouteMetadata, { ctx = ctx, namespace = namespace })
end

base.scoped(RouteMetadata)

return M
