-- Runs once per Lua VM, before the layers above install their modules and
-- the user's script runs. Publishes the yields a filter coroutine makes as
-- package.loaded["resty_ffi.envoy.vm"]; the filter tells them apart by the
-- sentinel yielded.
local WAIT_FFI, WAIT_BODY, RESPONDED = ...
local yield = coroutine.yield

package.loaded["resty_ffi.envoy.vm"] = {
  -- Until the stream's sink wakes the stream (answers, or a call's deadline).
  wait_ffi = function()
    return yield(WAIT_FFI)
  end,
  -- Until more of the body arrived.
  wait_body = function()
    yield(WAIT_BODY)
  end,
  -- Hands a local reply ({status, headers, body}) to the filter; never resumed.
  responded = function(reply)
    yield(RESPONDED, reply)
  end,
}
