"""Cases: headers, body, bodyChunks, trailers, respond(), Lua errors and the
handle's lifetime."""

from diff.model import TRY, Case, get, post

MULTI = [("x-multi", "a"), ("x-multi", "b"), ("x-removed", "gone"), ("x-replaced", "old"), ("X-Mixed-Case", "M")]

# A header dump that leaves out what differs between two requests.
DUMP = r"""
local function dump(h)
  local seen = {}
  for k, v in pairs(h) do
    if k ~= "x-request-id" then seen[#seen + 1] = k .. "=" .. v end
  end
  return table.concat(seen, "\n")
end
"""

CASES = [
    Case("headers_read", TRY + DUMP + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local out = {}
  try(out, "get", h.get, h, "x-multi")
  try(out, "get mixed case", h.get, h, "x-mixed-case")
  try(out, "get upper", h.get, h, "X-MULTI")
  try(out, "get missing", h.get, h, "x-missing")
  try(out, "n", h.getNumValues, h, "x-multi")
  try(out, "n missing", h.getNumValues, h, "x-missing")
  for _, i in ipairs({0, 1, 2, -1}) do try(out, "at " .. i, h.getAtIndex, h, "x-multi", i) end
  try(out, "at missing", h.getAtIndex, h, "x-missing", 0)
  try(out, "pseudo", function() return h:get(":method"), h:get(":path"), h:get(":authority"), h:get(":scheme") end)
  out[#out + 1] = dump(h)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", [get("/h?q=1", MULTI), post("/p", b"abc", MULTI)]),

    Case("headers_modify_continue", r"""
function envoy_on_request(handle)
  local h = handle:headers()
  h:add("x-added", "one")
  h:add("x-added", "two")
  h:add("X-Upper-Added", "u")
  h:replace("x-replaced", "new")
  h:replace("x-fresh", "created")
  h:replace("x-multi", "single")
  h:remove("x-removed")
  h:remove("x-not-there")
  h:add("x-num", 42)
  h:add("x-float", 1.5)
end
""", [get("/", MULTI), post("/", b"body", MULTI)]),

    Case("headers_pseudo_rewrite", r"""
function envoy_on_request(handle)
  local h = handle:headers()
  h:replace(":path", "/rewritten" .. h:get(":path"))
  h:replace(":method", "PUT")
  h:replace(":authority", "other.host")
end
""", [get("/orig?x=1"), post("/p", b"data")]),

    Case("headers_argument_errors", TRY + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local out = {}
  try(out, "add nil", h.add, h, "x", nil)
  try(out, "add bool", h.add, h, "x", true)
  try(out, "add table", h.add, h, "x", {})
  try(out, "add no key", h.add, h)
  try(out, "get number", h.get, h, 42)
  try(out, "get nil", h.get, h, nil)
  try(out, "replace nil", h.replace, h, "x", nil)
  try(out, "remove nil", h.remove, h, nil)
  try(out, "at string", h.getAtIndex, h, ":path", "a")
  try(out, "at nil", h.getAtIndex, h, ":path")
  try(out, "n nil", h.getNumValues, h)
  -- as a method call in a statement (not a tail call): the error names the method
  try(out, "method call", function() local v = h:add("x") return v end)
  try(out, "missing method", function() return h:nope() end)
  try(out, "index field", function() return h.nope end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
"""),

    Case("headers_modify_while_iterating", TRY + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local out = {}
  try(out, "add in loop", function()
    for k, v in pairs(h) do h:add("x-loop", k) end
  end)
  try(out, "remove in loop", function()
    for k, v in pairs(h) do h:remove("x-multi") end
  end)
  try(out, "after break", function()
    for k, v in pairs(h) do break end
    h:add("x-after-break", "1")
  end)
  try(out, "after full loop", function()
    for k, v in pairs(h) do end
    h:add("x-after-loop", "1")
    return h:get("x-after-loop")
  end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", [get("/", MULTI)]),

    Case("headers_after_they_went_on", TRY + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local n = 0
  for chunk in handle:bodyChunks() do
    n = n + 1
    local ok, err = pcall(h.add, h, "x-late", "1")
    handle:logInfo("chunk " .. n .. " add: " .. tostring(ok) .. " " .. clean(err))
  end
  local ok, err = pcall(h.replace, h, "x-late", "2")
  handle:logInfo("after chunks replace: " .. tostring(ok) .. " " .. clean(err))
end

function envoy_on_response(handle)
  local h = handle:headers()
  handle:body()
  local ok, err = pcall(h.add, h, "x-resp-after-body", "1")
  handle:logInfo("response add after body: " .. tostring(ok) .. " " .. clean(err))
end
""", [post("/", [b"one", b"two"]), get("/")]),

    Case("headers_object_kept_across_yields", r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local body = handle:body()
  h:add("x-after-body", tostring(body and body:length()))
end

function envoy_on_response(handle)
  local h = handle:headers()
  handle:body()
  h:add("x-resp-after-body", "yes")
end
""", [post("/", b"payload"), get("/")]),

    Case("response_headers", DUMP + r"""
function envoy_on_response(handle)
  local h = handle:headers()
  h:add("x-seen-status", h:get(":status"))
  h:add("x-seen-upstream", tostring(h:get("x-upstream")))
  h:replace("content-type", "text/replaced")
  h:remove("x-upstream")
  h:add("x-dup", "1")
  h:add("x-dup", "2")
  h:replace(":status", h:get(":status") == "500" and "502" or "203")
end
""", [get("/"), get("/", [("x-up-status", "500")]), get("/", [("x-up-headers", "a=1;a=2;b=3")])]),

    Case("response_reason_phrase", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  local h = handle:headers()
  try(out, "request flow", h.setHttp1ReasonPhrase, h, "Nope")
  handle:headers():add("x-result", table.concat(out, ";"))
end

function envoy_on_response(handle)
  local h = handle:headers()
  h:setHttp1ReasonPhrase("Very Fine")
  local ok, err = pcall(h.setHttp1ReasonPhrase, h, 42)
  h:add("x-number-reason", tostring(ok) .. " " .. clean(err))
end
""", [get("/")],
         differs="setHttp1ReasonPhrase: Envoy 1.40's ABI cannot set the reason phrase"),

    Case("request_headers_in_response", TRY + r"""
function envoy_on_request(handle)
  local rh = handle:requestHeaders()
  rh:add("x-via-request-headers", "1")
end

function envoy_on_response(handle)
  local out = {}
  local rh = handle:requestHeaders()
  try(out, "get", rh.get, rh, ":path")
  try(out, "get added", rh.get, rh, "x-via-request-headers")
  try(out, "add", rh.add, rh, "x-too-late", "1")
  handle:headers():add("x-result", table.concat(out, ";"))
end
""", [get("/req-headers")]),

    # --------------------------------------------------------------- body --
    Case("request_body", r"""
function envoy_on_request(handle)
  local body = handle:body()
  local out = "nobody"
  if body then
    local n = body:length()
    out = n .. ":" .. body:getBytes(0, n) .. ":" .. (n >= 4 and body:getBytes(1, 3) or "")
  end
  handle:respond({ [":status"] = "200" }, out)
end
""", [post("/", b"hello world"), get("/"), post("/", b""), post("/", [b"chunk1-", b"chunk2-", b"chunk3"])]),

    Case("request_body_always_wrap", r"""
function envoy_on_request(handle)
  local body = handle:body(true)
  local n = body:length()
  if n == 0 then
    body:setBytes("filled by lua")
  else
    body:setBytes(body:getBytes(0, n):upper())
  end
  handle:headers():add("x-original-length", tostring(n))
end
""", [get("/"), post("/", b"some text"), post("/", b"")]),

    Case("request_body_twice", r"""
function envoy_on_request(handle)
  local a = handle:body()
  local b = handle:body()
  handle:respond({ [":status"] = "200" },
    tostring(a and a:length()) .. " " .. tostring(b and b:length()) .. " " .. tostring(rawequal(a, b)) ..
    " " .. (b and b:getBytes(0, b:length()) or ""))
end
""", [post("/", b"twice"), get("/")]),

    Case("objects_as_wrong_arguments", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  local h = handle:headers()
  try(out, "wrong self", h.get, handle, "x")
  try(out, "no self", h.get)
  try(out, "handle no self", handle.headers)
  try(out, "handle number self", handle.headers, 42)
  local key = handle:importPublicKey("x", 1)
  try(out, "object as a string argument", handle.verifySignature, handle, "sha256", key, "s", 1, "d", 1)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", differs="objects are tables: errors name our type (and 'table'), not Envoy's C++ class and 'userdata'"),

    Case("body_length_after_set_bytes", r"""
function envoy_on_request(handle)
  local b = handle:body()
  b:setBytes("12345")
  handle:respond({ [":status"] = "200" }, "length after = " .. b:length())
end
""", [post("/", b"hello body")]),

    Case("body_get_bytes_errors", TRY + r"""
function envoy_on_request(handle)
  local b = handle:body()
  local out = {}
  try(out, "all", b.getBytes, b, 0, b:length())
  try(out, "past end", b.getBytes, b, 0, b:length() + 1)
  try(out, "start past end", b.getBytes, b, b:length(), 1)
  try(out, "zero length", b.getBytes, b, 0, 0)
  try(out, "negative index", b.getBytes, b, -1, 2)
  try(out, "negative length", b.getBytes, b, 0, -2)
  try(out, "string index", b.getBytes, b, "a", 1)
  try(out, "float", b.getBytes, b, 1.5, 2)
  try(out, "setBytes number", b.setBytes, b, 12345)
  try(out, "setBytes nil", b.setBytes, b, nil)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", [post("/", b"0123456789")]),

    Case("request_body_large", r"""
function envoy_on_request(handle)
  local body = handle:body()
  local n = body:length()
  local s = body:getBytes(0, n)
  handle:headers():add("x-length", tostring(n))
  handle:headers():add("x-sum", tostring(#s:gsub("[^a]", "")))
  body:setBytes(s:sub(1, 100))
end
""", [post("/", b"a" * 40000 + b"b" * 25000)]),

    Case("response_body_rewrite", r"""
function envoy_on_response(handle)
  local body = handle:body()
  local text = body:getBytes(0, body:length())
  body:setBytes("[" .. text:upper() .. "]")
  handle:headers():add("x-original-length", tostring(#text))
end
""", [get("/abc"), get("/chunked", [("x-up-chunks", "3")]), get("/none", [("x-up-no-body", "1")])]),

    Case("response_body_nil_and_wrapped", r"""
function envoy_on_response(handle)
  local path = handle:requestHeaders():get(":path")
  if path == "/wrap" then
    local body = handle:body(true)
    body:setBytes("added to an empty answer")
  else
    handle:headers():add("x-body", tostring(handle:body()))
  end
end
""", [get("/wrap", [("x-up-no-body", "1")]), get("/nil", [("x-up-no-body", "1")])]),

    Case("request_body_chunks", r"""
function envoy_on_request(handle)
  local n, total = 0, 0
  for chunk in handle:bodyChunks() do
    n = n + 1
    total = total + chunk:length()
    handle:logInfo("chunk " .. n .. ": " .. chunk:getBytes(0, chunk:length()))
    chunk:setBytes("<" .. chunk:getBytes(0, chunk:length()) .. ">")
  end
  handle:logInfo("chunks done: " .. n .. " " .. total)
end
""", [post("/", [b"one", b"two", b"three"]), get("/")]),

    Case("response_body_chunks", r"""
function envoy_on_response(handle)
  local sizes = {}
  for chunk in handle:bodyChunks() do
    sizes[#sizes + 1] = chunk:length()
    chunk:setBytes(chunk:getBytes(0, chunk:length()):upper())
  end
  handle:logInfo("response chunks: " .. table.concat(sizes, ","))
end
""", [get("/three-chunks-of-text", [("x-up-chunks", "3")]), get("/", [("x-up-no-body", "1")])]),

    Case("body_chunks_after_body", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  handle:body()
  try(out, "bodyChunks after body", function() return type(handle:bodyChunks()) end)
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", [post("/", b"x"), get("/")]),

    Case("body_after_body_chunks", TRY + r"""
function envoy_on_request(handle)
  for chunk in handle:bodyChunks() do end
  local ok, err = pcall(handle.body, handle)
  handle:logInfo("body after chunks: " .. tostring(ok) .. " " .. clean(err))
end
""", [post("/", [b"a", b"b"]), get("/")]),

    # ----------------------------------------------------------- trailers --
    Case("request_trailers", DUMP + r"""
function envoy_on_request(handle)
  handle:body()
  local t = handle:trailers()
  if t then
    t:add("x-lua-trailer", "added")
    t:replace("x-client-trailer", "replaced:" .. t:get("x-client-trailer"))
    handle:logInfo("trailers: " .. dump(t))
  else
    handle:logInfo("no trailers")
  end
end
""", [post("/", [b"part1", b"part2"], trailers=[("x-client-trailer", "v1"), ("x-other", "o")]),
      post("/", b"no trailers")]),

    Case("trailers_before_body", TRY + r"""
function envoy_on_request(handle)
  local t = handle:trailers()
  handle:logInfo("trailers first: " .. tostring(t ~= nil))
end
""", [post("/", [b"x"], trailers=[("x-t", "1")])]),

    Case("response_trailers", DUMP + r"""
function envoy_on_response(handle)
  for chunk in handle:bodyChunks() do end
  local t = handle:trailers()
  if t then
    t:add("x-lua-trailer", "1")
    t:remove("x-drop")
    handle:logInfo("response trailers: " .. dump(t))
  else
    handle:logInfo("no response trailers")
  end
end
""", [get("/", [("x-up-trailers", "x-up-t=1;x-drop=2")]), get("/")]),

    # ------------------------------------------------------------ respond --
    Case("respond_basic", r"""
function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  if path == "/deny" then
    handle:respond({ [":status"] = "403", ["x-reason"] = "denied", ["set-cookie"] = { "a=1", "b=2" } }, "nope")
  elseif path == "/empty" then
    handle:respond({ [":status"] = "204" })
  elseif path == "/nil-body" then
    handle:respond({ [":status"] = "200", ["content-type"] = "text/x" }, nil)
  elseif path == "/number-status" then
    handle:respond({ [":status"] = 202 }, "number")
  elseif path == "/typed" then
    handle:respond({ [":status"] = "200", ["Content-Type"] = "text/typed", ["content-length"] = "99" }, "typed")
  elseif path == "/length-no-body" then
    handle:respond({ [":status"] = "200", ["content-length"] = "0" })
  elseif path == "/spaced-status" then
    handle:respond({ [":status"] = " 201 " }, "spaced")
  elseif path == "/signed-status" then
    handle:respond({ [":status"] = "+202" }, "signed")
  elseif path == "/odd-status" then
    handle:respond({ [":status"] = "2e2" }, "odd")
  end
  handle:headers():add("x-req-seen", "1")
end

function envoy_on_response(handle)
  local h = handle:headers()
  h:add("x-on-response", "ran")
  h:add("x-seen-status", h:get(":status"))
  local body = handle:body()
  if body then body:setBytes(body:getBytes(0, body:length()) .. "!") end
end
""", [get("/deny"), get("/empty"), get("/nil-body"), get("/number-status"), get("/typed"),
       get("/length-no-body"), get("/spaced-status"), get("/signed-status"), get("/odd-status"), get("/allow")]),

    Case("respond_status_range", TRY + r"""
function envoy_on_request(handle)
  local status = handle:headers():get("x-status")
  local headers = { [":status"] = status }
  if status == "none" then headers = { ["x-a"] = "1" } end
  local ok, err = pcall(handle.respond, handle, headers, "body for " .. status)
  handle:logErr("respond " .. status .. ": " .. tostring(ok) .. " " .. clean(err))
  handle:headers():add("x-respond-error", clean(err))
end
""", [get("/", [("x-status", s)]) for s in ("199", "200", "599", "600", "0", "abc", "none", "-5", "200.5")]),

    Case("respond_argument_errors", TRY + r"""
function envoy_on_request(handle)
  local out = {}
  try(out, "no headers", handle.respond, handle)
  try(out, "headers string", handle.respond, handle, "x")
  try(out, "body table", handle.respond, handle, { [":status"] = "200" }, {})
  try(out, "header value bool", handle.respond, handle, { [":status"] = "200", ["x"] = true })
  try(out, "header value nested", handle.respond, handle, { [":status"] = "200", ["x"] = { { "a" } } })
  try(out, "header key number", handle.respond, handle, { [":status"] = "200", [5] = "x" })
  handle:headers():add("x-result", table.concat(out, ";"))
end
"""),

    Case("respond_in_response_flow", TRY + r"""
function envoy_on_response(handle)
  local ok, err = pcall(handle.respond, handle, { [":status"] = "500" }, "from response")
  handle:headers():add("x-respond", tostring(ok) .. " " .. clean(err))
end
"""),

    Case("respond_after_body_chunks", r"""
function envoy_on_request(handle)
  for chunk in handle:bodyChunks() do
    handle:respond({ [":status"] = "403" }, "nope")
  end
  handle:respond({ [":status"] = "403" }, "after")
end
""", [post("/", [b"a", b"b"]), get("/")]),

    Case("respond_after_body", r"""
function envoy_on_request(handle)
  local body = handle:body()
  handle:respond({ [":status"] = "200", ["x-len"] = tostring(body and body:length()) }, "seen")
end
""", [post("/", b"12345"), get("/")]),

    Case("respond_ends_the_script", r"""
function envoy_on_request(handle)
  handle:respond({ [":status"] = "200" }, "first")
  handle:logErr("after respond")
  handle:respond({ [":status"] = "500" }, "second")
end
"""),

    # ------------------------------------------------------------- errors --
    Case("lua_error_request", r"""
function envoy_on_request(handle)
  handle:headers():add("x-before", "1")
  error("boom")
end

function envoy_on_response(handle)
  handle:headers():add("x-resp", "1")
end
""", [get("/"), post("/", b"body")], stats=True),

    Case("lua_error_response", r"""
function envoy_on_response(handle)
  handle:headers():add("x-before", "1")
  local body = handle:body()
  error("response boom")
end
""", [get("/"), get("/", [("x-up-chunks", "2")])], stats=True),

    Case("lua_error_values", r"""
function envoy_on_request(handle)
  local kind = handle:headers():get("x-kind")
  if kind == "table" then error({ code = 1 }) end
  if kind == "nil" then error(nil) end
  if kind == "number" then error(42) end
  if kind == "level0" then error("no position", 0) end
  if kind == "runtime" then local t = nil; return t.field end
  if kind == "after-yield" then handle:body(); error("after yield") end
end
""", [get("/", [("x-kind", k)]) for k in ("table", "nil", "number", "level0", "runtime")]
        + [post("/", b"x", [("x-kind", "after-yield")])]),

    Case("lua_error_during_response_chunks", r"""
function envoy_on_response(handle)
  local n = 0
  for chunk in handle:bodyChunks() do
    n = n + 1
    chunk:setBytes("<" .. n .. ">")
    if n == 2 then error("failed at chunk 2") end
  end
end
""", [get("/", [("x-up-chunks", "3"), ("x-up-body", "aaaabbbbcccc")])]),

    Case("error_position", r"""
function envoy_on_request(handle)
  local ok, err = pcall(error, "plain")
  local ok2, err2 = pcall(function() error("with position") end)
  local ok3, err3 = pcall(function() local h = handle:headers(); h:add("x") end)
  local ok4, err4 = pcall(function() return handle:headers():get({}) end)
  handle:respond({ [":status"] = "200" }, table.concat({ err, err2, err3, tostring(err4) }, "\n"))
end
"""),

    Case("error_in_response_after_local_reply", r"""
function envoy_on_request(handle)
  handle:respond({ [":status"] = "401" }, "denied")
end

function envoy_on_response(handle)
  error("fails on the local reply")
end
"""),

    Case("handle_used_after_its_stream", TRY + r"""
local saved
function envoy_on_request(handle)
  local out = {}
  if saved then
    try(out, "old handle headers", saved.handle.headers, saved.handle)
    try(out, "old headers get", saved.headers.get, saved.headers, ":path")
    try(out, "old body length", saved.body.length, saved.body)
    try(out, "old stream info", saved.handle.streamInfo, saved.handle)
    try(out, "old log", saved.handle.logInfo, saved.handle, "stale")
  end
  saved = { handle = handle, headers = handle:headers(), body = handle:body(true) }
  handle:respond({ [":status"] = "200" }, table.concat(out, "\n"))
end
""", [post("/first", b"1"), post("/second", b"2")]),

    Case("yield_inside_pcall", r"""
function envoy_on_request(handle)
  local ok, body = pcall(handle.body, handle)
  local ok2, len = pcall(function() local b = handle:body() return b and b:length() end)
  handle:respond({ [":status"] = "200" }, tostring(ok) .. " " .. tostring(ok2) .. " " .. tostring(len))
end
""", [post("/", b"inside pcall"), get("/")]),

    Case("yield_inside_coroutine", TRY + r"""
function envoy_on_request(handle)
  local co = coroutine.create(function() return handle:body() end)
  local ok, err = coroutine.resume(co)
  handle:logInfo("nested coroutine: " .. tostring(ok) .. " " .. clean(err))
end
""", [post("/", b"x")],
         differs="a stock call that waits inside the script's own coroutine raises a clear error"),
]
