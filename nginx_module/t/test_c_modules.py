"""Lua C modules next to resty_ffi on nginx: the cross-host fixture
tests/fixtures/c_module_cases.lua (Debian's lua-cjson and a C module built
here) gives the answers it expects, as on Envoy (envoy_filter/tests/test_c_modules.py)."""

import subprocess

import pytest

from conftest import FIXTURES

CASES = ["cjson", "cjson_safe", "own_module"]


@pytest.fixture
def cmodule_dir(tmp_path):
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I/usr/include/luajit-2.1", "-o",
                    str(tmp_path / "resty_ffi_test_cmodule.so"), str(FIXTURES / "lua_c_module.c")], check=True)
    return tmp_path


@pytest.mark.parametrize("case", CASES)
def test_c_module_cases_answer_as_expected(nginx, cmodule_dir, case):
    n = nginx(server=f"""location /t {{ content_by_lua_block {{
        require('resty_ffi')
        local cases = require('c_module_cases')
        ngx.print(cases['{case}']('{cmodule_dir}'), '\\n', cases.expected['{case}'])
    }} }}""")
    status, body = n.get("/t")
    assert status == 200, body
    got, expected = body.split(b"\n")
    assert got == expected
