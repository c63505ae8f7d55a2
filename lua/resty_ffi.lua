-- resty_ffi: call runtime libraries (Go, Rust, Python, Java, Node.js, C) from
-- proxy Lua without blocking. The same file runs on nginx (lua-nginx-module)
-- and inside the resty_ffi Envoy filter; see SPEC.md §1 for the API.
--
--   require("resty_ffi")
--   local rt, err = ngx.load_ffi("rust_echo", cfg, { max_queue = 1024 })
--   local ok, res_or_rc, err = rt:echo("hello")
--
-- A call passes one string to the runtime: neither the method name nor any
-- further argument reaches it (on Envoy the stream handle may follow the
-- request, as in the original's examples; it is not passed either).

local ffi = require("ffi")

local C = ffi.C
local ffi_gc = ffi.gc
local ffi_new = ffi.new
local ffi_str = ffi.string
local error = error
local pcall = pcall
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local tonumber = tonumber
local type = type
local byte = string.byte
local format = string.format

ffi.cdef[[
typedef struct resty_ffi_runtime resty_ffi_runtime;
typedef struct resty_ffi_sink resty_ffi_sink;
typedef struct resty_ffi_completion {
  uint64_t token;
  int rc;
  char *rsp;
  size_t rsp_len;
  const char *err;
} resty_ffi_completion;

resty_ffi_runtime *resty_ffi_runtime_load(const char *lib, const char *cfg,
    size_t cfg_len, size_t max_queue, int is_global, int unpin, int shared,
    int *init_rc, char *err, size_t err_len);
int resty_ffi_runtime_post(const resty_ffi_runtime *rt,
    const resty_ffi_sink *sink, uint64_t token, const char *req, size_t len);
int resty_ffi_runtime_unload(const resty_ffi_runtime *rt);
void resty_ffi_runtime_free(resty_ffi_runtime *rt);
size_t resty_ffi_sink_drain(const resty_ffi_sink *sink,
    resty_ffi_completion *out, size_t max);
int resty_ffi_sink_spin(const resty_ffi_sink *sink, uint32_t max_us);
int resty_ffi_sink_wake_in(const resty_ffi_sink *sink, uint64_t token,
    uint32_t ms);
void resty_ffi_sink_cancel(const resty_ffi_sink *sink, uint64_t token);
void free(void *ptr);
unsigned int geteuid(void);

typedef struct resty_ffi_stats {
  uint64_t posted, answered, failed, timed_out, cancelled, queue_full,
           in_flight, queue_len;
  uint32_t p50_us, p99_us, max_us, samples;
} resty_ffi_stats;
void resty_ffi_runtime_stats(const resty_ffi_runtime *rt, resty_ffi_stats *out);
void resty_ffi_runtime_count(const resty_ffi_runtime *rt, int event);
void resty_ffi_runtime_set_poll_spin(const resty_ffi_runtime *rt, uint32_t us);
int resty_ffi_runtime_awake(const resty_ffi_runtime *rt);
]]

-- Events of resty_ffi_runtime_count.
local TIMED_OUT, CANCELLED = 1, 2


-- Return codes of resty_ffi_runtime_post (include/resty_ffi.h).
local POST_ERRORS = {
  [1] = "resty_ffi: task queue full",
  [2] = "resty_ffi: runtime unloaded",
  [3] = "resty_ffi: internal error while posting",
}

local DEFAULT_MAX_QUEUE = 65536
local DEFAULT_TIMEOUT = 60
local MAX_POLL_SPIN_US = 100000   -- the core's cap (resty_ffi_runtime_set_poll_spin)
local DRAIN_BATCH = 256
local ERR_LEN = 512

local completions = ffi_new("resty_ffi_completion[?]", DRAIN_BATCH)
local errbuf = ffi_new("char[?]", ERR_LEN)
local init_rc = ffi_new("int[1]")

-- token -> waiter; a waiter receives `done`, `rc`, `res` and `err` (the call
-- failed) from its completion.
-- Waiters are reused (`waiter_pool`) once their call returned normally.
-- Weak values: a waiting caller holds its waiter, so only the waiters of callers
-- that were killed (client abort, stream reset) can be collected; their late
-- answers are then freed like those of cancelled calls. (nginx finds its killed
-- callers itself: see `sweep`.)
local waiters = setmetatable({}, { __mode = "v" })
-- Calls posted whose callers wait (counted apart from `waiters`: `next()`
-- over a sparse weak table is not O(1)).
local pending = 0
local next_token = 1
local waiter_pool = {}
local max_timeout = 0  -- the longest opts.timeout of any runtime loaded here

-- Copies an answer into its waiter. Raises when Lua cannot hold the
-- response (2 GB or more, out of memory).
local function copy_answer(waiter, c)
  waiter.rc = c.rc
  waiter.res = c.rsp ~= nil and ffi_str(c.rsp, c.rsp_len)
  waiter.err = c.err ~= nil and ffi_str(c.err)
end

-- Hands an answer to its waiter; `wake(waiter)` resumes the caller. The
-- answer of a caller that gave up is freed. An answer that cannot be copied
-- fails its own call only.
local function deliver(c, wake)
  local token = tonumber(c.token)
  local waiter = waiters[token]
  if waiter then
    waiters[token] = nil
    pending = pending - 1
    local ok, err = pcall(copy_answer, waiter, c)
    if not ok then
      waiter.res = false
      waiter.err = "resty_ffi: cannot deliver the answer: " .. tostring(err)
    end
    waiter.done = true
    wake(waiter)
  end
  if c.rsp ~= nil then
    C.free(c.rsp)
  end
end

-- The caller of `token` gave up or is gone: its late answer is freed.
local function forget(sink, token)
  if waiters[token] then
    waiters[token] = nil
    pending = pending - 1
  end
  C.resty_ffi_sink_cancel(sink, token)
end

-- Delivers every answer waiting in the sink. (The only loop is over the
-- answers: an outer one would keep LuaJIT from compiling the callers. The
-- first answer is delivered outside it: the loop runs only when several
-- came, else a loop of one pass aborts the traces that reach it.)
local function drain(sink, wake)
  local n = tonumber(C.resty_ffi_sink_drain(sink, completions, DRAIN_BATCH))
  if n > 0 then
    deliver(completions[0], wake)
  end
  for i = 1, n - 1 do
    deliver(completions[i], wake)
  end
  if n == DRAIN_BATCH then
    return drain(sink, wake)
  end
end


-- Sleeping until the event loop wakes us costs tens of µs; a lone call to a
-- fast runtime is answered sooner than that. So a call that is the only one
-- in flight first busy-waits for its answer for at most SPIN_US (answers
-- arriving meanwhile do not wake the host: it is watching). A runtime that
-- misses the window is not waited for so again for a while (the pause
-- doubles on each miss), so slow runtimes do not spin. The wait is a C loop:
-- a Lua loop here would keep LuaJIT from compiling the call path. Returns
-- true once the caller's answer was delivered (`wake(waiter)` for each).
local SPIN_US = 50
local MAX_SPIN_PAUSE = 4096

local function spin(waiter, sink, rt, wake)
  if pending ~= 1 then
    return false   -- not the only call in flight
  end
  if rt.spin_pause > 0 then
    rt.spin_pause = rt.spin_pause - 1
    return false
  end
  if C.resty_ffi_sink_spin(sink, SPIN_US) ~= 0 then
    drain(sink, wake)
    if waiter.done then
      rt.spin_backoff = 1
      return true
    end
  end
  rt.spin_pause = rt.spin_backoff
  rt.spin_backoff = math.min(rt.spin_backoff * 2, MAX_SPIN_PAUSE)
  return false
end


-- Hosts. Each provides:
--   sink()             the completion queue of the caller's context
--   wait(waiter, sink, timeout, rt)   (rt: the runtime's private state;
--                      waiter.token: the call's token)
--                      suspends the caller until the waiter is answered;
--                      returns true, or nil and a message. It may keep
--                      fields of its own in the (reused) waiter.
--   check_load()       raises if runtimes cannot be loaded here; true if
--                      the runtime is not to be loaded (a config check)
--   log_error(msg)     writes msg to the host's log (nginx's error log, Envoy's log)
--   extra_arg_ok(v)    whether `v` may follow the request in a call
--   no_core            the error when the core's functions cannot be found
local host

local envoy = package.loaded["resty_ffi.envoy"]
if envoy then
  -- Envoy: one coroutine per stream; the filter resumes it when the stream's
  -- sink has answers, and we drain them here. Envoy gives the filter no
  -- timers, so the core wakes the sink when a call's timeout is up.
  local function nothing() end
  local running = coroutine.running

  ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } resty_ffi_timespec;
  int clock_gettime(int clk_id, resty_ffi_timespec *tp);
  ]]
  local CLOCK_MONOTONIC = 1
  local MAX_WAKE_MS = 2 ^ 32 - 1
  -- A call this long (s) after the runtime's last answer finds the worker
  -- idle in between (one client, say): waiting is then cheaper than a trip
  -- through the event loop. Back-to-back calls from different streams mean
  -- a busy worker.
  local IDLE_BEFORE_SPIN = 100e-6
  local PUBLISH_EVERY = 1
  local ts = ffi_new("resty_ffi_timespec")

  local function now()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end

  -- Envoy's own log (its dynamic-module ABI, exported by the Envoy binary),
  -- at error level; stderr if the binary lacks it.
  ffi.cdef[[
  typedef struct { const char *ptr; size_t length; } resty_ffi_envoy_log_buffer;
  void envoy_dynamic_module_callback_log(int level, resty_ffi_envoy_log_buffer message);
  ]]
  local ENVOY_LOG_ERROR = 4
  local envoy_log = pcall(function() return C.envoy_dynamic_module_callback_log end)
      and C.envoy_dynamic_module_callback_log

  local function log_error(msg)
    if envoy_log then
      envoy_log(ENVOY_LOG_ERROR, ffi_new("resty_ffi_envoy_log_buffer", msg, #msg))
    else
      io.stderr:write(msg, "\n")
    end
  end

  -- The stream handle that the original's Envoy examples pass after the
  -- request (`demo:foobar("foobar", request_handle)`): an object with the
  -- handle's methods. (No closure here: this runs on every such call, and
  -- LuaJIT does not compile the creation of closures.)
  local function headers_of(v)
    return v.headers
  end

  local function is_stream_handle(v)
    local t = type(v)
    if t == "table" then
      return type(v.headers) == "function"
    elseif t == "userdata" then
      local ok, headers = pcall(headers_of, v)
      return ok and type(headers) == "function"
    end
    return false
  end

  local function wake_in(sink, token, ms)
    if C.resty_ffi_sink_wake_in(sink, token, ms) ~= 0 then
      error("resty_ffi: cannot start the timer thread", 4)
    end
  end

  -- The filter calls this when the stream's sink woke it and no call waits:
  -- the answers there (late ones of calls that gave up) are drained, so that
  -- the sink wakes the stream again for the next answer.
  envoy.drain = function(sink)
    drain(ffi.cast("resty_ffi_sink *", sink), nothing)
  end

  host = {
    sink = function()
      local sink = envoy.sink()
      if not sink then
        error("resty_ffi: runtimes can only be called from envoy_on_request or envoy_on_response", 3)
      end
      return ffi.cast("resty_ffi_sink *", sink)
    end,
    wait = function(waiter, sink, timeout, rt)
      -- A lone call busy-waits for its answer when it comes within µs (a
      -- poll thread is awake), when this stream called right before (a loop
      -- of calls, whose tasks then keep the poll thread spinning), or when
      -- the worker had nothing to do since the last answer. Not else: a
      -- busy worker that waited out the wake-up of a sleeping poll thread for
      -- each call would serve its connections one request at a time.
      local started = now()
      local caller = running()
      local again = rt.last_caller == caller
      rt.last_caller = caller
      if (again or started - rt.last_answer > IDLE_BEFORE_SPIN or C.resty_ffi_runtime_awake(rt.ptr) ~= 0)
          and spin(waiter, sink, rt, nothing) then
        rt.last_answer = now()
        return true
      end
      local token = waiter.token
      -- The deadline is taken before the wake-up is armed, so the wake-up
      -- never comes before it. Each call has its own wake-up.
      local deadline = started + timeout
      wake_in(sink, token, math.min(math.ceil(timeout * 1000), MAX_WAKE_MS))
      -- Usually the first wake-up brings the answer; the loop (which LuaJIT
      -- would not compile into the call path) is for the others.
      envoy.wait()
      drain(sink, nothing)
      while not waiter.done do
        if now() >= deadline then
          wake_in(sink, token, 0)
          return nil, "timeout"
        end
        envoy.wait()
        drain(sink, nothing)
      end
      wake_in(sink, token, 0)
      rt.last_answer = now()
      return true
    end,
    -- At config load the filter runs a script's top level once, to refuse
    -- a config whose script fails as the stock filter does; no runtime is
    -- loaded there.
    check_load = function()
      return envoy.config_check
    end,
    log_error = log_error,
    -- A runtime's stats become metrics of the filter config (Envoy's
    -- /stats), at most once a second per runtime and VM, after a call.
    after_call = function(rt)
      local t = now()
      if t >= rt.next_publish then
        rt.next_publish = t + PUBLISH_EVERY
        envoy.publish_stats(rt.ptr, rt.key)
      end
    end,
    extra_arg_ok = is_stream_handle,
    no_core = "resty_ffi: the resty_ffi core is not in the process's global scope"
              .. " (undefined symbol resty_ffi_runtime_load): load the filter with"
              .. " load_globally: true in its dynamic_module_config",
  }

