-- The handle given to envoy_on_request / envoy_on_response: the methods of
-- the stock Lua filter's stream handle. A method this filter does not have is
-- absent (nil), as in the stock filter, so scripts can probe for it.
local ffi = require("ffi")
local bit = require("bit")
local base = require("resty_ffi.envoy.api")
local headers = require("resty_ffi.envoy.headers")
local body = require("resty_ffi.envoy.body")
local stream_info = require("resty_ffi.envoy.stream_info")
local metadata = require("resty_ffi.envoy.metadata")
local http_call = require("resty_ffi.envoy.http_call")
local stats = require("resty_ffi.envoy.stats")
local vm = require("resty_ffi.envoy.vm")

local fail, string_arg, number_arg, table_arg = base.fail, base.string_arg, base.number_arg, base.table_arg

local type, tostring, tonumber, next, ipairs = type, tostring, tonumber, next, ipairs
local lower, byte, char, sub, concat, floor = string.lower, string.byte, string.char, string.sub, table.concat,
  math.floor
local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift

ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } resty_ffi_envoy_timeval;
int gettimeofday(resty_ffi_envoy_timeval *tv, void *tz);
]]
local tv = ffi.new("resty_ffi_envoy_timeval")

-- The stock filter's global for timestamp() and timestampString().
local MILLISECOND, MICROSECOND = 0, 1
EnvoyTimestampResolution = { MILLISECOND = MILLISECOND, MICROSECOND = MICROSECOND }

-- Envoy's header map types (abi.h) by direction: headers and trailers.
local HEADERS = { [0] = 0, [1] = 2 }
local TRAILERS = { [0] = 1, [1] = 3 }
-- The request headers as requestHeaders() gives them (modifiable after
-- they went on).
local REQUEST_HEADERS_ANYTIME = 4

local fresh = base.fresh

local Handle = base.class("Handle")

-- The object kept in `self[field]` while it is in scope (the stock filter
-- hands out the same one until a yield), else a new one: make(self).
local function kept(self, field, make)
  local object = self[field]
  if not fresh(object) then
    object = make(self)
    self[field] = object
  end
  return object
end

local function make_headers(self)
  if self.reply then
    return headers.reply(self.reply)
  end
  return headers.envoy(self.ctx, HEADERS[self.dir])
end

function Handle:headers()
  return kept(self, "headers_object", make_headers)
end

local function make_request_headers(self)
  return headers.envoy(self.ctx, REQUEST_HEADERS_ANYTIME)
end

-- The request's headers, from either direction.
function Handle:requestHeaders()
  return kept(self, "request_headers_object", make_request_headers)
end

local function make_stream_info(self)
  return stream_info.new(self.ctx)
end

function Handle:streamInfo()
  return kept(self, "stream_info_object", make_stream_info)
end

local function make_metadata(self)
  return metadata.route(self.ctx, self.namespace)
end

function Handle:metadata()
  return kept(self, "metadata_object", make_metadata)
end

function Handle:stats()
  return stats.new(self.ctx)
end

local Connection = base.class("Connection")

-- The downstream TLS connection, or nil for plain text (as
-- streamInfo():downstreamSslConnection()).
function Connection:ssl()
  return stream_info.ssl(self.ctx)
end

local function make_connection(self)
  return base.new(Connection, { ctx = self.ctx })
end

function Handle:connection()
  return kept(self, "connection_object", make_connection)
end

local Route = base.class("Route")

function Route:metadata()
  return metadata.route(self.ctx, self.namespace)
end

function Handle:route()
  return base.new(Route, { ctx = self.ctx, namespace = self.namespace })
end

local FilterContext = base.class("FilterContext")

function FilterContext:get(key)
  return self.values[key]
end

function FilterContext:__pairs()
  return next, self.values, nil
end

-- The route's filter_context (per-route config); empty without one.
function Handle:filterContext()
  return base.new(FilterContext, { values = self.context or {} })
end

local function microseconds()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

-- Milliseconds since the epoch.
function Handle:timestamp(resolution)
  if resolution ~= nil and resolution ~= MILLISECOND then
    fail("timestamp format must be MILLISECOND.")
  end
  return floor(microseconds() / 1000)
end

-- Milliseconds (default) or microseconds since the epoch, as a string.
function Handle:timestampString(resolution)
  local us = microseconds()
  if resolution == nil or resolution == MILLISECOND then
    return ("%.0f"):format(floor(us / 1000))
  elseif resolution == MICROSECOND then
    return ("%.0f"):format(us)
  end
  fail("timestamp format must be MILLISECOND or MICROSECOND.")
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VALUE = {}
for i = 1, #B64 do
  B64_VALUE[byte(B64, i)] = i - 1
end

