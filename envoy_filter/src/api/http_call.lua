-- handle:httpCall(cluster, headers, body, timeout_ms, asynchronous) and
-- handle:httpCall(cluster, headers, body, options): an HTTP request through
-- one of Envoy's clusters, with the stock filter's arguments, errors and
-- results.
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")
local vm = require("resty_ffi.envoy.vm")

local api, check, array, fail = base.api, base.check, base.array, base.fail
local string_arg, number_arg, table_arg = base.string_arg, base.number_arg, base.table_arg
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local lower = string.lower

-- api.http_call's results (api/http_call.rs).
local STARTED, MISSING_HEADERS, CLUSTER_NOT_FOUND = 0, 1, 2

-- The headers table as Envoy headers: values are strings or lists of them;
-- with a body, its content-length (as the stock filter sets it). Argument
-- errors name the stock filter's stack slots.
local function header_array(headers, body)
  local list = {}
  for key, value in pairs(headers) do
    key = lower(string_arg(key, 7))
    if body == nil or key ~= "content-length" then
      if type(value) == "table" then
        for _, v in ipairs(value) do
          list[#list + 1] = { key, string_arg(v, 10) }
        end
      else
        list[#list + 1] = { key, string_arg(value, 8) }
      end
    end
  end
  if body ~= nil then
    list[#list + 1] = { "content-length", tostring(#body) }
  end
  local out = array("resty_ffi_envoy_header", #list)
  for i, h in ipairs(list) do
    local entry = out[i - 1]
    entry.key, entry.key_len, entry.value, entry.value_len = h[1], #h[1], h[2], #h[2]
  end
  -- `list` keeps the strings the array points to alive until the call returns.
  return out, #list, list
end

-- The keys of the options table and the type of their values.
local OPTIONS = { timeout_ms = "number", asynchronous = "boolean", trace_sampled = "boolean",
  return_duplicate_headers = "boolean", send_xff = "boolean" }

local function options_of(timeout_or_options, asynchronous)
  if type(timeout_or_options) ~= "table" then
    return number_arg(timeout_or_options, 5), asynchronous == true, false
  end
  local o = timeout_or_options
  for key, value in pairs(o) do
    key = string_arg(key, 7)
    local expected = OPTIONS[key]
    if not expected then
      fail('"' .. key .. '" is not valid key for httpCall() options')
    end
    base.typed_arg(value, 8, expected)
  end
  return o.timeout_ms or 0, o.asynchronous == true, o.return_duplicate_headers == true
end

local M = {}

-- `dir`: 0 request, 1 response (whose coroutine waits for the answer).
function M.call(ctx, dir, cluster, headers, body, timeout_or_options, asynchronous)
  cluster = string_arg(cluster, 2)
  table_arg(headers, 3)
  if body ~= nil then
    body = string_arg(body, 4)
  end
  local timeout, async, duplicates = options_of(timeout_or_options, asynchronous)
  if timeout < 0 then
    fail("http call timeout must be >= 0")
  end
  local hdrs, n, keep = header_array(headers, body)
  local rc = check(api.http_call(ctx, async and -1 or dir, duplicates and 1 or 0, cluster, #cluster, hdrs, n,
    body, body and #body or 0, timeout))
  keep = nil
  if rc == CLUSTER_NOT_FOUND then
    fail("http call cluster invalid. Must be configured")
  elseif rc == MISSING_HEADERS then
    fail("http call headers must include ':path', ':method', and ':authority'")
  elseif rc ~= STARTED then
    -- Envoy could not send it (it answered at once, as for a cluster without
    -- healthy hosts): what the stock filter gets from Envoy then.
    if async then
      return
    end
    return { [":status"] = "503", ["content-length"] = "19", ["content-type"] = "text/plain" }, "no healthy upstream"
  end
  if async then
    return
  end
  return vm.wait_callout()
end

return M
