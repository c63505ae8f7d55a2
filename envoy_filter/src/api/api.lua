-- The function table of the api layer (api/mod.rs) and what every object of
-- this layer shares. Loaded once per VM with the table's address and cdef.
local ffi = require("ffi")

local api_ptr, cdef = ...
local error, pairs, tostring, type = error, pairs, tostring, type

ffi.cdef(cdef)

local api = ffi.cast("const resty_ffi_envoy_api *", api_ptr)

-- Status codes of the table's functions besides their results.
local GONE, PANICKED = -1, -2

local M = {
  api = api,
  -- Scratch space for results; read at once, before the next call.
  buf = ffi.new("resty_ffi_envoy_buf[1]"),
  num = ffi.new("double[1]"),
}

-- Raises for the codes every function may return; else returns `rc`.
-- `level` is the error level of the caller's caller (the script's line).
function M.check(rc, level)
  if rc == GONE then
    error("resty_ffi: the stream is gone", level + 1)
  elseif rc == PANICKED then
    error("resty_ffi: internal error; the stream fails closed", level + 1)
  end
  return rc
end

-- The stream context Rust handed over (lightuserdata), kept alive by Lua
-- until collected.
function M.ctx(ctx)
  return ffi.gc(ffi.cast("void *", ctx), api.ctx_release)
end

-- Raises `message` as the stock filter's methods do: without a position.
function M.fail(message)
  error(message, 0)
end

local function bad_argument(index, expected, value)
  local got = value == nil and "no value" or type(value)
  error("bad argument #" .. index .. " to '?' (" .. expected .. " expected, got " .. got .. ")", 0)
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
  if type(value) ~= "number" then
    bad_argument(index, "number", value)
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
-- its levels (abi.h).
local LOG_LEVELS = { [0] = "logTrace", "logDebug", "logInfo", "logWarn", "logErr", "logCritical" }
function M.loggable(class)
  for level, name in pairs(LOG_LEVELS) do
    class[name] = function(_, message)
      if api.log_enabled(level) ~= 0 then
        message = tostring(message)
        api.log(level, message, #message)
      end
    end
  end
  return class
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