-- Base64 with padding, as Envoy's Base64::encode.
function Handle:base64Escape(input)
  input = string_arg(input, 2)
  local out = {}
  for i = 1, #input, 3 do
    local a, b, c = byte(input, i, i + 2)
    local n = bor(lshift(a, 16), lshift(b or 0, 8), c or 0)
    out[#out + 1] = char(byte(B64, rshift(n, 18) + 1), byte(B64, band(rshift(n, 12), 63) + 1),
      b and byte(B64, band(rshift(n, 6), 63) + 1) or 61, c and byte(B64, band(n, 63) + 1) or 61)
  end
  return concat(out)
end

-- Decodes base64 (padding optional); nil if the input is not base64.
function Handle:base64Decode(input)
  input = string_arg(input, 2)
  local stripped = input:gsub("=+$", "")
  if #input % 4 == 1 or #stripped % 4 == 1 or #input - #stripped > 2 then
    return nil
  end
  local out, n, bits = {}, 0, 0
  for i = 1, #stripped do
    local v = B64_VALUE[byte(stripped, i)]
    if not v then
      return nil
    end
    n, bits = bor(lshift(n, 6), v), bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = char(band(rshift(n, bits), 255))
    end
  end
  return concat(out)
end

-- The first `length` bytes of `s` (the stock API passes lengths beside strings).
local function prefix(s, length)
  return sub(s, 1, length)
end

local PublicKey = base.class("PublicKey")

-- The key, as verifySignature() takes it (nil if it was not a usable key).
function PublicKey:get()
  return self.der
end

