-- Runs once per Lua VM, before the layers above install their modules and
-- the user's script runs. Publishes the yields a filter coroutine makes as
-- package.loaded["resty_ffi.envoy.vm"]; the filter tells them apart by the
-- sentinel yielded (`sentinels`: ffi, body, chunk, trailers, callout,
-- responded). Returns what wraps an entry function as a coroutine's body.
local sentinels = ...
local yield, running = coroutine.yield, coroutine.running
local setmetatable, type, xpcall, error = setmetatable, type, xpcall, error
local FFI, BODY, CHUNK, TRAILERS, CALLOUT, RESPONDED =
  sentinels.ffi, sentinels.body, sentinels.chunk, sentinels.trailers, sentinels.callout, sentinels.responded

-- The stock filter's objects (headers, bodies, stream info, ...) do not
-- survive a yield of their coroutine, and its handle lives only while its
-- coroutine runs. Each filter coroutine has a scope: an object made at the
-- scope's epoch is usable until the epoch moves on, which it does when the
-- coroutine yields (not while it waits for a runtime's answers: objects
-- survive resty_ffi calls) or ends.
local M = {
  -- The scope of the filter coroutine that runs (or ran last).
  current = { epoch = 0 },
}

-- Each filter coroutine's scope (`{ epoch, handle }`).
local coroutines = setmetatable({}, { __mode = "k" })

local function resumed(co, ...)
  local scope = coroutines[co]
  M.current = scope
  scope.handle.epoch = scope.epoch
  return ...
end

-- Yields `sentinel` (and `value`) to the filter; `keep`: objects stay usable.
local function leave(sentinel, value, keep)
  local co = running()
  local scope = coroutines[co]
  if not scope then
    error("resty_ffi: the filter cannot wait inside a coroutine the script made", 0)
  end
  if not keep then
    scope.epoch = scope.epoch + 1
  end
  return resumed(co, yield(sentinel, value))
end

package.loaded["resty_ffi.envoy.vm"] = M

-- Until the stream's sink wakes the stream (answers, or a call's deadline).
function M.wait_ffi()
  return leave(FFI, nil, true)
end

-- Until the whole body arrived (buffered).
function M.wait_body()
  leave(BODY)
end

-- Until the next body chunk (which is not buffered) or the end.
function M.wait_chunk()
  leave(CHUNK)
end

-- Until the stream's end (trailers or not); the body streams by.
function M.wait_trailers()
  leave(TRAILERS)
end

-- Until the HTTP callout started by the caller answers; returns what the
-- filter resumes with.
function M.wait_callout()
  return leave(CALLOUT)
end

-- Hands a local reply ({status, headers, body}) to the filter; never resumed.
function M.responded(reply)
  leave(RESPONDED, reply)
end

-- An error value that is neither a string nor a number reaches the filter
-- as the stock filter's "unspecified lua error".
local function message_of(e)
  local kind = type(e)
  if kind == "string" or kind == "number" then
    return e
  end
  return "unspecified lua error"
end

-- What a coroutine runs for `entry` (envoy_on_request or envoy_on_response):
-- `make_handle` makes the handle of the first resume's arguments (no call
-- from Rust into Lua of its own).
return function(entry, make_handle)
  return function(...)
    local handle = make_handle(...)
    local scope = { epoch = 0, handle = handle }
    coroutines[running()] = scope
    M.current = scope
    handle.scope, handle.epoch = scope, 0
    local ok, message = xpcall(entry, message_of, handle)
    scope.epoch = scope.epoch + 1
    if not ok then
      error(message, 0)
    end
  end
end
