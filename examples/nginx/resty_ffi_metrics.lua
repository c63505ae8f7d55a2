-- Prometheus text for this worker's runtimes (require("resty_ffi").stats()).
-- Serve it with `content_by_lua_file`; every worker answers for itself, so
-- each sample carries a `worker` label (see docs/nginx.md, "Stats", for
-- summing workers).
local stats = require("resty_ffi").stats()

local COUNTERS = { "posted", "answered", "failed", "timed_out", "cancelled", "queue_full" }
local GAUGES = { "in_flight", "queue_len", "p50_us", "p99_us", "max_us" }

local function label(value)
  return (value:gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local keys = {}
for key in pairs(stats) do
  keys[#keys + 1] = key
end
table.sort(keys)

local out = {}
local worker = ngx.worker.id() or 0
local function family(name, kind)
  out[#out + 1] = "# TYPE resty_ffi_" .. name .. (kind == "counter" and "_total " or " ") .. kind
  for _, key in ipairs(keys) do
    out[#out + 1] = string.format('resty_ffi_%s%s{runtime="%s",worker="%d"} %d', name,
                                  kind == "counter" and "_total" or "", label(key), worker, stats[key][name])
  end
end
for _, name in ipairs(COUNTERS) do
  family(name, "counter")
end
for _, name in ipairs(GAUGES) do
  family(name, "gauge")
end

ngx.header.content_type = "text/plain; version=0.0.4"
ngx.print(table.concat(out, "\n"), "\n")
