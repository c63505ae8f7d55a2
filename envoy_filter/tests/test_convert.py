"""Tests of envoy_filter/convert.py on configs shaped like Envoy's own Lua
examples (docs and envoyproxy/examples), on every place a Lua config can
sit, on JSON and multi-document input, and on our own configs:

- the converted config turns back into the input exactly when our filter
  configs are mapped back to Lua ones (so nothing else changed and every
  Lua field was kept);
- the stock 1.40 binary loads the input, and loads the converted config with
  our module (`envoy --mode validate`, ENVOY_DYNAMIC_MODULES_SEARCH_PATH);
- the scripts keep their YAML block style; the CLI's options and warnings.
"""

import json
import os
import pathlib
import subprocess
import sys

import yaml

import harness

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE / "diff" / "configs"
CONVERT = harness.ROOT / "envoy_filter" / "convert.py"
EXAMPLE = harness.ROOT / "examples" / "envoy" / "lua_gateway.yaml"
EXAMPLE_CONVERTED = harness.ROOT / "examples" / "envoy" / "lua_gateway_converted.yaml"
LUA_PATH = f"{HERE / 'diff' / 'lua'}/?.lua;;"

LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
OURS = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
OURS_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute"
STRUCT = "type.googleapis.com/google.protobuf.Struct"
MODULE = {"name": "resty_ffi_envoy", "load_globally": True, "do_not_close": True}

# fixture -> the metadata_namespace of each converted filter, in order
NAMESPACES = {
    "docs_lua_filter.yaml": ["envoy.filters.http.lua"],
    "docs_lua_filter_override.yaml": ["envoy.filters.http.lua"],
    "examples_two_filters.yaml": ["lua_filter_with_custom_name_0", "lua_filter_with_custom_name_1"],
    "multi_document.yaml": ["envoy.filters.http.lua"],
    "wrappers.yaml": ["matched.lua", "discovered.lua", "envoy.filters.http.lua", "upstream.lua"],
}


def convert(path, *args, stdin=None):
    """(exit code, stdout, stderr) of convert.py."""
    out = subprocess.run([sys.executable, str(CONVERT), *args, str(path)], capture_output=True, text=True,
                         input=stdin, timeout=60)
    return out.returncode, out.stdout, out.stderr


def converted(path, *args):
    code, out, err = convert(path, *args)
    assert code == 0, err
    return out


