-- Loaded through default_source_code.filename: answers with the request body
-- after a round trip through the Rust echo runtime.
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))

function envoy_on_request(handle)
  local body = handle:body(true)
  local ok, res = echo:echo(body:getBytes(0, body:length()), handle)
  handle:respond({ [":status"] = ok and "200" or "500" }, res)
end
