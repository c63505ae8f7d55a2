-- Benchmark handlers (nginx_module/bench/nginx_bench.sh drives them).
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

-- GET /serial?mode=ffi|uds&n=&size=  ->  "ns_per_call cpu_ticks"
function M.serial()
  local args = ngx.req.get_uri_args()
  local n, size = tonumber(args.n), tonumber(args.size)
  local payload = string.rep("x", size)
  local call
  if args.mode == "ffi" then
    local rt = assert(ngx.load_ffi("rust_echo"))
    call = function() local ok, res = rt:echo(payload) return res end
  else
    local sock = ngx.socket.tcp()
    assert(sock:connect("unix:" .. args.sock))
    call = function() return uds_echo(sock, payload) end
  end
  for _ = 1, math.min(n, 1000) do assert(#call() == size) end   -- warm up
  ngx.update_time()
  local cpu0, t0 = cpu_ticks(), ngx.now()
  for _ = 1, n do
    if #call() ~= size then error("bad echo") end
  end
  ngx.update_time()
  ngx.say(string.format("%.0f %d", (ngx.now() - t0) * 1e9 / n, cpu_ticks() - cpu0))
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

return M
