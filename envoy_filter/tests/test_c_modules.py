"""Lua C modules on Envoy (issue 19). Scripts run on the LuaJIT the Envoy
binary exports, so C modules work as in the stock Lua filter: the cross-host
fixture tests/fixtures/c_module_cases.lua (Debian's lua-cjson and a C module
built here) gives the same answers under envoy.filters.http.lua and under
ours, in one Envoy. The build with a private LuaJIT (`vendored-luajit`)
refuses C modules with a clear Lua error instead of crashing."""

import os
import shutil
import subprocess

import harness

CMODULE_DIR = harness.ROOT / "target" / "envoy_tests" / "cmodules"
CMODULE_SRC = harness.FIXTURES / "lua_c_module.c"
VENDORED_DIR = harness.ROOT / "target" / "vendored-luajit" / "release"

PORT_STOCK, PORT_OURS, PORT_CPATH, ADMIN = harness.free_ports(4)

# /<case> answers what the case returned; /expected/<case> what it must return.
SCRIPT = r"""
local cases = require("c_module_cases")

function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  local expected = path:match("^/expected/(.*)")
  local name = path:sub(2)
  local body = expected and cases.expected[expected] or cases[name]("%(dir)s")
  handle:respond({ [":status"] = "200" }, body)
end
""" % {"dir": CMODULE_DIR}

CASE_NAMES = ["cjson", "cjson_safe", "own_module"]

# Loads the module on the first request (the same Envoy serves the private
# LuaJIT build's refusal case, whose config check would refuse it at the top).
CPATH_SCRIPT = r"""
local m
function envoy_on_request(handle)
  m = m or require("resty_ffi_test_cmodule")
  handle:respond({ [":status"] = "200" }, tostring(m.add(40, 2)))
end
"""

TOP_LEVEL_C_MODULE = r"""
local cjson = require("cjson")
"""

REFUSED_SCRIPT = r"""
function envoy_on_request(handle)
  package.cpath = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;" .. package.cpath
  local ok, err = pcall(require, "cjson")
  local lib, lib_err = package.loadlib("/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so", "luaopen_cjson")
  handle:respond({ [":status"] = "200" }, table.concat({ tostring(ok), err, tostring(lib), lib_err }, "|||"))
end
"""


def build_c_module():
    CMODULE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I/usr/include/luajit-2.1", "-o",
                    str(CMODULE_DIR / "resty_ffi_test_cmodule.so"), str(CMODULE_SRC)], check=True)


def setup():
    build_c_module()
    os.environ["LUA_PATH"] = f"{harness.FIXTURES}/?.lua;;"
    listeners = [
        harness.listener("stock", PORT_STOCK, harness.stock_lua(SCRIPT)),
        harness.listener("ours", PORT_OURS, harness.ours(SCRIPT, lua_package_path=None)),
        harness.listener("cpath", PORT_CPATH, harness.ours(CPATH_SCRIPT, lua_package_cpath=f"{CMODULE_DIR}/?.so;;")),
    ]
    return harness.Envoy(listeners, ADMIN, concurrency=2)


def teardown(envoy):
    envoy.stop()


def get(port, path):
    status, _, body = harness.request(port, path)
    assert status == 200, (port, path, status, body)
    return body


def make_case(name):
    def case(envoy):
        stock, ours = get(PORT_STOCK, f"/{name}"), get(PORT_OURS, f"/{name}")
        expected = get(PORT_OURS, f"/expected/{name}")
        assert stock == ours == expected, f"\n stock: {stock}\n ours:  {ours}\n expected: {expected}"
        # Each worker's VM loads the module once; later requests reuse it.
        for _ in range(20):
            assert get(PORT_OURS, f"/{name}") == expected
        envoy.assert_no_crash()
    return case


def case_filter_config_sets_the_c_module_path(envoy):
    assert get(PORT_CPATH, "/") == b"42"


def case_private_luajit_refuses_c_modules(_):
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--manifest-path", str(harness.ROOT / "Cargo.toml"),
                    "-p", "resty_ffi_envoy", "--no-default-features", "--features", "vendored-luajit",
                    "--target-dir", str(VENDORED_DIR.parent)], check=True)
    port, admin = harness.free_ports(2)
    envoy = harness.Envoy([harness.listener("refused", port, harness.ours(REFUSED_SCRIPT))], admin,
                          module_dir=VENDORED_DIR)
    try:
        ok, err, lib, lib_err = get(port, "/").split(b"|||")
        assert ok == b"false" and b"resty_ffi: this build of the Envoy filter runs its own LuaJIT" in err, err
        assert lib == b"nil" and lib_err.startswith(b"resty_ffi: this build"), lib_err
        envoy.assert_no_crash()
    finally:
        envoy.stop()
    # A C module required at the top level: the config is refused, with why.
    try:
        envoy = harness.Envoy([harness.listener("top", port, harness.ours(TOP_LEVEL_C_MODULE,
                                                lua_package_cpath="/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;"))],
                              admin, module_dir=VENDORED_DIR)
    except RuntimeError as e:
        assert "script load error:" in str(e) and "runs its own LuaJIT" in str(e), e
    else:
        envoy.stop()
        raise AssertionError("the private-LuaJIT build accepted a script that loads a C module at its top level")


CASES = [(f"case_same_as_stock_lua_{name}", make_case(name)) for name in CASE_NAMES]
CASES += [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
