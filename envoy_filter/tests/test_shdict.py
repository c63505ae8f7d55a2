"""ngx.shared on Envoy: the cross-host fixture tests/fixtures/shdict_cases.lua
with the answers nginx gives (tests/fixtures/shdict_expected.json), runtimes
reaching the same dicts (resty_ffi_shdict_*), exactness under contention
between runtime threads and two worker threads, dicts shared by filter
configs and kept across config updates (same name and size)."""

import concurrent.futures
import json
import os
import pathlib
import tempfile
import time

import harness

PORT, ADMIN = harness.free_ports(2)
EXPECTED = json.loads((harness.FIXTURES / "shdict_expected.json").read_text())
DICTS = {"dict": "1m", "small": "64k"}

SCRIPT = r"""
local cases = require("shdict_cases")
function envoy_on_request(handle)
  local name, n = handle:headers():get(":path"):match("^/case/([%w_]+)%??n?=?(%d*)$")
  n = tonumber(n)
  local answer
  if n then
    answer = cases[name](n, handle)
  else
    answer = cases[name](handle)
  end
  handle:respond({ [":status"] = "200" }, answer)
end
"""


def setup():
    lua_path = f"{harness.LUA_DIR}/?.lua;{harness.FIXTURES}/?.lua;;"
    flt = harness.ours(SCRIPT, lua_package_path=lua_path, shared_dicts=DICTS)
    return harness.Envoy([harness.listener("shdict", PORT, flt)], ADMIN, concurrency=2)


def teardown(envoy):
    envoy.stop()


def case(name, query="", port=PORT):
    status, _, body = harness.request(port, f"/case/{name}{query}", timeout=60)
    assert status == 200, (name, status, body)
    return body.decode()


def fixture_case(name):
    def run(envoy):
        got = case(name).split(";")
        diff = [(i, want, have) for i, (want, have) in enumerate(zip(EXPECTED[name], got)) if want != have]
        assert got == EXPECTED[name], diff or (len(got), len(EXPECTED[name]))
        envoy.assert_no_crash()
    return run


def case_contention_runtime_threads_and_two_workers(envoy):
    """4 runtime threads (2 per worker) and 2 worker threads' Lua each incr
    the same key 100,000 times: exactly 600,000."""
    share = 100000
    ran = 0
    deadline = time.monotonic() + 120
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while ran < 2 and time.monotonic() < deadline:
            for answer in pool.map(lambda _: case("contention_share", f"?n={share}"), range(4)):
                if answer != "skipped":
                    assert answer == "ran started 0", answer
                    ran += 1
    assert ran == 2, f"only {ran} worker(s) did their share"
    assert case("contention_total") == "2|600000"
    envoy.assert_no_crash()


# -------------------------------------------------- configs and updates --

CONFIG_SCRIPT = r"""
require("resty_ffi")
%(top)s
function envoy_on_request(handle)
  local d = ngx.shared.dict
  local path = handle:headers():get(":path")
  local answer
  if path == "/set" then
    answer = tostring(d:set("kept", "%(version)s"))
  elseif path == "/runtime" then
    local rt = assert(ngx.load_ffi("test_runtime"))
    answer = select(2, rt:call("shdict_get:dict:kept", handle))
  else
    answer = tostring(d:get("kept")) .. " " .. tostring(d:capacity())
  end
  handle:respond({ [":status"] = "200", ["x-version"] = "%(version)s" }, answer)
end
"""


def config_listener(port, version, size, top=""):
    script = CONFIG_SCRIPT % {"version": version, "top": top}
    return harness.listener("cfg", port, harness.ours(script, shared_dicts={"dict": size}))


def write_lds(path, listener):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}))
    os.rename(tmp, path)


def served(port, version):
    status, headers, _ = harness.request(port, "/")
    return status == 200 and dict(headers).get("x-version") == version


def case_config_updates_keep_a_dict_of_the_same_name_and_size(_):
    port, admin = harness.free_ports(2)
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_shdict_"))
    lds = work / "lds.json"
    write_lds(lds, config_listener(port, "v0", "1m"))
    config = {
        "node": {"id": "shdict", "cluster": "shdict"},
        "dynamic_resources": {"lds_config": {"path_config_source": {
            "path": str(lds), "watched_directory": {"path": str(work)}}}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
    }
    envoy = harness.Envoy([], admin, concurrency=2, config_text=json.dumps(config),
                          extra_args=["--drain-time-s", "1", "--drain-strategy", "immediate"])
    get = lambda path: harness.request(port, path)[2].decode()  # noqa: E731
    try:
        harness.wait_until(lambda: served(port, "v0"), 10)
        assert get("/set") == "true"
        assert get("/") == "v0 1048576"
        # Same name and size: the new config's scripts and the runtimes see
        # what the old one wrote.
        write_lds(lds, config_listener(port, "v1", "1m"))
        harness.wait_until(lambda: served(port, "v1"), 20)
        assert get("/") == "v0 1048576"
        assert get("/runtime") == "1|v0|0"
        # A config whose script fails is rejected and changes no dict, even
        # one it would have resized.
        write_lds(lds, config_listener(port, "bad", "2m", top="error('broken config')"))
        harness.wait_until(lambda: "broken config" in envoy.log_text(), 20)
        assert served(port, "v1") and get("/") == "v0 1048576"
        assert get("/runtime") == "1|v0|0"
        # Another size: a new, empty dict.
        write_lds(lds, config_listener(port, "v2", "2m"))
        harness.wait_until(lambda: served(port, "v2"), 20)
        assert get("/") == "nil 2097152"
        assert get("/runtime") == "0"
        envoy.assert_no_crash()
    finally:
        envoy.stop()


def case_filter_configs_share_dicts_and_bad_declarations_are_refused(_):
    """Two listeners, two filter configs declaring the same dict: one dict.
    Declarations that cannot work reject the config."""
    ports = harness.free_ports(3)
    script = r"""
function envoy_on_request(handle)
  local d = ngx.shared.common
  if handle:headers():get(":path") == "/set" then d:set("k", "from " .. d:capacity()) end
  handle:respond({ [":status"] = "200" }, tostring(d:get("k")) .. " " .. tostring(ngx.shared.dict))
end
"""
    listeners = [harness.listener(f"l{i}", ports[i], harness.ours(script, shared_dicts={"common": 65536}))
                 for i in range(2)]
    envoy = harness.Envoy(listeners, ports[2], concurrency=2)
    try:
        assert harness.request(ports[0], "/set")[2] == b"from 65536 nil"
        assert harness.request(ports[1], "/")[2] == b"from 65536 nil"
    finally:
        envoy.stop()
    for bad, why in [({"d": "8191"}, "invalid shared dict"), ({"d": "lots"}, "a size is a number of bytes"),
                     ({"d": -1}, "a size is a number of bytes"), ([1], "must be a map of names to sizes"),
                     ({"": "1m"}, "invalid shared dict")]:
        port, admin = harness.free_ports(2)
        try:
            harness.Envoy([harness.listener("bad", port, harness.ours(script, shared_dicts=bad))], admin)
        except RuntimeError as e:
            assert why in str(e), (bad, str(e)[-2000:])
        else:
            raise AssertionError(f"{bad} was accepted")


CASES = [(f"case_fixture_{name}", fixture_case(name)) for name in sorted(EXPECTED)]
CASES += [(name, fn) for name, fn in globals().items() if name.startswith("case_") and callable(fn)]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
