-- Benchmark handlers (nginx_module/bench/bench.py drives them).
require("resty_ffi")

local M = {}

local function uds_echo(sock, payload)
  local len = #payload
  local ok, err = sock:send({ string.char(bit.band(bit.rshift(len, 24), 255),
    bit.band(bit.rshift(len, 16), 255), bit.band(bit.rshift(len, 8), 255),
    bit.band(len, 255)), payload })
  assert(ok, err)
  local head = assert(sock:receive(4))
  local b1, b2, b3, b4 = head:byte(1, 4)
  return assert(sock:receive(((b1 * 256 + b2) * 256 + b3) * 256 + b4))
end

local function cpu_ticks()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for v in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = v end
  return tonumber(fields[12]) + tonumber(fields[13])   -- utime + stime
end

-- Calls `call` in batches until `seconds` have passed; returns the calls made
-- and the seconds they took.
local function run_for(seconds, batch, call)
  ngx.update_time()
  local t0 = ngx.now()
  local deadline, n = t0 + seconds, 0
  repeat
    for _ = 1, batch do call() end
    n = n + batch
    ngx.update_time()
  until ngx.now() >= deadline
  return n, ngx.now() - t0
end

-- GET /serial?mode=ffi|uds&seconds=&size=&sock=
--   ->  "calls ns_per_call cpu_ticks" (CPU of this worker and its runtime's threads)
function M.serial()
  local args = ngx.req.get_uri_args()
  local seconds, size = tonumber(args.seconds), tonumber(args.size)
  local payload = string.rep("x", size)
  local call
  if args.mode == "ffi" then
    local rt = assert(ngx.load_ffi("rust_echo"))
    call = function()
      local ok, res = rt:echo(payload)
      if not ok or #res ~= size then error("bad echo") end
    end
  else
    local sock = ngx.socket.tcp()
    assert(sock:connect("unix:" .. args.sock))
    call = function()
      if #uds_echo(sock, payload) ~= size then error("bad echo") end
    end
  end
  run_for(0.1, 16, call)   -- warm up
  local cpu0 = cpu_ticks()
  local n, elapsed = run_for(seconds, 16, call)
  ngx.say(string.format("%d %.0f %d", n, elapsed * 1e9 / n, cpu_ticks() - cpu0))
end

-- GET /concurrent?n=&c=&threads=[&lib=&cfg=]  ->  "calls_per_second cpu_ticks"
-- (c coroutines, n calls in all, a rust_echo runtime with `threads` poll
-- threads, or runtime `lib` with `cfg`)
function M.concurrent()
  local args = ngx.req.get_uri_args()
  local n, c = tonumber(args.n), tonumber(args.c)
  local rt = assert(ngx.load_ffi(args.lib or "rust_echo", args.lib and args.cfg or args.threads,
                                 { is_global = args.global ~= nil }))
  local per = math.floor(n / c)
  local function worker()
    for _ = 1, per do
      local ok = rt:echo("0123456789abcdef")
      if not ok then error("call failed") end
    end
  end
  ngx.update_time()
  local cpu0, t0 = cpu_ticks(), ngx.now()
  local threads = {}
  for i = 1, c do threads[i] = ngx.thread.spawn(worker) end
  for i = 1, c do assert(ngx.thread.wait(threads[i])) end
  ngx.update_time()
  ngx.say(string.format("%.0f %d", per * c / (ngx.now() - t0), cpu_ticks() - cpu0))
end

-- GET /ffi: one ffi echo per request (wrk), the answer as the body.
local echo_rt
function M.ffi()
  echo_rt = echo_rt or assert(ngx.load_ffi("rust_echo"))
  local ok, res = echo_rt:echo("hello")
  if not ok then
    return ngx.exit(500)
  end
  ngx.print(res)
end

return M
