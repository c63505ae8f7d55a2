-- A script given by file name (default_source_code.filename) in the
-- converter's test configs.
function envoy_on_request(request_handle)
  request_handle:headers():add("x-from-file", "main.lua")
end
