-- handle:streamInfo() and its dynamicMetadata().
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")
local metadata = require("resty_ffi.envoy.metadata")

local api, check, buf = base.api, base.check, base.buf
local ffi_str = ffi.string
local setmetatable, type, error, tostring = setmetatable, type, error, tostring

-- Attribute ids of api.attribute (api/stream_info.rs).
local PROTOCOL, SOURCE_ADDRESS, DESTINATION_ADDRESS, DIRECT_REMOTE_ADDRESS = 0, 1, 2, 3

local StreamInfo = base.loggable({})
StreamInfo.__index = StreamInfo

local function attribute(self, id)
  if check(api.attribute(self.ctx, id, buf), 3) == 1 then
    return ffi_str(buf[0].ptr, buf[0].len)
  end
  return nil
end

function StreamInfo:protocol()
  return attribute(self, PROTOCOL)
end

function StreamInfo:downstreamLocalAddress()
  return attribute(self, DESTINATION_ADDRESS)
end

function StreamInfo:downstreamRemoteAddress()
  return attribute(self, SOURCE_ADDRESS)
end

function StreamInfo:downstreamDirectRemoteAddress()
  return attribute(self, DIRECT_REMOTE_ADDRESS)
end

local DynamicMetadata = base.loggable({})
DynamicMetadata.__index = DynamicMetadata

function StreamInfo:dynamicMetadata()
  return setmetatable({ ctx = self.ctx }, DynamicMetadata)
end

-- A table of the namespace's values; nothing when the namespace is empty.
function DynamicMetadata:get(ns)
  ns = base.string_arg(ns, 2)
  local values = metadata.namespace(self.ctx, metadata.DYNAMIC, ns)
  if values then
    return values
  end
end

function DynamicMetadata:set(ns, key, value)
  ns, key = base.string_arg(ns, 2), base.string_arg(key, 3)
  metadata.set(self.ctx, ns, key, value)
end

return {
  new = function(ctx)
    return setmetatable({ ctx = ctx }, StreamInfo)
  end,
}
