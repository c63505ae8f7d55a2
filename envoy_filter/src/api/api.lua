-- The function table of the api layer (api/mod.rs) and what every object of
-- this layer shares. Loaded once per VM with the table's address and cdef.
local ffi = require("ffi")

local api_ptr, cdef = ...
local error, pairs, tostring, type, setmetatable, getmetatable, select = error, pairs, tostring, type, setmetatable,
  getmetatable, select
local getinfo, sub = debug.getinfo, string.sub
local floor, ceil = math.floor, math.ceil
local vm = require("resty_ffi.envoy.vm")

ffi.cdef(cdef)

local api = ffi.cast("const resty_ffi_envoy_api *", api_ptr)

-- Status codes of the table's functions besides their results.
local GONE, PANICKED = -1, -2

-- The stock filter's error for an object used after its scope ended.
local OUT_OF_SCOPE = "object used outside of proper scope"

local M = {
  api = api,
  -- Scratch space for results; read at once, before the next call.
  buf = ffi.new("resty_ffi_envoy_buf[1]"),
  num = ffi.new("double[1]"),
}

-- Errors point where the stock filter's do: at the script's call of the
-- method (no position when the method was called from C, e.g. by pcall).
-- The level of that caller, counted from the caller of `script_level`'s
-- caller; and the level of the method it called.
local OURS = "=resty_ffi.envoy"
local function script_level()
  local level = 3
  while true do
    local info = getinfo(level, "S")
    if not info or sub(info.source, 1, #OURS) ~= OURS then
      return level - 2
    end
    level = level + 1
  end
end

-- Raises `message` at the script's call of the method.
local function raise(message)
  error(message, script_level() + 1)
end
M.fail = raise

-- Raises for the codes every function may return; else returns `rc`.
function M.check(rc)
  if rc == GONE then
    raise(OUT_OF_SCOPE)
  elseif rc == PANICKED then
    raise("resty_ffi: internal error; the stream fails closed")
  end
  return rc
end

-- Each stream's store, by stream: what its script put in dynamic metadata,
-- for the handles of both directions. Made on first use (most scripts never
-- need one); the filter calls forget_store when the stream ends.
local stores = {}

function M.store(ctx)
  local store = stores[ctx]
  if not store then
    M.check(api.store_made(ctx))
    store = {}
    stores[ctx] = store
  end
  return store
end

function M.forget_store(ctx)
  stores[ctx] = nil
end

-- How many arguments (self included) the running method got.
local nargs = 0

-- As the Lua C API words it: `index` counts the object as #1 unless the
-- method was called with `:`; the method's name unless called from C.
local function bad_argument(index, expected, value)
  local level = script_level() + 1
  local got = (value == nil and index > nargs) and "no value" or type(value)
  local method = getinfo(level - 1, "n")
  if method and method.namewhat == "method" then
    index = index - 1
  end
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(index, method and method.name or "?", expected,
    got), level)
end

-- Arguments as the Lua C API checks them (`index` counts the object as #1):
-- a string (numbers are converted), a number, a table.
function M.string_arg(value, index)
  local t = type(value)
  if t == "string" then
    return value
  elseif t == "number" then
    return tostring(value)
  end
  bad_argument(index, "string", value)
end

function M.number_arg(value, index)
  return M.typed_arg(value, index, "number")
end

-- A number truncated to an integer, as luaL_checkinteger reads it.
function M.integer_arg(value, index)
  value = M.typed_arg(value, index, "number")
  return value >= 0 and floor(value) or ceil(value)
end

-- `value`, which must be of Lua type `expected`.
function M.typed_arg(value, index, expected)
  if type(value) ~= expected then
    bad_argument(index, expected, value)
  end
  return value
end

function M.table_arg(value, index)
  if type(value) ~= "table" then
    bad_argument(index, "table", value)
  end
  return value
end

-- Adds the log methods every object of the stock filter has: Envoy's log at
-- its levels (abi.h), in the stock filter's format.
local LOG_LEVELS = { [0] = "logTrace", "logDebug", "logInfo", "logWarn", "logErr", "logCritical" }
local function loggable(class)
  for level, name in pairs(LOG_LEVELS) do
    class[name] = function(_, message)
      message = M.string_arg(message, 2)
      if api.log_enabled(level) ~= 0 then
        message = "script log: " .. message
        api.log(level, message, #message)
      end
    end
  end
  return class
end

-- A class of objects named `name` (in errors), with the log methods.
-- Objects are tables (the stock filter's are userdata: type() differs).
function M.class(name)
  local class = loggable({ __name = name })
  class.__index = class
  return class
end

-- An object of `class` with `object`'s fields. Made at the current epoch:
-- if `class` is `scoped`, it lives until the script's coroutine yields or
-- ends, as the stock filter's objects do.
function M.new(class, object)
  local scope = vm.current
  object.scope, object.epoch = scope, scope.epoch
  setmetatable(object, class)
  -- Not a tail call: a trace returning from Rust's call cannot be compiled.
  return object
end

-- Makes each method of `class` (log methods included) raise the stock
-- filter's error once the object's scope ended, or when called on another
-- object; returns `class`.
function M.scoped(class)
  for name, method in pairs(class) do
    if type(method) == "function" then
      class[name] = function(self, ...)
        if getmetatable(self) ~= class then
          local called = getinfo(1, "n")
          error(("bad argument #1 to '%s' (%s expected, got %s)"):format(called and called.name or "?", class.__name,
            self == nil and "no value" or type(self)), 2)
        elseif self.epoch ~= self.scope.epoch then
          error(OUT_OF_SCOPE, 2)
        end
        nargs = select("#", ...) + 1
        return method(self, ...)
      end
    end
  end
  return class
end

-- Whether `object` (or nil) is still in scope: for objects handed out
-- again until a yield, as the stock filter does.
function M.fresh(object)
  return object ~= nil and object.epoch == object.scope.epoch
end

-- An array of `n` results of type `ctype`, reused while `n` fits.
local arrays = {}
function M.array(ctype, n)
  local cached = arrays[ctype]
  if cached and cached.n >= n then
    return cached.array
  end
  local size = math.max(n, 16)
  local array = ffi.new(ctype .. "[?]", size)
  arrays[ctype] = { n = size, array = array }
  return array
end

return M
