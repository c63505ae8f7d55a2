-- The host module that resty_ffi.lua finds as package.loaded["resty_ffi.envoy"].
local base = require("resty_ffi.envoy.api")
local vm = require("resty_ffi.envoy.vm")

local api = base.api

return {
  -- The current stream's resty_ffi_sink * (a cdata pointer), or nil outside a stream.
  sink = function()
    local sink = api.current_sink()
    if sink ~= nil then
      return sink
    end
    return nil
  end,
  -- Suspends the filter coroutine until answers may be waiting on the sink;
  -- returns true. Wake-ups can be spurious: drain, and wait again if needed.
  wait = vm.wait_ffi,
  -- Publishes runtime `ptr`'s stats (a resty_ffi_runtime *, cache key
  -- `key`) as metrics of the current stream's filter config.
  publish_stats = function(ptr, key)
    api.publish_stats(ptr, key, #key)
  end,
  -- resty_ffi.lua sets `drain(sink)`: the filter calls it when the sink
  -- woke the stream and no call waits.
  -- `config_check` is true in the VM where the config's check runs the
  -- script's top level (no runtime is loaded there).
}
