"""Envoy's own Lua filter and ours in one filter chain: every stream runs the
stock filter's LuaJIT VMs (with Debian's lua-cjson, a C module bound to
Envoy's LuaJIT) and ours, whose ffi calls yield between them, on the request
and on the response path. Whatever LuaJIT ours runs (Envoy's, or a private
copy in the `vendored` static build) and however it is loaded (dynamic
module, or linked in: static_mode.py), neither may disturb the other: same
answers under 200 concurrent clients, separate globals, no crash."""

import concurrent.futures
import json

import harness

PORT, ADMIN = harness.free_ports(2)

CJSON = 'package.cpath = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;" .. package.cpath\n' \
        'local cjson = require("cjson")\n'

# Decodes first, encodes last (the response path runs the chain backwards).
STOCK_FIRST = CJSON + r"""
function envoy_on_request(handle)
  owner = "stock_first"
  local sum = coroutine.wrap(function(n)
    local s = 0
    for i = 1, n do s = s + i end
    coroutine.yield(s)
  end)
  handle:headers():add("x-stock", cjson.encode({ sum = sum(1000), path = handle:headers():get(":path") }))
end

function envoy_on_response(handle)
  local body = handle:body()  -- waits: take the headers after it
  local h = handle:headers()
  body:setBytes(cjson.encode({
    body = body:getBytes(0, body:length()),
    last = h:get("x-last"),
    ours = h:get("x-ours"),
    owner = owner,
  }))
end
"""

OURS = r"""
require("resty_ffi")
local echo = assert(ngx.load_ffi("rust_echo"))

function envoy_on_request(handle)
  local h = handle:headers()
  local ok, res = echo:echo(h:get("x-stock"), handle)
  collectgarbage()
  h:add("x-ours-req", tostring(ok) .. "|" .. res .. "|" .. tostring(owner))
end

function envoy_on_response(handle)
  local body = handle:body()
  local ok, res = echo:echo(body:getBytes(0, body:length()), handle)
  handle:headers():add("x-ours", tostring(ok) .. "|" .. res .. "|" .. handle:headers():get("x-last"))
end
"""

STOCK_LAST = CJSON + r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local ok, json, seen_owner = h:get("x-ours-req"):match("^(%a+)|(.*)|(.*)$")
  local t = cjson.decode(json)
  handle:respond({ [":status"] = "200", ["x-last"] = "answered" },
                 table.concat({ ok, t.sum, t.path, seen_owner, tostring(owner) }, ","))
end
"""


def setup():
    chain = [harness.stock_lua(STOCK_FIRST), harness.ours(OURS), harness.stock_lua(STOCK_LAST)]
    return harness.Envoy([harness.listener("neighbours", PORT, chain)], ADMIN, concurrency=2)


def teardown(envoy):
    envoy.stop()


def expected(path):
    body = f"true,500500,{path},nil,nil"
    return {"body": body, "last": "answered", "ours": f"true|{body}|answered", "owner": "stock_first"}


def get(path):
    status, _, body = harness.request(PORT, path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def case_both_filters_answer_in_one_stream(envoy):
    assert get("/one") == expected("/one")
    envoy.assert_no_crash()


def case_two_hundred_clients(envoy):
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        got = list(pool.map(lambda i: get(f"/c{i}"), range(400)))
    for i, answer in enumerate(got):
        assert answer == expected(f"/c{i}"), (i, answer)
    envoy.assert_no_crash()


CASES = [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
