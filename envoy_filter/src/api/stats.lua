-- handle:stats(): counter(name), gauge(name) and histogram(name), as the
-- stock filter has them (see api/stats.rs for how names become metrics).
local base = require("resty_ffi.envoy.api")

local api, check, num = base.api, base.check, base.num

-- Kinds and operations of api.stat.
local COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
local READ, ADD, SUB, SET, RECORD = 0, 1, 2, 3, 4

local function stat(self, op, amount)
  check(api.stat(self.ctx, self.kind, self.name, #self.name, op, amount or 0, num))
  return num[0]
end

local Counter = base.class("Counter")

function Counter:inc()
  stat(self, ADD, 1)
end

function Counter:add(amount)
  stat(self, ADD, base.number_arg(amount, 2))
end

function Counter:value()
  return stat(self, READ)
end

local Gauge = base.class("Gauge")

function Gauge:inc()
  stat(self, ADD, 1)
end

function Gauge:dec()
  stat(self, SUB, 1)
end

function Gauge:add(amount)
  stat(self, ADD, base.number_arg(amount, 2))
end

function Gauge:sub(amount)
  stat(self, SUB, base.number_arg(amount, 2))
end

function Gauge:set(value)
  stat(self, SET, base.number_arg(value, 2))
end

function Gauge:value()
  return stat(self, READ)
end

local Histogram = base.class("Histogram")

function Histogram:recordValue(value)
  stat(self, RECORD, base.number_arg(value, 2))
end

local Stats = base.class("Stats")

function Stats:counter(name)
  return base.new(Counter, { ctx = self.ctx, kind = COUNTER, name = base.string_arg(name, 2) })
end

function Stats:gauge(name)
  return base.new(Gauge, { ctx = self.ctx, kind = GAUGE, name = base.string_arg(name, 2) })
end

function Stats:histogram(name)
  return base.new(Histogram, { ctx = self.ctx, kind = HISTOGRAM, name = base.string_arg(name, 2) })
end

return {
  new = function(ctx)
    return base.new(Stats, { ctx = ctx })
  end,
}
