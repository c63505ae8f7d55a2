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
-- survive a yield, and its handle lives only while its coroutine runs. An
-- object made at `scope.epoch` is usable while the epoch has not moved on:
-- it moves on whenever a filter coroutine yields or ends.
local scope = { epoch = 0 }

-- The handle of each filter coroutine, made usable again when it resumes.
local handles = setmetatable({}, { __mode = "k" })

local function resumed(co, ...)
  local handle = handles[co]
  if handle then
    handle.epoch = scope.epoch
  end
  return ...
end

local function leave(sentinel, value)
  local co = running()
  if not handles[co] then
    error("resty_ffi: the filter cannot wait inside a coroutine the script made", 0)
  end
  scope.epoch = scope.epoch + 1
  return resumed(co, yield(sentinel, value))
end

package.loaded["resty_ffi.envoy.vm"] = {
  scope = scope,
  -- Until the stream's sink wakes the stream (answers, or a call's deadline).
  wait_ffi = function()
    return leave(FFI)
  end,
  -- Until the whole body arrived (buffered).
  wait_body = function()
    leave(BODY)
  end,
  -- Until the next body chunk (which is not buffered) or the end.
  wait_chunk = function()
    leave(CHUNK)
  end,
  -- Until the stream's end (trailers or not); the body streams by.
  wait_trailers = function()
    leave(TRAILERS)
  end,
  -- Until the HTTP callout started by the caller answers; returns what the
  -- filter resumes with.
  wait_callout = function()
    return leave(CALLOUT)
  end,
  -- Hands a local reply ({status, headers, body}) to the filter; never resumed.
  responded = function(reply)
    leave(RESPONDED, reply)
  end,
}

-- An error value that is neither a string nor a number reaches the filter
-- as the stock filter's "unspecified lua error".
local function message_of(e)
  local kind = type(e)
  if kind == "string" or kind == "number" then
    return e
  end
  return "unspecified lua error"
end

-- What a coroutine runs for `entry` (envoy_on_request or envoy_on_response).
return function(entry)
  return function(handle)
    handles[running()] = handle
    local ok, message = xpcall(entry, message_of, handle)
    scope.epoch = scope.epoch + 1
    if not ok then
      error(message, 0)
    end
  end
end
