-- ngx.shared.NAME on Envoy: lua-nginx-module's shared dict API over the
-- core's dicts (api/shdict.rs). The methods lua-resty-core implements
-- (get ... free_space) return and raise what lua-resty-core does; the ones
-- lua-nginx-module implements in C (lists, get_keys, flush_expired) what its
-- C functions do. Loaded with a table name -> dict (lightuserdata holding a
-- reference), once per VM.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")

local api = base.api
local ffi_cast, ffi_gc, ffi_new, ffi_str = ffi.cast, ffi.gc, ffi.new, ffi.string
local error, getinfo, pairs, select, setmetatable = error, debug.getinfo, pairs, select, setmetatable
local tonumber, tostring, type = tonumber, tostring, type

-- Value types and statuses of api.shdict_* (api/shdict.rs).
local NIL, BOOLEAN, NUMBER, STRING = 0, 1, 3, 4
local FAILED = -10
-- lua-resty-core's store ops.
local SET, ADD, REPLACE, SAFE = 0x0, 0x1, 0x2, 0x4

local out = ffi_new("resty_ffi_envoy_buf[1]")
local err = ffi_new("resty_ffi_envoy_buf[1]")
local num = ffi_new("double[1]")
local meta = ffi_new("int[2]")
local forcible = ffi_new("int[1]")

-- The dict handles handed out, so that a forged table cannot reach Rust.
local zones = setmetatable({}, { __mode = "k" })

local function internal_error()
  error("resty_ffi: internal error in a shared dict", 3)
end

local function message(buf)
  return ffi_str(buf[0].ptr, buf[0].len)
end

-- lua-resty-core's check_zone.
local function check_zone(zone)
  if not zone or type(zone) ~= "table" then
    error("bad \"zone\" argument", 3)
  end
  zone = zone[1]
  if not zones[zone] then
    error("bad \"zone\" argument", 3)
  end
  return zone
end

-- lua-resty-core's key checks: the key as a string and its length, or nil
-- and the message its methods return.
local function checked_key(key)
  if key == nil then
    return nil, "nil key"
  end
  if type(key) ~= "string" then
    key = tostring(key)
  end
  local key_len = #key
  if key_len == 0 then
    return nil, "empty key"
  end
  if key_len > 65535 then
    return nil, "key too long"
  end
  return key, key_len
end

-- Named as lua-resty-core names its wrapper: an argument LuaJIT cannot
-- convert (flags = "x") is reported as "bad argument #10 to
-- 'ngx_lua_ffi_shdict_store' (...)" on both hosts.
local ngx_lua_ffi_shdict_store = api.shdict_store

local function shdict_store(zone, op, key, value, exptime, flags)
  zone = check_zone(zone)
  if not exptime then
    exptime = 0
  elseif exptime < 0 then
    error('bad "exptime" argument', 2)
  end
  if not flags then
    flags = 0
  end
  local key_len
  key, key_len = checked_key(key)
  if not key then
    return nil, key_len
  end

  local str_val, str_val_len, num_val = nil, 0, 0
  local valtyp = type(value)
  if valtyp == "string" then
    valtyp = STRING
    str_val, str_val_len = value, #value
  elseif valtyp == "number" then
    valtyp = NUMBER
    num_val = value
  elseif value == nil then
    valtyp = NIL
  elseif valtyp == "boolean" then
    valtyp = BOOLEAN
    num_val = value and 1 or 0
  else
    return nil, "bad value type"
  end

  local rc = ngx_lua_ffi_shdict_store(zone, op, key, key_len, valtyp, str_val, str_val_len, num_val,
    exptime * 1000, flags, forcible, err)
  if rc == 0 then
    return true, nil, forcible[0] == 1
  elseif rc == FAILED then
    return false, message(err), forcible[0] == 1
  end
  internal_error()
end

local function shdict_set(zone, key, value, exptime, flags)
  return shdict_store(zone, SET, key, value, exptime, flags)
end

local function shdict_safe_set(zone, key, value, exptime, flags)
  return shdict_store(zone, SAFE, key, value, exptime, flags)
