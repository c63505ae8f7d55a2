-- Runs once per Lua VM, before the layers above install their modules and
-- the user's script runs. Publishes the yields a filter coroutine makes as
-- package.loaded["resty_ffi.envoy.vm"]; the filter tells them apart by the
-- sentinel yielded (`sentinels`: ffi, body, chunk, callout, responded).
local sentinels = ...
local yield = coroutine.yield
local FFI, BODY, CHUNK, CALLOUT, RESPONDED =
  sentinels.ffi, sentinels.body, sentinels.chunk, sentinels.callout, sentinels.responded

package.loaded["resty_ffi.envoy.vm"] = {
  -- Until the stream's sink wakes the stream (answers, or a call's deadline).
  wait_ffi = function()
    return yield(FFI)
  end,
  -- Until more of the stream arrived (body data, trailers, its end).
  wait_body = function()
    yield(BODY)
  end,
  -- Until the next body chunk (which is not buffered) or the end.
  wait_chunk = function()
    yield(CHUNK)
  end,
  -- Until the HTTP callout started by the caller answers; returns what the
  -- filter resumes with.
  wait_callout = function()
    return yield(CALLOUT)
  end,
  -- Hands a local reply ({status, headers, body}) to the filter; never resumed.
  responded = function(reply)
    yield(RESPONDED, reply)
  end,
}