-- A public key from DER (SubjectPublicKeyInfo), for verifySignature().
function Handle:importPublicKey(keyder, length)
  local der = prefix(string_arg(keyder, 2), number_arg(length, 3))
  local valid = base.api.public_key_valid(der, #der) == 1
  return base.new(PublicKey, { der = valid and der or nil })
end

-- true, "" if `signature` of `data` verifies with `pubkey` (a key's get());
-- else false and why, in the stock filter's words.
function Handle:verifySignature(hash, pubkey, signature, signature_length, data, data_length)
  string_arg(hash, 2)
  if string_arg(pubkey, 3) == "" then
    fail("invalid public key")
  end
  signature = prefix(string_arg(signature, 4), number_arg(signature_length, 5))
  data = prefix(string_arg(data, 6), number_arg(data_length, 7))
  local rc = base.api.verify_signature(hash, #hash, pubkey, #pubkey, signature, #signature, data, #data)
  if rc == 1 then
    return true, nil
  elseif rc == -3 then
    return false, hash .. " is not supported."
  elseif rc == -4 then
    return false, "Failed to initialize digest verify."
  end
  return false, "Failed to verify digest. Error code: 0"
end

-- Waits for the whole body (buffered); no value when there is none (unless
-- always_wrap). As in the stock filter, not after the body went by the
-- script unbuffered (bodyChunks(), trailers(), httpCall()).
function Handle:body(always_wrap)
  if self.reply then
    if #self.reply.body == 0 and not always_wrap then
      return
    end
    return kept(self, "body_object", function()
      return body.reply(self.reply)
    end)
  end
  if fresh(self.body_object) then
    return self.body_object
  end
  while true do
    local state, seen = body.state(self.ctx, self.dir)
    if state == "pending" then
      if seen and not self.buffered then
        fail("cannot call body() after body streaming has started")
      end
      self.buffered = true
      vm.wait_body()
    elseif seen and not self.buffered then
      fail("cannot call body() after body has been streamed")
    elseif state == "none" and not always_wrap then
      return
    else
      self.body_object = body.envoy(self.ctx, self.dir)
      return self.body_object
    end
  end
end

-- Each body chunk as it arrives; chunks are not buffered.
function Handle:bodyChunks()
  if self.reply then
    local done = false
    return function()
      if not done then
        done = true
        return body.reply(self.reply)
      end
    end
  end
  local _, seen = body.state(self.ctx, self.dir)
  if seen then
    fail("cannot call bodyChunks after body processing has begun")
  end
  return body.chunks(self.ctx, self.dir, vm.wait_chunk)
end

local function make_trailers(self)
  return headers.envoy(self.ctx, TRAILERS[self.dir])
end

-- The trailers, once the stream's end arrived (the body streams by); no
-- value when there are none.
function Handle:trailers()
  if self.reply then
    return
  end
  while true do
    local present = body.trailers(self.ctx, self.dir)
    if present then
      return kept(self, "trailers_object", make_trailers)
    elseif present == false then
      return
    end
    vm.wait_trailers()
  end
end

function Handle:httpCall(cluster, headers, body, timeout_or_options, asynchronous)
  return http_call.call(self.ctx, self.dir, cluster, headers, body, timeout_or_options, asynchronous)
end

-- Re-selects the route (after the script changed what it depends on).
function Handle:clearRouteCache()
  base.check(base.api.clear_route_cache(self.ctx))
end

-- Routes to `host` (an IP address) if the load balancer has it; with
-- `strict`, a 503 if it has not.
function Handle:setUpstreamOverrideHost(host, strict)
  host = string_arg(host, 2)
  if base.check(base.api.set_upstream_override_host(self.ctx, host, #host, strict and 1 or 0)) == 0 then
    fail("host is not a valid IP address")
  end
end

-- A reply's status as Envoy reads it (absl::SimpleAtoi: spaces around, a
-- sign), or nil. Three digits, the usual case, are read without
-- string.match, which LuaJIT does not compile: the loop over the headers
-- stays one compiled trace.
local function status_of(value)
  if #value == 3 then
    local a, b, c = byte(value, 1, 3)
    if a >= 48 and a <= 57 and b >= 48 and b <= 57 and c >= 48 and c <= 57 then
      return (a - 48) * 100 + (b - 48) * 10 + c - 48
    end
  end
  return value:match("^%s*[+-]?%d+%s*$") and tonumber(value)
end

-- What reply_headers saw besides the list (it never yields, so one table
-- serves every stream).
local seen = { content_type = false }

-- The reply's headers as the C array respond() stages them in (api.reply_stage):
-- filled as the list grows, so no loop over the list is needed afterwards.
local HEADER = "resty_ffi_envoy_header"
local staged, staged_size = ffi.new(HEADER .. "[?]", 16), 16

-- Appends a header to a reply's list and to `staged`, whose entries point
-- into the list's strings.
local function append(list, name, value)
  local n = #list
  list[n + 1], list[n + 2] = name, value
  local i = rshift(n, 1)
  if i == staged_size then
    local bigger = ffi.new(HEADER .. "[?]", 2 * staged_size)
    ffi.copy(bigger, staged, ffi.sizeof(HEADER) * staged_size)
    staged, staged_size = bigger, 2 * staged_size
  end
  local header = staged[i]
  header.key, header.key_len, header.value, header.value_len = name, #name, value, #value
end

-- Headers given to respond(): string values, or arrays of strings. Errors
-- name the stock filter's stack slots (key #4, value #5, array element #7).
-- With a body, Envoy's content-length replaces the script's.
local function reply_header(key, name, value, index, list, status, has_body)
  value = string_arg(value, index)
  if key == ":status" then
    return status_of(value)
  elseif name == "content-type" then
    seen.content_type = true
  elseif name == "content-length" and has_body then
    return status
  end
  append(list, name, value)
  return status
end

-- One entry of the table given to respond(); returns the status so far.
local function reply_entry(key, value, list, status, has_body)
  if type(key) == "number" then
    -- The stock filter converts the key in place, which breaks its loop.
    fail("invalid key to 'next'")
  end
  key = string_arg(key, 4)
  local name = lower(key)
  if type(value) == "table" then
    for _, v in ipairs(value) do
      status = reply_header(key, name, v, 7, list, status, has_body)
    end
    return status
  end
  return reply_header(key, name, value, 5, list, status, has_body)
end

local function reply_headers(t, has_body)
  table_arg(t, 2)
  local status
  local list = {}
  seen.content_type = false
  -- The first entry outside the loop: for the usual one-entry table the
  -- loop never runs, and LuaJIT compiles respond() whole (a loop that runs
  -- once per call aborts its traces, and respond() ran interpreted).
  local key, value = next(t)
  if key ~= nil then
    status = reply_entry(key, value, list, status, has_body)
    key, value = next(t, key)
    while key ~= nil do
      status = reply_entry(key, value, list, status, has_body)
      key, value = next(t, key)
    end
  end
  if not status or status < 200 or status > 599 then
    fail(":status must be between 200-599")
  end
  return status, list
end

-- Sends a local reply; the script ends here. envoy_on_response sees it with
-- the headers Envoy adds to a local reply: with a body, its length and
-- (unless the script gave one) text/plain.
function Handle:respond(hdrs, data)
  if self.dir ~= 0 then
    fail("respond not currently supported in the response path")
  end
  if base.check(base.api.headers_continued(self.ctx, 0)) == 1 then
    fail("respond() cannot be called if headers have been continued")
  end
  data = data ~= nil and string_arg(data, 3) or ""
  local has_body = #data > 0
  local status, list = reply_headers(hdrs, has_body)
  if has_body then
    append(list, "content-length", tostring(#data))
    if not seen.content_type then
      append(list, "content-type", "text/plain")
    end
  end
  -- `list` keeps the strings `staged` points to alive during the call.
  base.check(base.api.reply_stage(self.ctx, status, staged, rshift(#list, 1), data, #data))
  vm.responded({ status = status, headers = list, body = data })
end

-- make_handle(ctx, dir, reply, namespace, context): `ctx` the stream
-- (its id), `dir` 0 request / 1 response, `reply` a local reply that
-- envoy_on_response works on (or nil), `namespace` the route metadata
-- namespace, `context` the route's filter_context (a table, or nil).
base.scoped(Handle)
base.scoped(Connection)
base.scoped(Route)
base.scoped(PublicKey)

return function(ctx, dir, reply, namespace, context)
  local handle = base.new(Handle, { ctx = ctx, dir = dir, reply = reply, namespace = namespace,
    context = context })
  return handle
end
