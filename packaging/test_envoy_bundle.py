#!/usr/bin/env python3
"""The Envoy bundle as a user takes it: unpacked outside the tree, its README's
command line run from its directory (ports changed in its example config),
its converter run; and a config without load_globally refused with the reason.

    python3 packaging/test_envoy_bundle.py [bundle.tar.gz]   (default: bazel-bin's)
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "hosts"))
import hosts  # noqa: E402

BUNDLE = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else hosts.BIN / "packaging" / "resty_ffi_envoy.tar.gz")
FILES = {"README.md", "lib/libresty_ffi_envoy.so", "lua/resty_ffi.lua", "bin/convert.py", "examples/envoy.yaml",
         "examples/runtimes/librust_echo.so"}

STOCK_LUA_CONFIG = """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}]}
          http_filters:
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code: {inline_string: "function envoy_on_request(h) end"}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"""


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_bundle_"))
    state = {}

    def readme_block(heading):
        """The first ```sh block after `heading` in the bundle's README."""
        text = (state["dir"] / "README.md").read_text()
        section = text[text.index(heading):]
        return re.search(r"```sh\n(.*?)```", section, re.S).group(1)

    def start(config_text, name):
        """Runs the README's command line from the bundle's directory with
        `config_text` as examples/envoy.yaml on free ports; returns (server, port)."""
        port, admin = hosts.free_ports(2)
        config = state["dir"] / "examples" / "envoy.yaml"
        assert "port_value: 10000" in config_text and "port_value: 9901" in config_text
        config.write_text(config_text.replace("port_value: 10000", f"port_value: {port}")
                          .replace("port_value: 9901", f"port_value: {admin}"))
        command = readme_block("## Run the example").replace("envoy -c", f"{hosts.envoy_binary()} -c")
        server = hosts.Server(["bash", "-c", f"{command.strip()} -l warning"], work / f"{name}.log",
                              cwd=state["dir"])
        hosts.wait_port(port, server.proc)
        return server, port

    def case_unpacks_outside_the_tree():
        with tarfile.open(BUNDLE) as tar:
            names = tar.getnames()
            tar.extractall(work)
        top = {n.split("/")[0] for n in names}
        assert len(top) == 1 and top.pop().startswith("resty_ffi-envoy-"), names
        state["dir"] = next(work.glob("resty_ffi-envoy-*"))
        found = {str(p.relative_to(state["dir"])) for p in state["dir"].rglob("*") if p.is_file()}
        assert found == FILES, found
        assert os.access(state["dir"] / "bin" / "convert.py", os.X_OK)
        state["config"] = (state["dir"] / "examples" / "envoy.yaml").read_text()

    def case_readme_command_runs_the_example():
        server, port = start(state["config"], "example")
        try:
            assert hosts.get(port, "/hello") == (200, b"/hello\n"), server.text()
            assert hosts.get(port, "/other") == (200, b"/other\n"), server.text()
        finally:
            assert server.stop() == 0, server.text()

    def case_without_load_globally_the_config_is_refused_with_the_reason():
        config = state["config"].replace("load_globally: true ", "load_globally: false")
        assert config != state["config"]
        port, admin = hosts.free_ports(2)
        (state["dir"] / "examples" / "envoy.yaml").write_text(
            config.replace("port_value: 10000", f"port_value: {port}").replace("port_value: 9901", f"port_value: {admin}"))
        command = readme_block("## Run the example").replace("envoy -c", f"{hosts.envoy_binary()} -c")
        proc = subprocess.run(["bash", "-c", f"{command.strip()} -l warning"], cwd=state["dir"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, "Envoy took a config without load_globally"
        assert ("resty_ffi: the resty_ffi core is not in the process's global scope (undefined symbol "
                "resty_ffi_runtime_load): load the filter with load_globally: true") in proc.stdout + proc.stderr, \
            proc.stdout + proc.stderr

    def case_converter_runs():
        src = work / "lua.yaml"
        src.write_text(STOCK_LUA_CONFIG)
        out = subprocess.run([sys.executable, str(state["dir"] / "bin" / "convert.py"), str(src)],
                             capture_output=True, text=True, check=True).stdout
        assert "DynamicModuleFilter" in out and "resty_ffi_envoy" in out and "envoy.filters.http.lua" in out, out

    try:
        hosts.run([("unpacks outside the tree", case_unpacks_outside_the_tree),
                   ("README command runs the example", case_readme_command_runs_the_example),
                   ("without load_globally the config is refused with the reason",
                    case_without_load_globally_the_config_is_refused_with_the_reason),
                   ("converter runs", case_converter_runs)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
