-- resty.ffi.grpc: a gRPC client for proxy Lua, on nginx and Envoy alike.
--
-- The API of lua-resty-ffi-grpc (loadfile, connect, conn:unary,
-- conn:new_stream with send/recv/close_send/close, readfile), plus per-call
-- deadlines and metadata, gRPC status codes as errors, load(source) and
-- decode(type, bytes). Behind it, libresty_ffi_grpc.so (grpc/runtime:
-- tonic on tokio) parses the .proto files and converts messages, so this
-- file needs nothing but resty_ffi: no C module, no cjson, no timers.
--
--   local grpc = require("resty.ffi.grpc")
--   grpc.loadfile("helloworld.proto")
--   local ok, conn = grpc.connect("127.0.0.1:50051")
--   local ok, res = conn:unary("/helloworld.Greeter/SayHello", { name = "foo" })
--   -- ok == false: res is the gRPC code, then the message and a status table
--
-- Tables travel to the runtime as JSON-like text written and read here
-- (byte strings, any scalar as a key); see grpc/runtime/src/text.rs.

require("resty_ffi")

local byte = string.byte
local char = string.char
local concat = table.concat
local error = error
local find = string.find
local format = string.format
local getmetatable = getmetatable
local gsub = string.gsub
local huge = math.huge
local match = string.match
local newproxy = newproxy
local pairs = pairs
local pcall = pcall
local rawget = rawget
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local ok_nkeys, nkeys = pcall(require, "table.nkeys")
if not ok_nkeys then
  nkeys = function(t)
    local n = 0
    for _ in pairs(t) do
      n = n + 1
    end
    return n
  end
end

-- Commands of the runtime (grpc/runtime/src/client.rs).
local LOAD_FILE, LOAD_SOURCE, CONNECT, CLOSE_CONN = 1, 2, 3, 4
local UNARY, NEW_STREAM, SEND, RECV, CLOSE_SEND, CLOSE, DECODE = 5, 6, 7, 8, 9, 10, 11

-- gRPC status codes.
local DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = 4, 8, 13, 14

local _M = { _VERSION = "0.1.0" }

local config = {
  lib = "resty_ffi_grpc",
  threads = 1,
  -- How long resty_ffi waits for any one answer (seconds): past gRPC's own
  -- deadlines, which the runtime enforces.
  timeout = 3600,
}

local include_paths = {}
local protos = {}        -- every loadfile/load, in order
local protos_sent = 0    -- how many of them the runtime has
local conn_ids = {}      -- target and options -> shared connection id
local doomed_streams = {}  -- ids of streams collected unclosed
local doomed_conns = {}    -- private connections collected unclosed


---------------------------------------------------------------------------
-- Text to and from the runtime.

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
for i = 0, 31 do
  local c = char(i)
  escapes[c] = escapes[c] or format("\\u%04x", i)
end

local function quote(s)
  if find(s, '[%c"\\]') then
    s = gsub(s, '[%c"\\]', escapes)
  end
  return '"' .. s .. '"'
end

local function number_text(v)
  if v ~= v then
    return "NaN"
  elseif v == huge then
    return "Infinity"
  elseif v == -huge then
    return "-Infinity"
  elseif v % 1 == 0 then
    return format("%.0f", v)
  end
  return format("%.17g", v)
end

local encode_value

local function scalar_text(v, what)
  local t = type(v)
  if t == "string" then
    return quote(v)
  elseif t == "number" then
    return number_text(v)
  elseif t == "boolean" then
    return v and "true" or "false"
  elseif t == "cdata" then
    -- LuaJIT's int64_t / uint64_t: 123LL, 123ULL.
    local digits = match(tostring(v), "^(%-?%d+)U?LL$")
    if digits then
      return digits
    end
  end
  error("resty.ffi.grpc: cannot send " .. t .. " as " .. what, 0)
end

-- Appends the text of `v` to buf (after index n); returns the new n.
encode_value = function(v, buf, n, depth)
  if type(v) ~= "table" then
    n = n + 1
    buf[n] = scalar_text(v, "a value")
    return n
  end
  if depth > 100 then
    error("resty.ffi.grpc: tables nested too deep (a cycle?)", 0)
  end
  local len = #v
  if len > 0 and nkeys(v) == len then
    n = n + 1
    buf[n] = "["
    for i = 1, len do
      if i > 1 then
        n = n + 1
        buf[n] = ","
      end
      n = encode_value(v[i], buf, n, depth + 1)
    end
    n = n + 1
    buf[n] = "]"
    return n
  end
  n = n + 1
  buf[n] = "{"
  local first = true
  for k, item in pairs(v) do
    if not first then
      n = n + 1
      buf[n] = ","
    end
    first = false
    n = n + 1
    buf[n] = scalar_text(k, "a key")
    n = n + 1
    buf[n] = ":"
    n = encode_value(item, buf, n, depth + 1)
  end
  n = n + 1
  buf[n] = "}"
  return n
