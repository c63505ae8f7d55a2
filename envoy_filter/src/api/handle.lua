-- The handle given to envoy_on_request / envoy_on_response: the methods of
-- the stock Lua filter's stream handle. A method this filter does not have is
-- absent (nil), as in the stock filter, so scripts can probe for it.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")
local headers = require("resty_ffi.envoy.headers")
local body = require("resty_ffi.envoy.body")
local stream_info = require("resty_ffi.envoy.stream_info")
local metadata = require("resty_ffi.envoy.metadata")
local vm = require("resty_ffi.envoy.vm")

local api = base.api
local setmetatable, type, error, tostring, pairs = setmetatable, type, error, tostring, pairs
local lower = string.lower
local gettimeofday

ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } resty_ffi_envoy_timeval;
int gettimeofday(resty_ffi_envoy_timeval *tv, void *tz);
]]
local tv = ffi.new("resty_ffi_envoy_timeval")

-- Envoy's header map types (abi.h) by direction: headers and trailers.
local HEADERS = { [0] = 0, [1] = 2 }

local Handle = {}
Handle.__index = Handle

function Handle:headers()
  if self.reply then
    return headers.reply(self.reply)
  end
  return headers.envoy(self.ctx, HEADERS[self.dir])
end

function Handle:streamInfo()
  return stream_info.new(self.ctx)
end

function Handle:metadata()
  return metadata.route(self.ctx, self.namespace)
end

-- Milliseconds since the epoch.
function Handle:timestamp()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + math.floor(tonumber(tv.tv_usec) / 1000)
end

-- Log methods, at Envoy's levels (abi.h).
for level, name in pairs({ [0] = "logTrace", "logDebug", "logInfo", "logWarn", "logErr", "logCritical" }) do
  Handle[name] = function(_, message)
    if api.log_enabled(level) ~= 0 then
      message = tostring(message)
      api.log(level, message, #message)
    end
  end
end

-- Waits for the whole body; nil when there is none (unless always_wrap).
function Handle:body(always_wrap)
  if self.reply then
    if #self.reply.body == 0 and not always_wrap then
      return nil
    end
    return body.reply(self.reply)
  end
  while true do
    local state = body.state(self.ctx, self.dir)
    if state == "ready" or (state == "none" and always_wrap) then
      return body.envoy(self.ctx, self.dir)
    elseif state == "none" then
      return nil
    end
    vm.wait_body()
  end
end

-- Headers given to respond(): string values, or arrays of strings.
local function reply_headers(t)
  if type(t) ~= "table" then
    error("resty_ffi: respond(): headers must be a table", 3)
  end
  local status
  local list = {}
  for key, value in pairs(t) do
    if type(key) ~= "string" then
      error("resty_ffi: respond(): header names must be strings", 3)
    end
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      local vt = type(v)
      if vt == "number" then
        v = tostring(v)
      elseif vt ~= "string" then
        error("resty_ffi: respond(): header values must be strings, not " .. vt, 3)
      end
      if key == ":status" then
        status = tonumber(v)
      else
        list[#list + 1] = { lower(key), v }
      end
    end
  end
  if not status or status < 100 or status > 999 or status % 1 ~= 0 then
    error("resty_ffi: respond(): headers need a valid :status", 3)
  end
  return status, list
end

-- Sends a local reply; the script ends here. envoy_on_response sees it with
-- the headers Envoy adds to a local reply.
function Handle:respond(hdrs, data)
  if self.dir ~= 0 then
    error("resty_ffi: handle:respond() is not supported in envoy_on_response", 2)
  end
  if data ~= nil and type(data) ~= "string" then
    error("resty_ffi: respond(): the body must be a string", 2)
  end
  local status, list = reply_headers(hdrs)
  local reply = { status = status, headers = list, body = data or "" }
  if #reply.body > 0 then
    local h = headers.reply(reply)
    h:replace("content-length", tostring(#reply.body))
    if not h:get("content-type") then
      h:add("content-type", "text/plain")
    end
  end
  vm.responded(reply)
end

-- make_handle(ctx, dir, reply, namespace): `ctx` the stream (lightuserdata),
-- `dir` 0 request / 1 response, `reply` a local reply that envoy_on_response
-- works on (or nil), `namespace` the route metadata namespace.
return function(ctx, dir, reply, namespace)
  return setmetatable({ ctx = base.ctx(ctx), dir = dir, reply = reply, namespace = namespace }, Handle)
end
