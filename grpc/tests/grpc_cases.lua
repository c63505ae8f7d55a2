-- The cases of grpc/tests/test_grpc.py: the same file on nginx and Envoy.
-- run(name, arg) returns "ok" or what went wrong. The servers' ports and
-- the generated certificates come from grpc_test_env.lua (written by the
-- test).

local grpc = require("resty.ffi.grpc")
local env = require("grpc_test_env")

local M = {}

-- Loaded at the top level: on nginx in init_worker (no call can wait
-- there), on Envoy when the script loads; sent with the first call.
grpc.add_include_path(env.protos)
assert(grpc.loadfile("helloworld.proto"))
assert(grpc.loadfile(env.protos .. "/route_guide.proto"))
assert(grpc.loadfile("echo.proto"))
assert(grpc.loadfile("test.proto"))

local ADDR = "127.0.0.1:" .. env.port

local function fail(msg, level)
  error(msg, (level or 1) + 1)
end

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then
    return string.format("%q", v)
  elseif type(v) ~= "table" then
    return tostring(v)
  elseif depth > 5 then
    return "{...}"
  end
  local keys = {}
  for k in pairs(v) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do
    out[#out + 1] = "[" .. show(k) .. "]=" .. show(v[k], depth + 1)
  end
  return "{" .. table.concat(out, ",") .. "}"
end

local function eq(a, b)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) ~= "table" then
    return a == b or (a ~= a and b ~= b)
  end
  for k, v in pairs(a) do
    if not eq(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function expect_eq(got, want, what)
  if not eq(got, want) then
    fail((what or "value") .. ": got " .. show(got) .. ", want " .. show(want), 2)
  end
end

local function expect(cond, ...)
  if not cond then
    local parts = {}
    for i = 1, select("#", ...) do
      parts[#parts + 1] = show((select(i, ...)))
    end
    fail("expected: " .. table.concat(parts, " "), 2)
  end
end

local function connect(opts)
  local ok, conn, err = grpc.connect(ADDR, opts)
  expect(ok, "connect", conn, err)
  return conn
end

local clock
do
  local ffi = require("ffi")
  -- resty_ffi.lua declares these on Envoy.
  if not pcall(ffi.typeof, "resty_ffi_timespec") then
    ffi.cdef("typedef struct { long tv_sec; long tv_nsec; } resty_ffi_timespec;"
             .. " int clock_gettime(int clk_id, resty_ffi_timespec *tp);")
  end
  local ts = ffi.new("resty_ffi_timespec")
  clock = function()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
end

local cases = {}

-- The original's README, unchanged but for the address (arg: another
-- server's port, such as the grpcio one).
function cases.original_readme(arg)
  local ok, conn = grpc.connect(arg ~= "" and arg and ("127.0.0.1:" .. arg) or ADDR)
  assert(ok)
  local ok, res = conn:unary("/helloworld.Greeter/SayHello", { name = "foobar" })
  assert(ok)
  assert(res.message == "Hello foobar!")

  local ok, stream = conn:new_stream("/routeguide.RouteGuide/ListFeatures")
  assert(ok)
  local rectangle = {
    lo = { latitude = 400000000, longitude = -750000000 },
    hi = { latitude = 420000000, longitude = -730000000 },
  }
  assert(stream:send(rectangle))
  assert(stream:close_send())
  local names = {}
  while true do
    local ok, res = stream:recv()
    assert(ok)
    if not res then
      break
    end
    names[#names + 1] = res.name
  end
  expect_eq(names, { "feature-0", "feature-1", "feature-2" }, "ListFeatures")

  local ok, stream = conn:new_stream("/routeguide.RouteGuide/RecordRoute")
  assert(ok)
  for i = 1, 3 do
    local point = { latitude = 409146138 + i * 100, longitude = -746188906 + i * 50 }
    assert(stream:send(point))
  end
  assert(stream:send({ latitude = 410000000, longitude = -740000000 }))  -- feature-1
  assert(stream:close_send())
  local ok, res = stream:recv()
  assert(ok)
  expect_eq(res, { point_count = 4, feature_count = 1, distance = 0, elapsed_time = 0 }, "RecordRoute")
  local ok, res = stream:recv()
  assert(ok and not res)
  assert(stream:close())

  local ok, stream = conn:new_stream("/routeguide.RouteGuide/RouteChat")
  assert(ok)
  for i = 1, 3 do
    local note = {
      location = { latitude = 409146138 + i * 100, longitude = -746188906 + i * 50 },
      message = string.format("note-%d", i),
    }
    assert(stream:send(note))
    local ok, res = stream:recv()
    assert(ok)
    expect_eq(res, { location = note.location, message = "echo: note-" .. i }, "RouteChat")
  end
  assert(stream:close())
  assert(conn:close())
  return "ok"
end

local EVERYTHING = {
  s = "héllo \"quoted\" \\ \n\t\0 end",
  b = "\0\1\2\255\254 binary \"",
  i64 = -9007199254740993LL,   -- beyond a double: int64 cdata
  u64 = "18446744073709551615",
  s32 = -42,
  d = 0.1,
  flag = true,
  color = "BLUE",
  point = { x = 1, y = -2 },
  points = { { x = 3 }, { y = 4 } },
  nums = { 1, -1, 2147483647 },
  counts = { a = 1, ["b c"] = 2 },
  names = { [7] = "seven", [-1] = "minus one" },
  number = 7,
  f = 1.5,
  fx = 12345678901,
  maybe = 0,
}

function cases.everything_roundtrip()
  local conn = connect()
  local ok, res = conn:unary("/test.Test/Echo", EVERYTHING)
  expect(ok, res)
  local want = {
    s = EVERYTHING.s, b = EVERYTHING.b, i64 = "-9007199254740993", u64 = "18446744073709551615",
    s32 = -42, d = 0.1, flag = true, color = "BLUE", point = { x = 1, y = -2 },
    points = { { x = 3, y = 0 }, { x = 0, y = 4 } }, nums = { 1, -1, 2147483647 },
    counts = { a = 1, ["b c"] = 2 }, names = { [7] = "seven", [-1] = "minus one" },
    number = 7, f = 1.5, fx = 12345678901, maybe = 0,
  }
  expect_eq(res, want, "Echo")
  -- Defaults: scalars without presence come back with their zero value,
  -- repeated and map fields as empty tables; unset messages, oneofs and
  -- optionals stay nil.
  local ok, res = conn:unary("/test.Test/Echo", {})
  expect(ok, res)
  expect_eq(res, { s = "", b = "", i64 = 0, u64 = 0, s32 = 0, d = 0, flag = false, color = "RED",
                   points = {}, nums = {}, counts = {}, names = {}, f = 0, fx = 0 }, "defaults")
  -- Enums by number, camelCase names, numbers in strings.
  local ok, res = conn:unary("/test.Test/Echo", { color = 1, text = "t", i64 = "12" })
  expect(ok, res)
  expect(res.color == "GREEN" and res.text == "t" and res.i64 == 12 and res.number == nil, res)
  return "ok"
end

-- A 1 MiB bytes field and 10,000 repeated values, both ways.
function cases.large()
  local conn = connect()
  local blob = string.rep("\0\1\2\255 xyz\"\\", 104858):sub(1, 1048576)
  local nums = {}
  for i = 1, 10000 do
    nums[i] = i * 7 - 35000
  end
  local ok, res = conn:unary("/test.Test/Echo", { b = blob, nums = nums, s = string.rep("é", 50000) })
  expect(ok, res)
  expect(res.b == blob and #res.b == 1048576, "blob", #res.b)
  expect_eq(res.nums, nums, "nums")
  expect(res.s == string.rep("é", 50000), "s")
  return "ok"
end

-- What the server's own (prost) types decoded: the encoding is right, not
-- only symmetric.
function cases.server_sees()
  local conn = connect()
  local ok, res = conn:unary("/test.Test/Inspect", EVERYTHING)
  expect(ok, res)
  for _, want in ipairs({
    'i64: -9007199254740993', 'u64: 18446744073709551615', 's32: -42', 'd: 0.1', 'flag: true',
    'color: Blue', 'point: Some(XyPoint { x: 1, y: -2 })', 'nums: [1, -1, 2147483647]',
    'counts: {"a": 1, "b c": 2}', 'names: {-1: "minus one", 7: "seven"}', 'choice: Some(Number(7))',
    'f: 1.5', 'fx: 12345678901', 'maybe: Some(0)', 'b: [0, 1, 2, 255, 254, 32,',
  }) do
    if not res.text:find(want, 1, true) then
      fail("server decoded " .. res.text .. "; missing " .. want)
    end
  end
  return "ok"
end

function cases.metadata()
  local conn = connect()
  local ok, res, md = conn:unary("/test.Test/Echo", { s = "x" }, {
    metadata = { ["x-token"] = "abc", ["X-Multi"] = { "1", "2" }, ["x-data-bin"] = "\0\1\255", other = "no" },
  })
  expect(ok, res)
  expect_eq(md.headers, { ["x-token"] = "abc", ["x-multi"] = { "1", "2" }, ["x-data-bin"] = "\0\1\255" }, "headers")
  expect_eq(md.trailers, {}, "trailers")
  -- Without metadata there is none to return.
  local ok, res, md = conn:unary("/test.Test/Echo", { s = "x" })
  expect(ok and md == nil, res, md)
  return "ok"
end

function cases.status_error()
  local conn = connect()
  local ok, code, msg, status = conn:unary("/test.Test/Control", { fail_code = 5, fail_message = "no such thing" },
                                           { metadata = { ["x-req"] = "1" } })
  expect(not ok and code == 5 and msg == "no such thing", ok, code, msg)
  expect(status.code == 5 and status.message == msg, status)
  expect(status.trailers["x-failure"] == "yes", status)
  -- The details: a google.rpc.Status holding a test.Point.
  assert(grpc.load([[
    syntax = "proto3";
    package google.rpc;
    import "google/protobuf/any.proto";
    message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
  ]], "google/rpc/status.proto"))
  local detail = assert(grpc.decode("google.rpc.Status", status.details))
  expect(detail.code == 5 and detail.message == "no such thing", detail)
  expect(detail.details[1].type_url == "type.googleapis.com/test.Point", detail)
  expect_eq(grpc.decode("test.Point", detail.details[1].value), { x = 1, y = 2 }, "detail")
  local res, err = grpc.decode("no.Such", "")
  expect(res == nil and err:find("unknown message type", 1, true), err)
  return "ok"
end

function cases.deadline()
  local conn = connect()
  local t0 = clock()
  local ok, code, msg = conn:unary("/test.Test/Control", { delay_ms = 3000 }, { timeout = 200 })
  local took = clock() - t0
  expect(not ok and code == 4 and msg:find("deadline", 1, true), ok, code, msg)
  expect(took > 0.15 and took < 2, "took", took)
  -- The connection's default deadline.
  local ok, conn2 = grpc.connect(ADDR, { timeout = 100 })
  assert(ok)
  local ok, code = conn2:unary("/test.Test/Control", { delay_ms = 3000 })
  expect(not ok and code == 4, ok, code)
  local ok = conn2:unary("/test.Test/Control", { delay_ms = 10 }, { timeout = 2000 })
  expect(ok, "per-call timeout overrides the connection's")
  -- A stream's deadline bounds the whole stream.
  local ok, stream = conn:new_stream("/test.Test/Ticks", { timeout = 300 })
  assert(ok)
  assert(stream:send({ count = 0, interval_ms = 100 }))
  local n, ok2, code2 = 0, true, nil
  while ok2 do
    local res
    ok2, res = stream:recv()
    if ok2 then
      n = n + 1
    else
      code2 = res
    end
  end
  expect(code2 == 4 and n >= 2 and n <= 5, code2, n)
  stream:close()
  return "ok"
end

function cases.bad_input()
  local conn = connect()
  local ok, code, msg = conn:unary("/helloworld.Greeter/Nope", {})
  expect(not ok and code == 12 and msg:find("unknown method", 1, true), code, msg)
  local ok, code, msg = conn:unary("/helloworld.Greeter/SayHello", { nam = "x" })
  expect(not ok and code == 3 and msg:find('no field named "nam"', 1, true), code, msg)
  local ok, code, msg = conn:unary("/helloworld.Greeter/SayHello", { name = 5 })
  expect(not ok and code == 3 and msg:find("field name: expected a string, got a number", 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", { point = { x = 1.5 } })
  expect(not ok and code == 3 and msg:find("field point.x: expected an integer", 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", { nums = { 1, "a" } })
  expect(not ok and code == 3 and msg:find("nums.[2]", 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", { color = "PURPLE" })
  expect(not ok and code == 3 and msg:find('"PURPLE" is not a value of enum test.Color', 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", { s = "\255" })
  expect(not ok and code == 3 and msg:find("UTF-8", 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", { s32 = 2 ^ 40 })
  expect(not ok and code == 3 and msg:find("out of range", 1, true), code, msg)
  local ok, code, msg = conn:unary("/routeguide.RouteGuide/ListFeatures", {})
  expect(not ok and code == 3 and msg:find("streaming method", 1, true), code, msg)
  local ok, code, msg = conn:unary("/test.Test/Echo", {}, { metadata = { ["bad key"] = "v" } })
  expect(not ok and code == 3 and msg:find("metadata", 1, true), code, msg)
  -- Misuse raises, at the caller.
  local called, err = pcall(conn.unary, conn, nil, {})
  expect(not called and err:find("path must be a string", 1, true), err)
  local called, err = pcall(function() return conn.unary({}, "/a/b", {}) end)
  expect(not called and err:find("with ':'", 1, true), err)
  local called, err = pcall(conn.unary, conn, "/test.Test/Echo", { f = function() end })
  expect(not called and err:find("cannot send function", 1, true), err)
  -- Bad protos.
  local ok, err = grpc.load('syntax = "proto3";\nmessage {', "bad.proto")
  expect(ok == nil and err:find("bad.proto:2", 1, true), ok, err)
  local ok, err = grpc.loadfile("/nonexistent/x.proto")
  expect(ok == nil and err:find("no such file", 1, true), ok, err)
  local ok, err = grpc.load('syntax = "proto3"; import "missing.proto";', "imports.proto")
  expect(ok == nil and err:find("missing.proto", 1, true), ok, err)
  -- A proto that failed does not break the next.
  assert(grpc.load('syntax = "proto3"; package later; message M { string a = 1; }', "later.proto"))
  expect_eq(grpc.decode("later.M", "\10\1z"), { a = "z" }, "later.M")
  return "ok"
end

function cases.unreachable()
  local t0 = clock()
  local ok, code, msg = grpc.connect("127.0.0.1:" .. env.closed_port, { connect_timeout = 2000 })
  expect(not ok and code == 14 and msg:find("connect", 1, true), ok, code, msg)
  expect(clock() - t0 < 3, "took", clock() - t0)
  local ok, code, msg = grpc.connect("http://[bad", {})
  expect(not ok and code == 3, ok, code, msg)
  return "ok"
end

function cases.tls()
  local ca = grpc.readfile(env.certs .. "/ca.pem")
  local ok, conn, msg = grpc.connect("127.0.0.1:" .. env.tls_port, { host = "example.com", ca = ca })
  expect(ok, conn, msg)
  local ok, res = conn:unary("/grpc.examples.echo.Echo/UnaryEcho", { message = "hello" })
  expect(ok and res.message == "hello", res)
  -- The wrong name for the certificate.
  local ok, code, msg = grpc.connect("127.0.0.1:" .. env.tls_port, { host = "other.org", ca = ca })
  expect(not ok and code == 14, ok, code, msg)
  -- mTLS: the original's options.
  local ok, conn = grpc.connect("127.0.0.1:" .. env.mtls_port, {
    host = "example.com",
    ca = ca,
    cert = grpc.readfile(env.certs .. "/client.pem"),
    priv_key = grpc.readfile(env.certs .. "/client.key"),
  })
  expect(ok, conn)
  local ok, res = conn:unary("/grpc.examples.echo.Echo/UnaryEcho", { message = "mutual" })
  expect(ok and res.message == "mutual", res)
  -- Without a client certificate the server refuses.
  local ok, conn = grpc.connect("127.0.0.1:" .. env.mtls_port, { host = "example.com", ca = ca })
  local code, msg
  if ok then
    ok, code, msg = conn:unary("/grpc.examples.echo.Echo/UnaryEcho", { message = "x" })
  else
    code, msg = conn, msg
  end
  expect(not ok and code == 14, ok, code, msg)
  local called, err = pcall(grpc.connect, ADDR, { cert = 5 })
  expect(not called and err:find("opts.cert must be a string", 1, true), err)
  return "ok"
end

function cases.streams()
  local conn = connect()
  -- Server streaming that ends with an error status after its messages.
  local ok, stream = conn:new_stream("/test.Test/Ticks")
  assert(ok)
  assert(stream:send({ count = 3, fail_code = 9, fail_message = "enough" }))
  assert(stream:close_send())
  local got = {}
  while true do
    local ok, res, msg, status = stream:recv()
    if not ok then
      expect(res == 9 and msg == "enough" and status.trailers["x-failure"] == "yes", res, msg, status)
      break
    end
    got[#got + 1] = res.text
  end
  expect_eq(got, { "tick 1", "tick 2", "tick 3" }, "ticks")
  -- Errors repeat; send after close_send fails.
  local ok, code = stream:recv()
  expect(not ok and code == 9, ok, code)
  local ok, code, msg = stream:send({})
  expect(not ok and code == 9 and msg:find("close_send", 1, true), ok, code, msg)
  stream:close()
  local called, err = pcall(stream.recv, stream)
  expect(not called and err:find("stream is closed", 1, true), err)
  -- Bidirectional, many messages, headers and the end's metadata.
  local ok, stream = conn:new_stream("/routeguide.RouteGuide/RouteChat", { metadata = { ["x-chat"] = "1" } })
  assert(ok)
  for i = 1, 50 do
    assert(stream:send({ message = "m" .. i }))
    local ok, res = stream:recv()
    expect(ok and res.message == "echo: m" .. i, res)
  end
  assert(stream:close_send())
  local ok, res, md = stream:recv()
  expect(ok and res == nil, ok, res)
  local ok, res = stream:recv()
  expect(ok and res == nil, "end repeats", ok, res)
  assert(stream:close())
  -- Unknown method.
  local ok, code, msg = conn:new_stream("/routeguide.RouteGuide/Nope")
  expect(not ok and code == 12, ok, code, msg)
  return "ok"
end

-- The grpcio server (generated code): metadata, status, deadline.
function cases.grpcio(arg)
  local ok, conn = grpc.connect("127.0.0.1:" .. arg)
  expect(ok, conn)
  local ok, res, md = conn:unary("/helloworld.Greeter/SayHello", { name = "py" },
                                 { metadata = { ["x-token"] = "t1" } })
  expect(ok and res.message == "Hello py!", res)
  expect(md.headers["x-server"] == "python" and md.headers["x-token-echo"] == "t1", md)
  local ok, code, msg, status = conn:unary("/helloworld.Greeter/SayHello", { name = "fail" })
  expect(not ok and code == 7 and msg == "not you" and status.trailers["x-why"] == "asked", ok, code, msg, status)
  local ok, code = conn:unary("/helloworld.Greeter/SayHello", { name = "slow" }, { timeout = 200 })
  expect(not ok and code == 4, ok, code)
  local ok, res = conn:unary("/routeguide.RouteGuide/GetFeature", { latitude = 410000000, longitude = -740000000 })
  expect(ok and res.name == "feature-1", res)
  return cases.original_readme(arg)
end

-- A stream closed early is cancelled on the server.
function cases.stream_close_cancels()
  local conn = connect()
  local function stats()
    local ok, res = conn:unary("/test.Test/Stats", {})
    assert(ok, res)
    return res
  end
  local before = stats()
  local ok, stream = conn:new_stream("/test.Test/Ticks")
  assert(ok)
  assert(stream:send({ count = 0, interval_ms = 20 }))
  for _ = 1, 3 do
    assert(stream:recv())
  end
  assert(stream:close())
  for _ = 1, 200 do
    local now = stats()
    if now.cancelled > before.cancelled then
      return "ok"
    end
  end
  fail("the server saw no cancellation")
end

-- For the abort test: a stream the client will walk away from.
function cases.endless_stream()
  local conn = connect()
  local ok, stream = conn:new_stream("/test.Test/Ticks")
  assert(ok)
  assert(stream:send({ count = 0, interval_ms = 50 }))
  for _ = 1, 200 do
    assert(stream:recv())
  end
  return "not aborted"
end

-- Collects garbage (streams dropped unclosed) and returns the server's counters.
function cases.stats()
  collectgarbage()
  collectgarbage()
  local conn = connect()
  local ok, res = conn:unary("/test.Test/Stats", {})
  expect(ok, res)
  return string.format("started=%d cancelled=%d finished=%d unary=%d", res.started, res.cancelled,
                       res.finished, res.unary)
end

-- One call with a delay: the concurrency test sends many at once.
function cases.slow(arg)
  local conn = connect()
  local ok, res, msg = conn:unary("/test.Test/Control", { delay_ms = tonumber(arg) or 300 })
  expect(ok and res.text == "done", res, msg)
  return "ok"
end

-- One hello: the restart test; "code N" on failure.
function cases.hello()
  local conn = connect()
  local ok, res, msg = conn:unary("/helloworld.Greeter/SayHello", { name = "again" })
  if not ok then
    return "code " .. tostring(res) .. ": " .. tostring(msg)
  end
  expect(res.message == "Hello again!", res)
  return "ok"
end

-- Repeated calls from one request (the benchmark's unit): "ok".
function cases.loop(arg)
  local conn = connect()
  for _ = 1, tonumber(arg) or 100 do
    local ok, res = conn:unary("/helloworld.Greeter/SayHello", { name = "foobar" })
    if not ok or res.message ~= "Hello foobar!" then
      fail("call failed: " .. tostring(res))
    end
  end
  return "ok"
end

-- The benchmark's unit: `arg` SayHello calls one after another; "ok" and
-- each call's time in µs.
function cases.bench(arg)
  local n = tonumber(arg) or 1000
  local conn = connect()
  local lat = {}
  for i = 1, n do
    local t = clock()
    local ok, res = conn:unary("/helloworld.Greeter/SayHello", { name = "foobar" })
    lat[i] = (clock() - t) * 1e6
    if not ok or res.message ~= "Hello foobar!" then
      fail("call failed: " .. tostring(res))
    end
  end
  for i = 1, n do
    lat[i] = string.format("%.1f", lat[i])
  end
  return "ok " .. table.concat(lat, ",")
end

-- The breakdown: `arg` round trips to the runtime without gRPC, answered
-- by its poll thread (mode "poll") or by a tokio task ("tokio").
function cases.ping(arg)
  local mode, n = arg:match("^(%a+)/(%d+)$")
  local lat = {}
  for i = 1, tonumber(n) do
    local t = clock()
    assert(grpc._ping(mode == "tokio"))
    lat[i] = string.format("%.1f", (clock() - t) * 1e6)
  end
  return "ok " .. table.concat(lat, ",")
end

-- A bidirectional stream of `arg` notes (many run at once in the
-- concurrency test).
function cases.chat(arg)
  local conn = connect()
  local ok, stream = conn:new_stream("/routeguide.RouteGuide/RouteChat", { timeout = 20000 })
  expect(ok, stream)
  for i = 1, tonumber(arg) or 10 do
    assert(stream:send({ message = "m" .. i }))
    local ok, res, msg = stream:recv()
    expect(ok and res.message == "echo: m" .. i, ok, res, msg)
  end
  assert(stream:close_send())
  local ok, res = stream:recv()
  expect(ok and res == nil, ok, res)
  assert(stream:close())
  return "ok"
end

-- Private connections close; shared ones are reused.
function cases.connections()
  local ok, a = grpc.connect(ADDR)
  local ok2, b = grpc.connect(ADDR)
  expect(ok and ok2 and a.id == b.id, "shared", a.id, b.id)
  local ok, p = grpc.connect(ADDR, { reuse = false })
  expect(ok and p.id ~= a.id, "private")
  assert(p:close())
  local called, err = pcall(p.unary, p, "/helloworld.Greeter/SayHello", {})
  expect(not called and err:find("connection is closed", 1, true), err)
  assert(a:close())
  local ok, res = b:unary("/helloworld.Greeter/SayHello", { name = "b" })
  expect(ok and res.message == "Hello b!", "b still works after a:close()", res)
  return "ok"
end

function M.run(name, arg)
  local case = cases[name]
  if not case then
    return "no case " .. tostring(name)
  end
  local ok, res = pcall(case, arg)
  if not ok then
    return "FAILED: " .. tostring(res)
  end
  return res
end

return M