end

-- A request: [cmd, args...] (nil args become null).
local function request(cmd, a, b, c, d, e)
  local buf = { "[", cmd }
  local n = 2
  local args = { a, b, c, d, e }
  local last = (e ~= nil and 5) or (d ~= nil and 4) or (c ~= nil and 3) or (b ~= nil and 2) or (a ~= nil and 1) or 0
  for i = 1, last do
    n = n + 1
    buf[n] = ","
    local v = args[i]
    if v == nil then
      n = n + 1
      buf[n] = "null"
    else
      n = encode_value(v, buf, n, 0)
    end
  end
  buf[n + 1] = "]"
  return concat(buf)
end

local decode_value

local function skip_ws(s, i)
  local c = byte(s, i)
  while c == 32 or c == 10 or c == 13 or c == 9 do
    i = i + 1
    c = byte(s, i)
  end
  return i, c
end

local unescapes = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
                    [114] = "\r", [116] = "\t" }

local function utf8(cp)
  if cp < 0x80 then
    return char(cp)
  elseif cp < 0x800 then
    return char(0xc0 + math.floor(cp / 64), 0x80 + cp % 64)
  elseif cp < 0x10000 then
    return char(0xe0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xf0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
              0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function decode_string(s, i)
  -- s[i] is the opening quote.
  local j = find(s, '["\\]', i + 1)
  if not j then
    error("resty.ffi.grpc: unterminated string in the runtime's answer", 0)
  end
  if byte(s, j) == 34 then
    return sub(s, i + 1, j - 1), j + 1
  end
  local parts, n = {}, 0
  local start = i + 1
  while true do
    n = n + 1
    parts[n] = sub(s, start, j - 1)
    if byte(s, j) == 34 then
      return concat(parts), j + 1
    end
    local e = byte(s, j + 1)
    if e == 117 then  -- \uXXXX
      local cp = tonumber(sub(s, j + 2, j + 5), 16)
      start = j + 6
      if cp >= 0xd800 and cp < 0xdc00 and sub(s, start, start + 1) == "\\u" then
        local lo = tonumber(sub(s, start + 2, start + 5), 16)
        cp = 0x10000 + (cp - 0xd800) * 1024 + (lo - 0xdc00)
        start = start + 6
      end
      n = n + 1
      parts[n] = utf8(cp)
    else
      n = n + 1
      parts[n] = unescapes[e] or ""
      start = j + 2
    end
    j = find(s, '["\\]', start)
    if not j then
      error("resty.ffi.grpc: unterminated string in the runtime's answer", 0)
    end
  end
end

local literals = { t = { "true", true }, f = { "false", false }, n = { "null", nil },
                   N = { "NaN", 0 / 0 }, I = { "Infinity", huge } }

-- Returns the value at s[i] and the index after it.
decode_value = function(s, i)
  local c
  i, c = skip_ws(s, i)
  if c == 34 then
    return decode_string(s, i)
  elseif c == 123 or c == 91 then  -- { or [
    local close = c == 123 and 125 or 93
    local t = {}
    local n = 0
    i, c = skip_ws(s, i + 1)
    if c == close then
      return t, i + 1
    end
    while true do
      if close == 93 then
        local v
        v, i = decode_value(s, i)
        n = n + 1
        t[n] = v
      else
        local k, v
        k, i = decode_value(s, i)
        i, c = skip_ws(s, i)
        if c ~= 58 then
          error("resty.ffi.grpc: expected ':' in the runtime's answer", 0)
        end
        v, i = decode_value(s, i + 1)
        t[k] = v
      end
      i, c = skip_ws(s, i)
      if c == close then
        return t, i + 1
      elseif c ~= 44 then
        error("resty.ffi.grpc: expected ',' in the runtime's answer", 0)
      end
      i = i + 1
    end
  elseif c == 45 and sub(s, i, i + 8) == "-Infinity" then
    return -huge, i + 9
  elseif c == 45 or (c and c >= 48 and c <= 57) then
    local j = find(s, "[^%d%+%-%.eE]", i) or #s + 1
    return tonumber(sub(s, i, j - 1)), j
  end
  local lit = literals[c and char(c)]
  if lit and sub(s, i, i + #lit[1] - 1) == lit[1] then
    return lit[2], i + #lit[1]
  end
  error("resty.ffi.grpc: unexpected byte at " .. i .. " of the runtime's answer", 0)
end

-- The values in `s`: a message or nil, then metadata when present.
local function decode_answer(s)
  local v, i = decode_value(s, 1)
  if i <= #s then
    return v, (decode_value(s, i))
  end
  return v
end

_M._encode = function(v)
  local buf = {}
  local n = encode_value(v, buf, 0, 0)
  return concat(buf, "", 1, n)
end
_M._decode = decode_answer


---------------------------------------------------------------------------
-- The runtime.

local rt

local function runtime()
  if rt then
    return rt
  end
  local loaded, err = ngx.load_ffi(config.lib, tostring(config.threads), { timeout = config.timeout })
  if not loaded then
    return nil, "resty.ffi.grpc: cannot load " .. config.lib .. ": " .. tostring(err)
  end
  rt = loaded
  return rt
end

-- false, code, message, status (a table: code, message, details, headers,
-- trailers) from a failed runtime call.
local function failure(rc, err)
  if type(rc) == "string" then
    -- resty_ffi could not pass the call on, or gave up waiting.
    local code = find(rc, "queue full", 1, true) and RESOURCE_EXHAUSTED
                 or find(rc, "in time", 1, true) and DEADLINE_EXCEEDED or UNAVAILABLE
    return false, code, rc, { code = code, message = rc }
  end
  if rc < 1 or rc > 16 then
    -- The runtime failed (a panic): not a gRPC status.
    local msg = "resty.ffi.grpc: runtime error " .. rc .. ": " .. tostring(err)
    return false, INTERNAL, msg, { code = INTERNAL, message = msg }
  end
  local msg, status = err or "", nil
  local z = find(msg, "\0", 1, true)
  if z then
    local ok, info = pcall(decode_value, msg, z + 1)
    status = ok and info or {}
    msg = sub(msg, 1, z - 1)
  else
    status = {}
  end
  status.code = rc
  status.message = msg
  return false, rc, msg, status
end

local flush_pending

-- Sends a request; returns true, answer text or failure(...).
local function call(req)
  local r, err = runtime()
  if not r then
    return false, UNAVAILABLE, err, { code = UNAVAILABLE, message = err }
  end
  if protos_sent < #protos or #doomed_streams > 0 or #doomed_conns > 0 then
    local ok, code, msg, status = flush_pending(r)
    if not ok then
      return false, code, msg, status
    end
  end
  local ok, res, rc_err = r:call(req)
  if ok then
    return true, res
  end
  return failure(res, rc_err)
end

local function proto_request(p)
  if p.source then
    return request(LOAD_SOURCE, p.name, p.source, include_paths)
  end
  return request(LOAD_FILE, p.path, include_paths)
end

-- Before any other request: protos loaded where no call could be made, and
-- the streams and connections collected without close().
flush_pending = function(r)
  while protos_sent < #protos do
    protos_sent = protos_sent + 1
    local p = protos[protos_sent]
    local ok, res, err = r:call(proto_request(p))
    if not ok then
      local _, code, msg, status = failure(res, err)
      msg = "resty.ffi.grpc: " .. (p.path and "loadfile " or "load ") .. (p.path or p.name) .. ": " .. msg
      status.message = msg
      return false, code, msg, status
    end
  end
  if #doomed_streams > 0 or #doomed_conns > 0 then
    local streams, conns = doomed_streams, doomed_conns
    doomed_streams, doomed_conns = {}, {}
    r:call(request(CLOSE, streams))
    for _, id in pairs(conns) do
      r:call(request(CLOSE_CONN, id))
    end
  end
  return true
end

-- Loads a .proto now if this context can wait for the runtime (a request),
-- else on the first call (nginx's init_worker, the top level of an Envoy
-- script): true, or nil and the parse error.
local function add_proto(p)
  protos[#protos + 1] = p
  if protos_sent ~= #protos - 1 then
    return true
  end
  local r = runtime()
  if not r then
    return true
  end
  local called, ok, res, err = pcall(r.call, r, proto_request(p))
  if not called then
    return true   -- cannot wait here: sent with the first call
  end
  protos_sent = #protos
  if ok then
    return true
  end
  local _, _, msg = failure(res, err)
  return nil, "resty.ffi.grpc: " .. (p.path and "loadfile " or "load ") .. (p.path or p.name) .. ": " .. msg
end

local function check_arg(v, want, name, level)
  if type(v) ~= want then
    error("resty.ffi.grpc: " .. name .. " must be a " .. want .. ", got " .. type(v), level + 1)
  end
end

local function check_opt(v, want, name, level)
  if v ~= nil and type(v) ~= want then
    error("resty.ffi.grpc: " .. name .. " must be a " .. want .. " or nil, got " .. type(v), level + 1)
  end
end


---------------------------------------------------------------------------
-- Module functions.

--- Settings, before the first call: lib (library name or path, default
--- "resty_ffi_grpc"), threads (tokio threads per worker, default 1).
function _M.configure(opts)
  check_arg(opts, "table", "opts", 2)
  check_opt(opts.lib, "string", "opts.lib", 2)
  check_opt(opts.threads, "number", "opts.threads", 2)
  if rt then
    error("resty.ffi.grpc: configure before the first call", 2)
  end
  config.lib = opts.lib or config.lib
  config.threads = opts.threads or config.threads
end

--- Adds a directory where imports (and relative loadfile paths) are found.
function _M.add_include_path(dir)
  check_arg(dir, "string", "dir", 2)
  include_paths[#include_paths + 1] = dir
end

--- Parses a .proto file (its imports: include paths, then its directory).
function _M.loadfile(path)
  check_arg(path, "string", "path", 2)
  return add_proto({ path = path })
end

--- Parses .proto source text; `name` is its file name for imports.
local sources = 0
function _M.load(source, name)
  check_arg(source, "string", "source", 2)
  check_opt(name, "string", "name", 2)
  sources = sources + 1
  return add_proto({ source = source, name = name or ("source_" .. sources .. ".proto") })
end

-- A round trip to the runtime without gRPC: answered by its poll thread
-- (`on_tokio` false) or by a tokio task. For the benchmark's breakdown.
_M._ping = function(on_tokio)
  local r = assert(runtime())
  return r:call(on_tokio and "[12]" or "[0]")
end

function _M.readfile(path)
  local f = assert(io.open(path, "rb"))
  local content = f:read("*a")
  f:close()
  return content
end

--- Decodes protobuf bytes as the message type `name` (e.g. the details of a
--- status: decode("google.rpc.Status", status.details)).
function _M.decode(name, bytes)
  check_arg(name, "string", "name", 2)
  check_arg(bytes, "string", "bytes", 2)
  local ok, res, msg, status = call(request(DECODE, name, bytes))
  if not ok then
    return nil, msg, status
  end
  return (decode_answer(res))
end


---------------------------------------------------------------------------
-- Streams.

local Stream = {}
Stream.__index = Stream

local function live_stream(self, level)
  if getmetatable(self) ~= Stream then
    error("resty.ffi.grpc: call stream methods with ':'", level + 1)
  end
  if self.closed then
    error("resty.ffi.grpc: the stream is closed", level + 1)
  end
  return self
end

--- Sends a message: true, or false, code, message, status.
function Stream.send(self, msg)
  live_stream(self, 2)
  check_arg(msg, "table", "message", 2)
  local ok, code, err, status = call(request(SEND, self.id, msg))
  if not ok then
    return false, code, err, status
  end
  return true
end

--- The next message: true, msg; at the end true, nil, {headers, trailers};
--- false, code, message, status when the call failed.
function Stream.recv(self)
  live_stream(self, 2)
  local ok, res, err, status = call(request(RECV, self.id))
  if not ok then
    return false, res, err, status
  end
  return true, decode_answer(res)
end

--- No more messages from this side (the server sees the end).
function Stream.close_send(self)
  live_stream(self, 2)
  local ok, code, err, status = call(request(CLOSE_SEND, self.id))
  if not ok then
    return false, code, err, status
  end
  return true
end

--- Ends the stream; an unfinished call is cancelled.
function Stream.close(self)
  if getmetatable(self) ~= Stream then
    error("resty.ffi.grpc: call stream methods with ':'", 2)
  end
  if self.closed then
    return true
  end
  self.closed = true
  self.guard.id = nil
  local ok, code, err, status = call(request(CLOSE, { self.id }))
  if not ok then
    return false, code, err, status
  end
  return true
end

-- A stream collected without close() is closed with the next call (a
-- finalizer cannot wait for the runtime).
local function guard(id)
  local g = { id = id }
  local proxy = newproxy(true)
  getmetatable(proxy).__gc = function()
    if g.id then
      doomed_streams[#doomed_streams + 1] = g.id
    end
  end
  g.proxy = proxy
  return g
end


---------------------------------------------------------------------------
-- Connections.

local Conn = {}
Conn.__index = Conn

local function live_conn(self, level)
  if getmetatable(self) ~= Conn then
    error("resty.ffi.grpc: call connection methods with ':'", level + 1)
  end
  if self.closed then
    error("resty.ffi.grpc: the connection is closed", level + 1)
  end
  return self
end

local function call_opts(self, opts, level)
  if opts == nil then
    return self.timeout, nil
  end
  check_arg(opts, "table", "opts", level + 1)
  check_opt(opts.timeout, "number", "opts.timeout", level + 1)
  check_opt(opts.metadata, "table", "opts.metadata", level + 1)
  return opts.timeout or self.timeout, opts.metadata
end

--- A unary call: true, reply[, {headers, trailers}], or false, code,
--- message, status. opts: timeout (ms), metadata ({key = value or list}).
function Conn.unary(self, path, msg, opts)
  live_conn(self, 2)
  check_arg(path, "string", "path", 2)
  check_arg(msg, "table", "message", 2)
  local timeout, metadata = call_opts(self, opts, 2)
  local ok, res, err, status = call(request(UNARY, self.id, path, timeout or nil, metadata, msg))
  if not ok then
    return false, res, err, status
  end
  return true, decode_answer(res)
end

--- Opens a stream (any kind: server, client or bidirectional):
--- true, stream or false, code, message, status. opts as for unary; the
--- timeout bounds the whole stream.
function Conn.new_stream(self, path, opts)
  live_conn(self, 2)
  check_arg(path, "string", "path", 2)
  local timeout, metadata = call_opts(self, opts, 2)
  local ok, res, err, status = call(request(NEW_STREAM, self.id, path, timeout or nil, metadata))
  if not ok then
    return false, res, err, status
  end
  local id = tonumber(res)
  return true, setmetatable({ id = id, path = path, closed = false, guard = guard(id) }, Stream)
end

--- Lets this handle go. A shared connection stays open for the next
--- connect() to the same target; a private one (opts.reuse = false) closes.
function Conn.close(self)
  if getmetatable(self) ~= Conn then
    error("resty.ffi.grpc: call connection methods with ':'", 2)
  end
  if self.closed then
    return true
  end
  self.closed = true
  if self.private then
    self.private.id = nil
    local ok, code, err, status = call(request(CLOSE_CONN, self.id))
    if not ok then
      return false, code, err, status
    end
  end
  return true
end

--- Connects to `uri` (host:port, http://..., https://...): true, conn or
--- false, code, message, status. opts: host (TLS server name), ca, cert,
--- priv_key (PEM text: TLS, mTLS), connect_timeout (ms, default 5000),
--- timeout (default deadline of the calls, ms), reuse (default true: one
--- connection per worker for the same uri and TLS options).
function _M.connect(uri, opts)
  check_arg(uri, "string", "uri", 2)
  check_opt(opts, "table", "opts", 2)
  opts = opts or {}
  for _, k in pairs({ "host", "ca", "cert", "priv_key" }) do
    check_opt(opts[k], "string", "opts." .. k, 2)
  end
  check_opt(opts.connect_timeout, "number", "opts.connect_timeout", 2)
  check_opt(opts.timeout, "number", "opts.timeout", 2)
  local tls = { host = opts.host, ca = opts.ca, cert = opts.cert, priv_key = opts.priv_key }
  local reuse = opts.reuse ~= false
  local key = concat({ uri, opts.host or "", opts.ca or "", opts.cert or "", opts.priv_key or "" }, "\0")
  local id = reuse and conn_ids[key]
  local private
  if not id then
    local ok, res, err, status = call(request(CONNECT, uri, tls, opts.connect_timeout))
    if not ok then
      return false, res, err, status
    end
    id = tonumber(res)
    if reuse then
      -- Two first connects at once: the later one's connection is used.
      conn_ids[key] = id
    else
      private = guard(id)
      -- A private connection collected unclosed is closed later.
      getmetatable(private.proxy).__gc = function()
        if private.id then
          doomed_conns[#doomed_conns + 1] = private.id
        end
      end
    end
  end
  return true, setmetatable({ id = id, timeout = opts.timeout, closed = false, private = private }, Conn)
end

return _M
