-- handle:headers() (and trailers): the stream's header maps through the
-- api table, or the headers of a local reply that envoy_on_response is
-- working on (a Lua list of {name, value}).
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")

local api, check, array = base.api, base.check, base.array
local ffi_str = ffi.string
local lower, concat = string.lower, table.concat
local tostring, type = tostring, type

local string_arg = base.string_arg

local function key_arg(key)
  return string_arg(key, 2)
end

local function value_arg(value)
  return string_arg(value, 3)
end

-- Envoy's header maps -------------------------------------------------------

local Headers = base.class("Headers")

local buf = base.buf

-- All values of `key`, joined with "," like Envoy's Lua filter; nothing
-- (not even nil) when there is none.
function Headers:get(key)
  key = key_arg(key)
  local n = check(api.header_get(self.ctx, self.kind, key, #key, 0, buf))
  if n == 0 then
    return
  end
  local first = ffi_str(buf[0].ptr, buf[0].len)
  if n == 1 then
    return first
  end
  local values = { first }
  for i = 1, n - 1 do
    check(api.header_get(self.ctx, self.kind, key, #key, i, buf))
    values[i + 1] = ffi_str(buf[0].ptr, buf[0].len)
  end
  return concat(values, ",")
end

function Headers:getAtIndex(key, index)
  key, index = key_arg(key), base.number_arg(index, 3)
  if index < 0 or index % 1 ~= 0 then
    return
  end
  local n = check(api.header_get(self.ctx, self.kind, key, #key, index, buf))
  if index >= n then
    return
  end
  return ffi_str(buf[0].ptr, buf[0].len)
end

function Headers:getNumValues(key)
  key = key_arg(key)
  return check(api.header_get(self.ctx, self.kind, key, #key, 0, nil))
end

local CONTINUED = -4

-- A loop over the map that has not ended forbids changes until it ends (or
-- the object's scope does), as in the stock filter.
local function modifiable(self)
  if self.iterating then
    base.fail("header map cannot be modified while iterating")
  end
end

local function changed(rc)
  if rc == CONTINUED then
    base.fail("header map can no longer be modified")
  end
  check(rc)
end

function Headers:add(key, value)
  key, value = key_arg(key), value_arg(value)
  modifiable(self)
  changed(api.header_add(self.ctx, self.kind, key, #key, value, #value))
end

function Headers:replace(key, value)
  key, value = key_arg(key), value_arg(value)
  modifiable(self)
  changed(api.header_set(self.ctx, self.kind, key, #key, value, #value))
end

function Headers:remove(key)
  key = key_arg(key)
  modifiable(self)
  changed(api.header_set(self.ctx, self.kind, key, #key, nil, 0))
end

-- Iterates over `list` of {name, value}; `self` is modifiable again once
-- the loop ended.
local function iterate(self, list)
  if self.iterating then
    base.fail("cannot create a second iterator before completing the first")
  end
  self.iterating = true
  local i = 0
  return function()
    i = i + 1
    local h = list[i]
    if h then
      return h[1], h[2]
    end
    self.iterating = false
  end, self, nil
end

-- Iterates over a snapshot taken when the loop starts.
function Headers:__pairs()
  local n = check(api.headers_count(self.ctx, self.kind))
  local list = {}
  if n > 0 then
    local all = array("resty_ffi_envoy_header", n)
    n = check(api.headers_all(self.ctx, self.kind, all, n))
    for i = 0, n - 1 do
      local h = all[i]
      list[i + 1] = { ffi_str(h.key, h.key_len), ffi_str(h.value, h.value_len) }
    end
  end
  return iterate(self, list)
end

-- A local reply's headers -----------------------------------------------------

local ReplyHeaders = base.class("ReplyHeaders")

local function reply_values(reply, key)
  if key == ":status" then
    return { tostring(reply.status) }
  end
  local values = {}
  key = lower(key)
  local list = reply.headers
  for i = 1, #list, 2 do
    if list[i] == key then
      values[#values + 1] = list[i + 1]
    end
  end
  return values
end

function ReplyHeaders:get(key)
  local values = reply_values(self.reply, key_arg(key))
  if #values > 0 then
    return concat(values, ",")
  end
end

function ReplyHeaders:getAtIndex(key, index)
  local values = reply_values(self.reply, key_arg(key))
  index = base.number_arg(index, 3)
  if index % 1 == 0 then
    return values[index + 1]
  end
end

function ReplyHeaders:getNumValues(key)
  return #reply_values(self.reply, key_arg(key))
end

local function reply_add(reply, key, value)
  if key == ":status" then
    reply.status = tonumber(value) or reply.status
  else
    local list = reply.headers
    local n = #list
    list[n + 1], list[n + 2] = lower(key), value
  end
end

local function reply_remove(reply, key)
  key = lower(key)
  local kept, list = {}, reply.headers
  for i = 1, #list, 2 do
    if list[i] ~= key then
      local n = #kept
      kept[n + 1], kept[n + 2] = list[i], list[i + 1]
    end
  end
  reply.headers = kept
end

function ReplyHeaders:add(key, value)
  key, value = key_arg(key), value_arg(value)
  modifiable(self)
  reply_add(self.reply, key, value)
end

function ReplyHeaders:replace(key, value)
  key, value = key_arg(key), value_arg(value)
  modifiable(self)
  reply_remove(self.reply, key)
  reply_add(self.reply, key, value)
end

function ReplyHeaders:remove(key)
  key = key_arg(key)
  modifiable(self)
  reply_remove(self.reply, key)
end

function ReplyHeaders:__pairs()
  local reply = self.reply
  local list, flat = { { ":status", tostring(reply.status) } }, reply.headers
  for i = 1, #flat, 2 do
    list[#list + 1] = { flat[i], flat[i + 1] }
  end
  return iterate(self, list)
end

base.scoped(Headers)
base.scoped(ReplyHeaders)

local M = {}

-- `kind`: Envoy's header map type (0 request, 1 request trailers,
-- 2 response, 3 response trailers), or 4: the request headers as
-- requestHeaders() gives them (modifiable after they went on).
function M.envoy(ctx, kind)
  return base.new(Headers, { ctx = ctx, kind = kind })
end

function M.reply(reply)
  return base.new(ReplyHeaders, { reply = reply })
end

return M