def back_to_lua(node, found, metrics=None):
    """`node` with our filter configs mapped back to Lua ones; appends each
    filter's (metadata_namespace, lua_package_path) to `found`, and its
    dynamic_module_config's metrics_namespace to `metrics`."""
    if isinstance(node, list):
        return [back_to_lua(item, found, metrics) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("@type") in (OURS, OURS_PER_ROUTE):
        module = dict(node["dynamic_module_config"])
        namespace = module.pop("metrics_namespace", None)
        assert module == MODULE, node
        if node["@type"] == OURS and metrics is not None:
            metrics.append(namespace)
        assert node["filter_name"] == "resty_ffi", node
        assert node["filter_config"]["@type"] == STRUCT, node
        value = dict(node["filter_config"]["value"])
        assert set(node) == {"@type", "dynamic_module_config", "filter_name", "filter_config"}, node
        if node["@type"] == OURS:
            found.append((value.pop("metadata_namespace"), value.pop("lua_package_path", None)))
            return {"@type": LUA, **value}
        return {"@type": LUA_PER_ROUTE, **value}
    out = {k: back_to_lua(v, found, metrics) for k, v in node.items()}
    if isinstance(out.get("type_urls"), list) and LUA in out["type_urls"]:
        out["type_urls"] = [u for u in out["type_urls"] if u != OURS]
    return out


def documents(text):
    return list(yaml.safe_load_all(text))


def validate(text, name, module=True):
    """Envoy 1.40's verdict on a config: None when it loads, else the error."""
    path = harness.ROOT / "target" / "convert_test" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    env = {**os.environ, "LUA_PATH": LUA_PATH}
    env.pop("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", None)
    if module:
        env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(harness.RELEASE)
    out = subprocess.run([harness.envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "critical",
                          "--log-format", "%v"], capture_output=True, text=True, env=env, cwd=harness.ROOT,
                         timeout=60)
    if out.returncode == 0:
        return None
    return (out.stdout + out.stderr).strip().splitlines()[-1]


# ------------------------------------------------------------------ cases --

def make_round_trip_case(fixture):
    def case():
        source = (CONFIGS / fixture).read_text()
        found = []
        assert [back_to_lua(d, found) for d in documents(converted(CONFIGS / fixture))] == documents(source)
        assert found == [(ns, None) for ns in NAMESPACES[fixture]], found
    return case


def make_loads_case(path):
    def case():
        source = path.read_text()
        assert validate(source, f"stock_{path.name}", module=False) is None, "the stock config must load"
        why = validate(converted(path), path.name)
        assert why is None, f"Envoy 1.40 refuses the converted config: {why}"
    return case


def case_scripts_keep_their_block_style():
    out = converted(CONFIGS / "docs_lua_filter_override.yaml")
    assert out.count("inline_string: |") == 4, out
    assert "# The shape of" not in out  # comments go; nothing else does


def case_metrics_named_as_the_stock_filters():
    # http.<the HCM's stat_prefix>.lua.*, as the stock filter's (and so the
    # same Prometheus names); a filter outside any HCM keeps Envoy's default.
    for fixture, expected in [("docs_lua_filter.yaml", ["http.ingress_http"]),
                              ("examples_two_filters.yaml", ["http.ingress_http"] * 2),
                              ("wrappers.yaml", ["http.wrapped", "http.wrapped", "http.from_rds", None])]:
        found, metrics = [], []
        for doc in documents(converted(CONFIGS / fixture)):
            back_to_lua(doc, found, metrics)
        assert metrics == expected, (fixture, metrics)


def case_lua_package_path_option():
    found = []
    out = converted(CONFIGS / "examples_two_filters.yaml", "--lua-package-path", "/opt/lua/?.lua;;")
    back_to_lua(documents(out)[0], found)
    assert found == [("lua_filter_with_custom_name_0", "/opt/lua/?.lua;;"),
                     ("lua_filter_with_custom_name_1", "/opt/lua/?.lua;;")], found


def case_json_in_json_out_with_json_field_names():
    out = json.loads(converted(CONFIGS / "json_camel_case.json"))
    hcm = out["static_resources"]["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"]
    ours = hcm["httpFilters"][0]["typedConfig"]
    assert ours["@type"] == OURS
    # Struct fields are read by their proto names: the converter renames the Lua proto's fields.
    assert ours["filter_config"]["value"] == {
        "default_source_code": {"inline_string": 'function envoy_on_request(h) h:headers():add("x-json", "1") end'},
        "stat_prefix": "json_lua", "clear_route_cache": True, "metadata_namespace": "json.lua"}
    per_route = hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["typedPerFilterConfig"]["json.lua"]
    assert per_route["@type"] == OURS_PER_ROUTE
    # inline_bytes becomes inline_string (a Struct holds no bytes); filter_context stays as it is.
    assert per_route["filter_config"]["value"] == {
        "source_code": {"inline_string": 'function envoy_on_request(h) h:logInfo("bytes") end\n'},
        "filter_context": {"ratio": 0.5, "keepCamel": {"innerKey": 1}}}
    # Everything else is untouched, field names included.
    assert hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["directResponse"] == {
        "status": 200, "body": {"inlineString": "ok"}}


def case_warnings_name_what_was_left():
    code, _, err = convert(CONFIGS / "wrappers.yaml")
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert "http_filters[1](discovered.lua)" in lines[0] and "ECDS" in lines[0], err
    assert "listeners[1]" in lines[1] and "rds" in lines[1], err


def case_multi_document_input():
    out = converted(CONFIGS / "multi_document.yaml")
    docs = documents(out)
    assert len(docs) == 2 and out.count("\n---") == 1, out
    per_route = docs[1]["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"]["envoy.filters.http.lua"]
    assert per_route["@type"] == OURS_PER_ROUTE and per_route["filter_config"]["value"] == {"disabled": True}


def case_our_own_config_is_left_alone():
    path = harness.ROOT / "examples" / "envoy" / "envoy.yaml"
    code, out, err = convert(path)
    assert code == 0 and "nothing converted" in err, err
    assert documents(out) == documents(path.read_text())


def case_converting_twice_changes_nothing():
    once = converted(EXAMPLE)
    code, twice, err = convert("-", stdin=once)
    assert code == 0 and twice == once and "nothing converted" in err, err


def case_stdin_and_errors():
    source = (CONFIGS / "docs_lua_filter.yaml").read_text()
    code, out, err = convert("-", stdin=source)
    assert code == 0 and out == converted(CONFIGS / "docs_lua_filter.yaml"), err
    code, out, err = convert("-", stdin="a: [unclosed\n")
    assert code == 1 and out == "" and err.startswith("convert.py: -:"), (code, err)
    code, _, err = convert(CONFIGS / "no_such_file.yaml")
    assert code != 0 and "no_such_file.yaml" in err, err


def case_example_is_the_converters_output():
    committed = EXAMPLE_CONVERTED.read_text()
    body = "".join(line for line in committed.splitlines(keepends=True)[1:] if not line.startswith("#")) \
        if committed.startswith("#") else committed
    assert body == converted(EXAMPLE), "regenerate examples/envoy/lua_gateway_converted.yaml (see its README)"


def case_diff_suites_stock_config_converts_back():
    """The differential suite's whole generated config (every case's routes
    and filters) converts and maps back exactly."""
    import test_diff
    from diff.cases import CASES

    stock = [test_diff.stock_listener(c, 10000 + i) for i, c in enumerate(CASES)]
    source = yaml.safe_dump({"static_resources": {"listeners": stock}}, sort_keys=False)
    path = harness.ROOT / "target" / "convert_test" / "diff_suite.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    found = []
    assert back_to_lua(documents(converted(path))[0], found) == documents(source)[0]
    assert len(found) == sum(len(c.stock_filters()) for c in CASES)


FIXTURES = sorted(NAMESPACES)
CASES = (
    [(f"case_round_trip_{f}", make_round_trip_case(f)) for f in FIXTURES]
    + [(f"case_converted_loads_in_envoy_{p.name}", make_loads_case(p))
       for p in [CONFIGS / f for f in FIXTURES] + [CONFIGS / "json_camel_case.json", EXAMPLE]]
    + [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("case_") and callable(fn)]
)

if __name__ == "__main__":
    harness.run(CASES)