end

local function shdict_add(zone, key, value, exptime, flags)
  return shdict_store(zone, ADD, key, value, exptime, flags)
end

local function shdict_safe_add(zone, key, value, exptime, flags)
  return shdict_store(zone, ADD + SAFE, key, value, exptime, flags)
end

local function shdict_replace(zone, key, value, exptime, flags)
  return shdict_store(zone, REPLACE, key, value, exptime, flags)
end

local function shdict_delete(zone, key)
  return shdict_set(zone, key, nil)
end

-- The value a get or pop found (typ: its type), or nil.
local function value_of(typ)
  if typ == STRING then
    return ffi_str(out[0].ptr, out[0].len)
  elseif typ == NUMBER then
    return num[0]
  elseif typ == BOOLEAN then
    return num[0] ~= 0
  end
end

-- get and get_stale: the value and its flags (`meta[0]`; `meta[1]` is 1 for
-- a stale value), or nil and an error message; nil for no value.
local function lookup(zone, key, stale)
  zone = check_zone(zone)
  local key_len
  key, key_len = checked_key(key)
  if not key then
    return false, key_len
  end
  local typ = api.shdict_get(zone, key, key_len, stale, out, num, meta)
  if typ == FAILED then
    return false, message(out)
  elseif typ < 0 then
    internal_error()
  end
  if typ == NIL then
    return true, nil, false
  end
  return true, value_of(typ), true
end

local function shdict_get(zone, key)
  local ok, val, found = lookup(zone, key, 0)
  if not ok then
    return nil, val
  elseif found and meta[0] ~= 0 then
    return val, meta[0]
  end
  return val
end

local function shdict_get_stale(zone, key)
  local ok, val, found = lookup(zone, key, 1)
  if not ok then
    return nil, val
  elseif not found then
    return nil
  end
  local flags = meta[0]
  return val, flags ~= 0 and flags or nil, meta[1] == 1
end

local function shdict_incr(zone, key, value, init, init_ttl)
  zone = check_zone(zone)
  local key_len
  key, key_len = checked_key(key)
  if not key then
    return nil, key_len
  end

  if type(value) ~= "number" then
    value = tonumber(value)
  end
  num[0] = value

  if init then
    local typ = type(init)
    if typ ~= "number" then
      init = tonumber(init)
      if not init then
        error("bad init arg: number expected, got " .. typ, 2)
      end
    end
  end

  if init_ttl ~= nil then
    local typ = type(init_ttl)
    if typ ~= "number" then
      init_ttl = tonumber(init_ttl)
      if not init_ttl then
        error("bad init_ttl arg: number expected, got " .. typ, 2)
      end
    end
    if init_ttl < 0 then
      error('bad "init_ttl" argument', 2)
    end
    if not init then
      error('must provide "init" when providing "init_ttl"', 2)
    end
  else
    init_ttl = 0
  end

  local rc = api.shdict_incr(zone, key, key_len, num, init and 1 or 0, init or 0, init_ttl * 1000, forcible, err)
  if rc == FAILED then
    return nil, message(err)
  elseif rc ~= 0 then
    internal_error()
  end
  if not init then
    return num[0]
  end
  return num[0], nil, forcible[0] == 1
end

local function shdict_flush_all(zone)
  zone = check_zone(zone)
  api.shdict_flush_all(zone)
end

local function shdict_ttl(zone, key)
  zone = check_zone(zone)
  local key_len
  key, key_len = checked_key(key)
  if not key then
    return nil, key_len
  end

  local rc = api.shdict_ttl(zone, key, key_len, num)
  if rc == 1 then
    return nil, "not found"
  elseif rc ~= 0 then
    internal_error()
  end
  return num[0] / 1000
end

local function shdict_expire(zone, key, exptime)
  zone = check_zone(zone)
  if not exptime then
    error('bad "exptime" argument', 2)
  end
  local key_len
  key, key_len = checked_key(key)
  if not key then
    return nil, key_len
  end

  local rc = api.shdict_expire(zone, key, key_len, exptime * 1000)
  if rc == 1 then
    return nil, "not found"
  elseif rc ~= 0 then
    internal_error()
  end
  return true