else
  -- nginx: each Lua VM (one per worker, or one per request with
  -- lua_code_cache off) has a sink of its own. The nginx module wakes the
  -- VM's dispatcher light thread, which drains the sink and posts each
  -- caller's semaphore.
  local semaphore = require("ngx.semaphore")
  local get_phase = ngx.get_phase

  ffi.cdef[[
  typedef struct ngx_http_resty_ffi_vm_t ngx_http_resty_ffi_vm_t;
  ngx_http_resty_ffi_vm_t *ngx_http_resty_ffi_open(void *sem, char *err, size_t err_len);
  resty_ffi_sink *ngx_http_resty_ffi_sink(ngx_http_resty_ffi_vm_t *vm);
  void ngx_http_resty_ffi_close(ngx_http_resty_ffi_vm_t *vm);
  int ngx_http_resty_ffi_worker_has_posted_events(void);
  int ngx_http_lua_ffi_sema_post(void *sem, int n);
  ]]

  -- Not ssl_client_hello and ssl_session_fetch: Debian's nginx and OpenSSL
  -- cannot resume a handshake suspended there (OpenResty patches both).
  local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, server_rewrite = true,
  }

  local vm_sink          -- this VM's sink
  local vm_handle        -- keeps vm_sink open; collected with the VM
  local dispatcher_sem
  local dispatching = false
  local sleepers = {}    -- waiter -> its runtime's state while its caller sleeps on its semaphore
  local next_sweep = 0

  -- A spinning waiter needs no wake-up. (The semaphore object's `sem` is
  -- the cdata that lua-resty-core passes to the same C function.)
  local function post_waiter(waiter)
    if sleepers[waiter] then
      sleepers[waiter] = nil
      C.ngx_http_lua_ffi_sema_post(waiter.sem.sem, 1)
    end
  end

  -- A sleeper that nothing woke but that no longer waits on its semaphore
  -- was killed (client abort, ngx.thread.kill, its request ended): its call
  -- is forgotten, so that `pending` counts only callers that wait.
  local function sweep()
    for waiter, rt in pairs(sleepers) do
      if waiter.sem:count() >= 0 then
        sleepers[waiter] = nil
        C.resty_ffi_runtime_count(rt.ptr, CANCELLED)
        forget(vm_sink, waiter.token)
      end
    end
  end

  -- A lone call spins first (see `spin`), unless the worker has other work
  -- queued to run (such as coroutines woken by other answers).
  local function spin_alone(waiter, sink, rt)
    return C.ngx_http_resty_ffi_worker_has_posted_events() == 0 and spin(waiter, sink, rt, post_waiter)
  end

  -- Runs while calls wait: it ends after a second without any (a timer
  -- keeps its Lua VM alive), or once the worker exits and every call still
  -- waiting got its answer or outlived the longest timeout. Killed callers
  -- are swept out once a second, and at every turn while the worker exits.
  local function dispatch_loop()
    local exit_deadline
    while true do
      local ok, err = dispatcher_sem:wait(1)
      if not ok and err ~= "timeout" then
        ngx.log(ngx.ERR, "resty_ffi: dispatcher: ", err)
      end
      drain(vm_sink, post_waiter)
      local exiting = ngx.worker.exiting()
      if pending > 0 and (exiting or ngx.now() >= next_sweep) then
        sweep()
        next_sweep = ngx.now() + 1
      end
      if exiting then
        ngx.update_time()
        exit_deadline = exit_deadline or ngx.now() + max_timeout
        if pending == 0 or ngx.now() > exit_deadline then
          return
        end
      elseif not ok and pending == 0 then
        return
      end
    end
  end

  local start_dispatcher

  -- A dispatcher that fails is logged, and replaced while calls wait. (It
  -- also runs when nginx calls it `premature`ly, at exit: calls may wait.)
  local function dispatch()
    local ok, err = pcall(dispatch_loop)
    dispatching = false
    if not ok then
      ngx.log(ngx.ERR, "resty_ffi: dispatcher failed: ", err)
      if pending > 0 then
        local started, start_err = start_dispatcher()
        if not started then
          ngx.log(ngx.ERR, "resty_ffi: ", start_err)
        end
      end
    end
  end

  -- Returns true, or nil and a message.
  start_dispatcher = function()
    if dispatching then
      return true
    end
    local ok, err = ngx.timer.at(0, dispatch)
    if not ok then
      return nil, "cannot start the dispatcher: " .. err
    end
    dispatching = true
    return true
  end

  local function vm_sink_or_error()
    if vm_sink then
      return vm_sink
    end
    local sem = semaphore.new(0)
    local vm = C.ngx_http_resty_ffi_open(sem.sem, errbuf, ERR_LEN)
    if vm == nil then
      error(ffi_str(errbuf), 3)
    end
    -- C posts `sem` until the sink is closed: the finalizer keeps it alive.
    vm_handle = ffi_gc(vm, function(handle)
      C.ngx_http_resty_ffi_close(handle)
      sem = nil
    end)
    dispatcher_sem = sem
    vm_sink = C.ngx_http_resty_ffi_sink(vm)
    return vm_sink
  end

  host = {
    sink = function()
      local phase = get_phase()
      if not YIELDABLE[phase] then
        error("resty_ffi: cannot wait for a runtime in the " .. phase .. " phase", 3)
      end
      return vm_sink_or_error()
    end,
    wait = function(waiter, sink, timeout, rt)
      if spin_alone(waiter, sink, rt) then
        return true
      end
      local started, start_err = start_dispatcher()
      if not started then
        return nil, start_err
      end
      local sem = waiter.sem
      if not sem then
        sem = semaphore.new(0)
        waiter.sem = sem
      end
      sleepers[waiter] = rt
      local ok, err = sem:wait(timeout)
      sleepers[waiter] = nil
      return ok, err
    end,
    check_load = function()
      local phase = get_phase()
      if phase == "init" then
        error("resty_ffi: runtimes start threads and cannot be loaded in the init phase;"
              .. " load them in a worker (init_worker_by_lua* or a request)", 3)
      end
    end,
    log_error = function(msg)
      ngx.log(ngx.ERR, msg)
    end,
    extra_arg_ok = function() return false end,
    no_core = "resty_ffi: the resty_ffi core is not loaded (undefined symbol"
              .. " resty_ffi_runtime_load): add load_module ngx_http_resty_ffi_module.so"
              .. " after the lua module in nginx.conf",
  }
