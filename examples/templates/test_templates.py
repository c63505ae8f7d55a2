#!/usr/bin/env python3
"""Every template, as a user takes it: copied to a directory outside the
repository, built there with its one command, then loaded into one nginx and
one Envoy that call each of them through the same Lua file.

    python3 examples/templates/test_templates.py      (after `bazel build //...`)
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "hosts"))
import hosts  # noqa: E402

ROOT, BIN = hosts.ROOT, hosts.BIN
TEMPLATES = ROOT / "examples" / "templates"
LANGS = ["c", "go", "rust", "python", "java", "nodejs"]

# The Lua both hosts run: call(lang, req) -> "ok|res" or "false|rc|err".
LUA = r"""
require("resty_ffi")
local DIR = "{dir}"
local LOAD = {{
  c = function() return ngx.load_ffi(DIR .. "/c/libmy_runtime.so") end,
  go = function() return ngx.load_ffi(DIR .. "/go/libmy_runtime.so") end,
  rust = function() return ngx.load_ffi(DIR .. "/rust/target/release/libmy_runtime.so", "2") end,
  python = function()
    return ngx.load_ffi("{bin}/examples/python/libffi_python3.so", DIR .. "/python/my_runtime,init", {{ is_global = true }})
  end,
  java = function() return ngx.load_ffi("{bin}/examples/java/libffi_java.so", "my_runtime.Upper,init") end,
  nodejs = function()
    return ngx.load_ffi("{bin}/examples/nodejs/libffi_nodejs.so", DIR .. "/nodejs,init", {{ is_global = true }})
  end,
}}

local M = {{}}

function M.call(lang, req)
  local rt, err = LOAD[lang]()
  if not rt then
    return "load failed: " .. tostring(err)
  end
  local out = {{}}
  for _, v in ipairs({{ rt:call(req) }}) do
    out[#out + 1] = tostring(v)
  end
  return table.concat(out, "|")
end

return M
"""

NGINX_CONF = """
user root;
worker_processes 2;
error_log logs/error.log warn;
pid logs/nginx.pid;
env PYTHONPATH;
env CLASSPATH;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module {bin}/nginx_module/ngx_http_resty_ffi_module.so;
events {{ worker_connections 256; }}
http {{
    access_log off;
    lua_package_path "{lua}/?.lua;{dir}/?.lua;;";
    server {{
        listen 127.0.0.1:{port};
        location / {{
            content_by_lua_block {{
                ngx.say(require("templates").call(ngx.var.arg_lang, ngx.var.arg_req))
            }}
        }}
    }}
}}
"""

ENVOY_SCRIPT = """
local templates = require("templates")
function envoy_on_request(handle)
  local lang, req = handle:headers():get(":path"):match("^/%?lang=(%w+)&req=(%w*)$")
  handle:respond({ [":status"] = "200" }, templates.call(lang, req) .. "\\n")
end
"""



def build(work):
    """Copies each template to `work` and builds it with its one command."""
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod")
    env["PATH"] = f"{pathlib.Path.home() / '.cargo' / 'bin'}:{env['PATH']}"
    for lang in LANGS:
        shutil.copytree(TEMPLATES / lang, work / lang)
    # The one line a user edits: where the SDK is (Cargo.toml names it by path).
    cargo_toml = work / "rust" / "Cargo.toml"
    text = cargo_toml.read_text()
    assert 'path = "../../../sdk"' in text
    cargo_toml.write_text(text.replace('path = "../../../sdk"', f'path = "{ROOT / "sdk"}"'))
    commands = {
        "c": ["make"],
        "go": ["go", "build", "-buildmode=c-shared", "-o", "libmy_runtime.so", "."],
        "rust": ["cargo", "build", "--release", "--offline", "--quiet"],
        "java": ["./build.sh", str(BIN / "examples" / "java" / "resty_ffi.jar")],
    }
    for lang, cmd in commands.items():
        subprocess.run(cmd, cwd=work / lang, env=env, check=True)


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_templates_"))
    assert ROOT not in work.parents
    servers = []
    port, envoy_port, admin = hosts.free_ports(3)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "examples" / "python"),
               CLASSPATH=str(work / "java" / "my_runtime.jar"))

    def check(server_port, server):
        for lang in LANGS:
            got = hosts.get(server_port, f"/?lang={lang}&req=hello")
            assert got == (200, b"true|HELLO\n"), (lang, got, server.text()[-3000:])
            got = hosts.get(server_port, f"/?lang={lang}&req=")
            assert got == (200, b"false|22|empty request\n"), (lang, got, server.text()[-3000:])

    def case_build_outside_the_tree():
        build(work)
        (work / "templates.lua").write_text(LUA.format(dir=work, bin=BIN))

    def case_nginx():
        prefix = work / "nginx"
        (prefix / "logs").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(bin=BIN, lua=ROOT / "lua", dir=work, port=port))
        server = hosts.nginx(prefix, prefix / "nginx.conf", env=env)
        servers.append(server)
        hosts.wait_port(port, server.proc)
        try:
            check(port, server)
        finally:
            import signal
            assert server.stop(signal.SIGQUIT) == 0
            log = (prefix / "logs" / "error.log").read_text()
            assert "[alert]" not in log and "exited on signal" not in log, log

    def case_envoy():
        (work / "envoy.lua").write_text(ENVOY_SCRIPT)
        (work / "envoy.yaml").write_text(hosts.envoy_yaml("templates", envoy_port, admin, work / "envoy.lua"))
        envoy_env = dict(env, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(BIN / "cargo"),
                         LUA_PATH=f"{ROOT / 'lua'}/?.lua;{work}/?.lua;;")
        server = hosts.envoy(work / "envoy.yaml", work / "envoy.log", env=envoy_env)
        servers.append(server)
        hosts.wait_port(envoy_port, server.proc)
        try:
            check(envoy_port, server)
        finally:
            assert server.stop() == 0, server.text()[-3000:]

    try:
        hosts.run([("build_outside_the_tree", case_build_outside_the_tree), ("nginx", case_nginx),
                   ("envoy", case_envoy)])
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
