-- Buffer objects: handle:body()'s whole body of one direction, a chunk of
-- handle:bodyChunks() (valid while its body hook runs), both through the api
-- table; or the body of a local reply that envoy_on_response works on.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")

local api, check, array = base.api, base.check, base.array
local ffi_str = ffi.string
local concat, sub = table.concat, string.sub
local tostring = tostring
local band = require("bit").band

local function range(body, index, length)
  index, length = base.integer_arg(index, 2), base.integer_arg(length, 3)
  if index < 0 or length < 0 or index + length > #body then
    base.fail("index/length must be >= 0 and (index + length) must be <= buffer size")
  end
  return sub(body, index + 1, index + length)
end

-- Envoy's body ------------------------------------------------------------------

local Body = base.class("Body")

-- The body as one string (copied from Envoy's chunks).
local function bytes(self)
  local n = check(api.body_chunks(self.ctx, self.dir, self.part, nil, 0))
  if n == 0 then
    return ""
  end
  local chunks = array("resty_ffi_envoy_buf", n)
  n = check(api.body_chunks(self.ctx, self.dir, self.part, chunks, n))
  if n == 1 then
    return ffi_str(chunks[0].ptr, chunks[0].len)
  end
  local parts = {}
  for i = 0, n - 1 do
    parts[i + 1] = ffi_str(chunks[i].ptr, chunks[i].len)
  end
  return concat(parts)
end

function Body:length()
  return #bytes(self)
end

function Body:getBytes(index, length)
  return range(bytes(self), index, length)
end

-- Returns the new length, as the stock filter does.
function Body:setBytes(data)
  data = base.string_arg(data, 2)
  check(api.body_set(self.ctx, self.dir, self.part, data, #data))
  return #data
end

-- A local reply's body --------------------------------------------------------

local ReplyBody = base.class("ReplyBody")

function ReplyBody:length()
  return #self.reply.body
end

function ReplyBody:getBytes(index, length)
  return range(self.reply.body, index, length)
end

function ReplyBody:setBytes(data)
  data = base.string_arg(data, 2)
  local reply = self.reply
  reply.body = data
  require("resty_ffi.envoy.headers").reply(reply):replace("content-length", tostring(#data))
  return #data
end

base.scoped(Body)
base.scoped(ReplyBody)

local M = {}

-- `dir`: 0 request, 1 response.
function M.envoy(ctx, dir)
  return base.new(Body, { ctx = ctx, dir = dir, part = 0 })
end

-- The current body hook's chunk.
function M.chunk(ctx, dir)
  return base.new(Body, { ctx = ctx, dir = dir, part = 1 })
end

-- bodyChunks()'s iterator: each chunk as it arrives, nil at the end.
function M.chunks(ctx, dir, wait)
  return function()
    while true do
      local state = check(api.next_chunk(ctx, dir))
      if state == 1 then
        return M.chunk(ctx, dir)
      elseif state == 0 then
        return nil
      end
      wait()
    end
  end
end

-- The trailers' state: true (they arrived), false (the stream ended without)
-- or nil (not yet).
function M.trailers(ctx, dir)
  local state = check(api.trailers_state(ctx, dir))
  if state == 2 then
    return nil
  end
  return state == 1
end

function M.reply(reply)
  return base.new(ReplyBody, { reply = reply })
end

-- "none" (the headers ended the stream), "ready" or "pending"; and whether
-- body data went by the script (it was not waiting for a runtime's answers).
local STATES = { [0] = "none", [1] = "ready", [2] = "pending" }
local DATA_SEEN = 4
function M.state(ctx, dir)
  local state = check(api.body_state(ctx, dir))
  return STATES[band(state, 3)], band(state, DATA_SEEN) ~= 0
end

return M