end


local runtimes = {}   -- cache key -> runtime object, per Lua VM
local after_call = host.after_call   -- host-specific, after each answered call

-- Every string key of a runtime object is a method name (SPEC §1), so the
-- object keeps its state under this private key.
local STATE = {}

local Runtime = {}

local function state_of(self)
  local rt = type(self) == "table" and self[STATE]
  if not rt then
    error("resty_ffi: call a runtime's methods with ':' (rt:name(req))", 3)
  end
  return rt
end

-- A call's arguments beyond the request are a mistake (the runtime never
-- sees them), but for Envoy's stream handle: raised rather than dropped.
local function stray_argument(extra, more)
  local what = more ~= nil and "a third argument" or "a " .. type(extra) .. " after the request"
  error("resty_ffi: a runtime call takes one request (rt:name(req), a string or nil) and"
        .. " passes only that string to the runtime, not the method name or other arguments:"
        .. " got " .. what, 3)
end

local function call(self, req, extra, more)
  local rt = state_of(self)
  if req ~= nil and type(req) ~= "string" then
    error("resty_ffi: request must be a string or nil, got " .. type(req), 2)
  end
  if (extra ~= nil and not host.extra_arg_ok(extra)) or more ~= nil then
    stray_argument(extra, more)
  end
  local sink = host.sink()
  local token = next_token
  next_token = token + 1
  local rc = C.resty_ffi_runtime_post(rt.ptr, sink, token, req, req and #req or 0)
  if rc ~= 0 then
    return false, POST_ERRORS[rc] or "resty_ffi: post failed"
  end
  local n = #waiter_pool
  local waiter = waiter_pool[n]
  if waiter then
    waiter_pool[n] = nil
  else
    waiter = { done = false, rc = 0, res = false, err = false, token = 0 }
  end
  waiter.token = token
  waiters[token] = waiter
  pending = pending + 1
  local ok, err = host.wait(waiter, sink, rt.timeout, rt)
  if not ok then
    -- The caller gives up. The waiter is not reused (its semaphore saw a
    -- timeout).
    if err == "timeout" then
      C.resty_ffi_runtime_count(rt.ptr, TIMED_OUT)
    end
    forget(sink, token)
    return false, "resty_ffi: " .. (err == "timeout" and "runtime did not answer in time" or err)
  end
  if after_call then
    after_call(rt)
  end
  local rc, res, err = waiter.rc, waiter.res, waiter.err
  waiter.done = false
  waiter.res = false
  waiter.err = false
  waiter_pool[#waiter_pool + 1] = waiter
  if err then
    return false, err
  end
  if rc == 0 then
    return true, res or ""
  end
  return false, rc, res or nil
end

Runtime.__index = function(self, name)
  if name == "__unload" then
    return Runtime.unload
  elseif name == "__stats" then
    return Runtime.stats
  end
  return call
end

local stats_buf = ffi_new("resty_ffi_stats")
local STATS_FIELDS = { "posted", "answered", "failed", "timed_out", "cancelled", "queue_full",
                       "in_flight", "queue_len", "p50_us", "p99_us", "max_us", "samples" }

local function stats_of(rt)
  C.resty_ffi_runtime_stats(rt.ptr, stats_buf)
  local t = {}
  for i = 1, #STATS_FIELDS do
    local field = STATS_FIELDS[i]
    t[field] = tonumber(stats_buf[field])
  end
  return t
end

-- rt:__stats(): this runtime's counters (SPEC §1). A shared runtime's are
-- those of every holder.
function Runtime.stats(self)
  return stats_of(state_of(self))
end

function Runtime.unload(self)
  local rt = state_of(self)
  if runtimes[rt.key] == self then
    runtimes[rt.key] = nil
  end
  C.resty_ffi_runtime_unload(rt.ptr)
end


-- ' (cfg "...")' for the log: at most CFG_LOG_LEN bytes, control bytes,
-- quotes and backslashes escaped as \ddd.
local CFG_LOG_LEN = 200
local function describe_cfg(cfg)
  if cfg == nil then
    return " (no cfg)"
  end
  local shown = cfg:sub(1, CFG_LOG_LEN):gsub('[%c"\\]', function(c)
    return format("\\%03d", byte(c))
  end)
  if #cfg > CFG_LOG_LEN then
    return format(' (cfg "%s...", %d bytes)', shown, #cfg)
  end
  return format(' (cfg "%s")', shown)
end

local core_found = false

-- What load_ffi gives during a config check: any call raises.
local function stand_in(lib)
  return setmetatable({}, { __index = function()
    return function()
      error("resty_ffi: " .. lib .. " is not loaded while the config is checked", 2)
    end
  end })
end


local function load_ffi(lib, cfg, opts)
  if type(lib) ~= "string" or lib == "" then
    error("resty_ffi: lib must be a non-empty string", 2)
  end
  if cfg ~= nil and type(cfg) ~= "string" then
    error("resty_ffi: cfg must be a string or nil", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("resty_ffi: opts must be a table or nil", 2)
  end
  opts = opts or {}
  local max_queue = opts.max_queue or DEFAULT_MAX_QUEUE
  if type(max_queue) ~= "number" or max_queue < 1 or max_queue % 1 ~= 0 then
    error("resty_ffi: opts.max_queue must be an integer >= 1", 2)
  end
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or timeout <= 0 then
    error("resty_ffi: opts.timeout must be a number of seconds > 0", 2)
  end
  local poll_spin_us = opts.poll_spin_us
  if poll_spin_us ~= nil and (type(poll_spin_us) ~= "number" or poll_spin_us < 0
                              or poll_spin_us > MAX_POLL_SPIN_US or poll_spin_us % 1 ~= 0) then
    error("resty_ffi: opts.poll_spin_us must be an integer from 0 to " .. MAX_POLL_SPIN_US, 2)
  end
  -- Checked before a config check returns: a config without the core (no
  -- load_globally on Envoy) is refused when it loads, not on its first request.
  if not core_found then
    -- ffi.C raises "undefined symbol" on the first use of a missing function.
    core_found = pcall(function() return C.resty_ffi_runtime_load end)
    if not core_found then
      error(host.no_core, 2)
    end
  end
  if host.check_load() then
    return stand_in(lib)
  end

  if timeout > max_timeout then
    max_timeout = timeout
  end

  local key = cfg and (lib .. "&" .. cfg) or lib
  local rt = runtimes[key]
  if not rt then
    local ptr = C.resty_ffi_runtime_load(lib, cfg, cfg and #cfg or 0, max_queue,
                                         opts.is_global and 1 or 0,
                                         opts.unpin and 1 or 0,
                                         opts.shared and 1 or 0,
                                         init_rc, errbuf, ERR_LEN)
    if ptr == nil then
      local rc = init_rc[0]
      if rc ~= 0 then
        host.log_error("resty_ffi: libffi_init of " .. lib .. " returned " .. rc .. describe_cfg(cfg))
        return nil, rc
      end
      local err = ffi_str(errbuf)
      if err:find("Permission denied", 1, true) then
        err = err .. " (this process runs as uid " .. tonumber(C.geteuid()) .. ", which cannot read it"
              .. " or a directory above it: nginx's workers run as the user of nginx.conf;"
              .. " nobody and www-data cannot read /root)"
      end
      return nil, err
    end
    rt = setmetatable({ [STATE] = { ptr = ffi_gc(ptr, C.resty_ffi_runtime_free), key = key,
                                    timeout = timeout, spin_pause = 0, spin_backoff = 1, last_caller = false,
                                    last_answer = 0,
                                    next_publish = 0 } }, Runtime)
    runtimes[key] = rt
  end
  -- On every load, a cached runtime's too (SPEC §1).
  if poll_spin_us then
    C.resty_ffi_runtime_set_poll_spin(rt[STATE].ptr, poll_spin_us)
  end
  return rt
end


if not ngx then
  ngx = {}    -- Envoy: SPEC §1 creates the global when absent
end
ngx.load_ffi = load_ffi

-- Every runtime loaded in this Lua VM (and not unloaded), by cache key.
local function all_stats()
  local all = {}
  for key, rt in pairs(runtimes) do
    all[key] = stats_of(rt[STATE])
  end
  return all
end

return { load_ffi = load_ffi, stats = all_stats, _VERSION = "0.1.0" }