end

local function shdict_capacity(zone)
  zone = check_zone(zone)
  return tonumber(api.shdict_capacity(zone))
end

local function shdict_free_space(zone)
  zone = check_zone(zone)
  return tonumber(api.shdict_free_space(zone))
end


-- The methods lua-nginx-module implements in C, with its checks and
-- messages. LuaJIT's luaL_error and luaL_argerror point at the caller of the
-- C function: here, the caller of the method, found on the stack.
local C_METHODS = {}

-- The level of the running C method, counted from the caller of this.
local function method_level()
  local level = 3
  while true do
    local info = getinfo(level, "f")
    if not info or C_METHODS[info.func] then
      return level - 1
    end
    level = level + 1
  end
end

-- luaL_error in the running C method.
local function c_error(msg)
  error(msg, method_level() + 1)
end

-- luaL_argerror for argument `narg` (the dict is #1) of the running C method.
local function arg_error(narg, msg)
  local level = method_level()
  local info = getinfo(level, "n")
  local name = info and info.name or "?"
  if info and info.namewhat == "method" then
    narg = narg - 1
    if narg == 0 then
      error(("calling '%s' on bad self (%s)"):format(name, msg), level + 1)
    end
  end
  error(("bad argument #%d to '%s' (%s)"):format(narg, name, msg), level + 1)
end

local function typename(value)
  return value == nil and "no value" or type(value)
end

-- luaL_checklstring: a string, or a number converted.
local function check_string(value, narg)
  local typ = type(value)
  if typ == "string" then
    return value
  elseif typ == "number" then
    return tostring(value)
  end
  arg_error(narg, "string expected, got " .. typename(value))
end

-- luaL_checkint: a number (or a numeric string), truncated.
local function check_int(value, narg)
  local n = tonumber(value)
  if not n then
    arg_error(narg, "number expected, got " .. typename(value))
  end
  return n >= 0 and math.floor(n) or math.ceil(n)
end

-- luaL_checktype(L, 1, LUA_TTABLE).
local function check_table(value)
  if type(value) ~= "table" then
    arg_error(1, "table expected, got " .. typename(value))
  end
end

-- The zone of a C method's first argument.
local function c_zone(zone, bad)
  if type(zone) ~= "table" then
    c_error("bad \"zone\" argument")
  end
  zone = zone[1]
  if not zones[zone] then
    c_error(bad or "bad \"zone\" argument")
  end
  return zone
end

-- The key of a C method (one Lua cannot make a string raises), or nil and
-- why not.
local function c_key(key)
  if key == nil then
    return nil, "nil key"
  end
  return checked_key(check_string(key, 2))
end

-- push and pop return how many values the method returns, then them.
local function push(front, n, zone, key, value)
  if n ~= 3 then
    c_error(("expecting 3 arguments, but only seen %d"):format(n))
  end
  zone = c_zone(zone)
  local why
  key, why = c_key(key)
  if not key then
    return 2, nil, why
  end
  local typ = type(value)
  local str_val, str_val_len, num_val
  if typ == "string" then
    typ, str_val, str_val_len, num_val = STRING, value, #value, 0
  elseif typ == "number" then
    typ, str_val, str_val_len, num_val = NUMBER, nil, 0, value
  else
    return 2, nil, "bad value type"
  end
  local len = api.shdict_push(zone, front, key, #key, typ, str_val, str_val_len, num_val, err)
  if len >= 0 then
    return 1, len
  elseif len ~= FAILED then
    internal_error()
  end
  why = message(err)
  if why == "no memory" then
    return 2, false, why
  end
  return 2, nil, why
end

local function pop(front, n, zone, key)
  if n ~= 2 then
    c_error(("expecting 2 arguments, but only seen %d"):format(n))
  end
  zone = c_zone(zone)
  local why
  key, why = c_key(key)
  if not key then
    return 2, nil, why
  end
  local typ = api.shdict_pop(zone, front, key, #key, out, num)
  if typ == FAILED then
    return 2, nil, message(out)
  elseif typ < 0 then
    internal_error()
  end
  return 1, value_of(typ)
end

-- (Not tail calls: the method's frame must stay on the stack for errors.)
local function results(n, a, b)
  if n == 1 then
    return a
  end
  return a, b
end

local function shdict_lpush(...)
  local n, a, b = push(1, select("#", ...), ...)
  return results(n, a, b)
end

local function shdict_rpush(...)
  local n, a, b = push(0, select("#", ...), ...)
  return results(n, a, b)
end

local function shdict_lpop(...)
  local n, a, b = pop(1, select("#", ...), ...)
  return results(n, a, b)
end

local function shdict_rpop(...)
  local n, a, b = pop(0, select("#", ...), ...)
  return results(n, a, b)
end

local function shdict_llen(...)
  local n, zone, key = select("#", ...), ...
  if n ~= 2 then
    c_error(("expecting 2 arguments, but only seen %d"):format(n))
  end
  zone = c_zone(zone)
  local why
  key, why = c_key(key)
  if not key then
    return nil, why
  end
  local len = api.shdict_llen(zone, key, #key, err)
  if len == FAILED then
    return nil, message(err)
  elseif len < 0 then
    internal_error()
  end
  return len
end

-- get_keys and flush_expired: (zone[, max_count]) checked as lua-nginx-module's
-- C functions check them; the zone and the count (`default` when not given).
local function zone_and_count(default, ...)
  local n, zone, max_count = select("#", ...), ...
  if n ~= 1 and n ~= 2 then
    c_error(("expecting 1 or 2 argument(s), but saw %d"):format(n))
  end
  check_table(zone)
  zone = c_zone(zone, "bad user data for the ngx_shm_zone_t pointer")
  if n == 2 then
    return zone, check_int(max_count, 2)
  end
  return zone, default
end

local function shdict_get_keys(...)
  local zone, attempts = zone_and_count(1024, ...)
  local count = api.shdict_get_keys(zone, attempts, out)
  if count < 0 then
    internal_error()
  end
  -- Each key: a 2-byte little-endian length, then its bytes.
  local keys, p = {}, ffi_cast("const uint8_t *", out[0].ptr)
  for i = 1, count do
    local len = p[0] + p[1] * 256
    keys[i] = ffi_str(p + 2, len)
    p = p + 2 + len
  end
  return keys
end

local function shdict_flush_expired(...)
  local zone, attempts = zone_and_count(0, ...)
  local freed = api.shdict_flush_expired(zone, attempts)
  if freed < 0 then
    internal_error()
  end
  return freed
end

for _, method in pairs({ shdict_lpush, shdict_rpush, shdict_lpop, shdict_rpop, shdict_llen, shdict_get_keys,
  shdict_flush_expired }) do
  C_METHODS[method] = true
end


-- lua-nginx-module's ngx.shared: a table per dict, { [1] = the zone },
-- sharing one metatable whose __index is itself.
local Dict = {
  get = shdict_get,
  get_stale = shdict_get_stale,
  set = shdict_set,
  safe_set = shdict_safe_set,
  add = shdict_add,
  safe_add = shdict_safe_add,
  replace = shdict_replace,
  delete = shdict_delete,
  incr = shdict_incr,
  flush_all = shdict_flush_all,
  ttl = shdict_ttl,
  expire = shdict_expire,
  capacity = shdict_capacity,
  free_space = shdict_free_space,
  lpush = shdict_lpush,
  rpush = shdict_rpush,
  lpop = shdict_lpop,
  rpop = shdict_rpop,
  llen = shdict_llen,
  get_keys = shdict_get_keys,
  flush_expired = shdict_flush_expired,
}
Dict.__index = Dict

local handles = ...
local shared = {}
for name, handle in pairs(handles) do
  local zone = ffi_gc(ffi_cast("void *", handle), api.shdict_release)
  zones[zone] = true
  shared[name] = setmetatable({ zone }, Dict)
end

if not ngx then
  ngx = {}
end
ngx.shared = shared
