-- Runs once per Lua VM, before the user's script. Builds what the script sees:
-- the `handle` passed to envoy_on_request/envoy_on_response, and the host
-- module that resty_ffi.lua finds as package.loaded["resty_ffi.envoy"].
-- Yields go to the filter, which tells them apart by the sentinel yielded.
local raw_host, WAIT_FFI, WAIT_BODY, RESPONDED = ...
local yield, error, setmetatable, tostring = coroutine.yield, error, setmetatable, tostring

package.loaded["resty_ffi.envoy"] = {
    -- The current stream's resty_ffi_sink * (lightuserdata), or nil outside a stream.
    sink = raw_host.sink,
    -- Suspends the filter coroutine until answers may be waiting on the sink;
    -- returns true. Wake-ups can be spurious: drain, and wait again if needed.
    wait = function()
        return yield(WAIT_FFI)
    end,
}

local Handle = {}
Handle.__index = Handle
setmetatable(Handle, {
    __index = function(_, name)
        return function()
            error("resty_ffi: handle:" .. tostring(name) .. "() is not supported by the resty_ffi Envoy filter", 2)
        end
    end,
})

for _, name in ipairs({ "headers", "streamInfo", "metadata", "timestamp", "logTrace", "logDebug",
    "logInfo", "logWarn", "logErr", "logCritical" }) do
    Handle[name] = function(self, ...)
        local raw = self[1]
        return raw[name](raw, ...)
    end
end

-- Like Envoy's Lua filter: waits for the whole body; nil when there is none
-- (unless always_wrap).
function Handle:body(always_wrap)
    local raw = self[1]
    while true do
        local state = raw:bodyState()
        if state == "ready" or (state == "none" and always_wrap) then
            return raw:bodyObject()
        elseif state == "none" then
            return nil
        end
        yield(WAIT_BODY)
    end
end

-- Sends a local reply; the script ends here.
function Handle:respond(headers, body)
    self[1]:respond(headers, body)
    yield(RESPONDED)
end

return function(raw)
    return setmetatable({ raw }, Handle)
end
