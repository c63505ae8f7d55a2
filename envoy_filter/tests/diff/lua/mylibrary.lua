-- A module found through LUA_PATH (set by test_diff.py), as in the shape of
-- Envoy's Lua example: both filters must find it the same way.
local M = {}

function M.foobar()
  return "bar"
end

return M
