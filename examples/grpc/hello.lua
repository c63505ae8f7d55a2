-- The Lua file both configs run (nginx.conf, envoy.yaml): says hello through
-- the Greeter at $GREETER (host:port, default 127.0.0.1:50051).
local grpc = require("resty.ffi.grpc")

-- helloworld.proto is found through the include path ($GRPC_PROTOS).
grpc.add_include_path(os.getenv("GRPC_PROTOS") or ".")
assert(grpc.loadfile("helloworld.proto"))

local M = {}

-- "Hello <name>!", or the gRPC failure as text.
function M.hello(name)
  local ok, conn, err = grpc.connect(os.getenv("GREETER") or "127.0.0.1:50051")
  if not ok then
    return "connect failed: code " .. conn .. ": " .. err
  end
  local ok, res, err = conn:unary("/helloworld.Greeter/SayHello", { name = name }, { timeout = 1000 })
  if not ok then
    return "SayHello failed: code " .. res .. ": " .. err
  end
  return res.message
end

return M
