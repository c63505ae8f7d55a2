#!/usr/bin/env python3
"""Converts an Envoy config from Envoy's Lua filter to resty_ffi's filter.

    envoy_filter/convert.py [--lua-package-path P] IN.yaml > OUT.yaml

Prints IN (YAML, several YAML documents, or JSON) with every
`envoy.filters.http.lua` filter replaced by resty_ffi's dynamic-module filter
running the same scripts with the same options, and every `LuaPerRoute` in a
`typed_per_filter_config` (route configuration, virtual host, route, weighted
cluster; bare or in a `FilterConfig`) replaced by the module's per-route
config. Nothing else changes: key order, scalars and their quoting stay as
they were (YAML comments are lost). Configs the converter cannot reach (ECDS,
RDS) are left as they are, with a warning on stderr.

Envoy then needs `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` (or the dlopen path) to
find libresty_ffi_envoy.so; see docs/envoy.md.
"""

import argparse
import base64
import json
import re
import sys

import yaml

LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
DYNAMIC_MODULE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
DYNAMIC_MODULE_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute")
STRUCT = "type.googleapis.com/google.protobuf.Struct"
ROUTE_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
EXTENSION_WITH_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"

MODULE_CONFIG = {"name": "resty_ffi_envoy", "load_globally": True, "do_not_close": True}
FILTER_NAME = "resty_ffi"

STR = "tag:yaml.org,2002:str"
MAP = "tag:yaml.org,2002:map"

# Fields of Lua / LuaPerRoute whose values are DataSources (their own fields
# are normalised too); everything else is copied as it is.
SOURCE_FIELDS = ("default_source_code", "source_code")
SOURCE_MAP_FIELDS = ("source_codes",)


def warn(msg):
    print(f"convert.py: warning: {msg}", file=sys.stderr)


# ------------------------------------------------------------ node helpers --
# The config is handled as PyYAML's node graph, not as Python values, so that
# everything the converter does not touch is printed exactly as it was read.

def get(node, key):
    """The value node of field `key` in mapping `node`, by its proto name or
    its JSON name (`typed_config`, `typedConfig`); None if absent."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and snake(k.value) == key:
                return v
    return None


def text(node):
    return node.value if isinstance(node, yaml.ScalarNode) else None


def type_url(node):
    return text(get(node, "@type"))


def to_node(value):
    """A node for a Python value made by the converter."""
    representer = yaml.representer.SafeRepresenter(sort_keys=False)
    node = representer.represent_data(value)
    if isinstance(value, dict) and len(value) <= 3 and all(not isinstance(v, (dict, list)) for v in value.values()):
        node.flow_style = True
    return node


def key_node(name):
    return yaml.ScalarNode(STR, name)


def snake(name):
    """A proto field name from its JSON name (`defaultSourceCode`)."""
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def normalised_source(node, where):
    """A DataSource node with proto field names; `inline_bytes` becomes
    `inline_string` (a google.protobuf.Struct holds no bytes)."""
    if not isinstance(node, yaml.MappingNode):
        return node
    pairs = []
    for k, v in node.value:
        name = snake(k.value)
        if name == "inline_bytes":
            raw = base64.b64decode(text(v) or "")
            try:
                pairs.append((key_node("inline_string"), yaml.ScalarNode(STR, raw.decode(), style="|")))
                continue
            except UnicodeDecodeError:
                warn(f"{where}: inline_bytes is not UTF-8 text; left as inline_bytes")
        pairs.append((key_node(name), v))
    return yaml.MappingNode(MAP, pairs, flow_style=node.flow_style)


def lua_fields(node, where):
    """The (key node, value node) pairs of a Lua or LuaPerRoute message, minus
    `@type`, with proto field names (a Struct is read by name)."""
    pairs = []
    for k, v in node.value if isinstance(node, yaml.MappingNode) else []:
        name = snake(text(k) or "")
        if name == "@type":
            continue
        if name in SOURCE_FIELDS:
            v = normalised_source(v, f"{where}.{name}")
        elif name in SOURCE_MAP_FIELDS and isinstance(v, yaml.MappingNode):
            v = yaml.MappingNode(MAP, [(sk, normalised_source(sv, f"{where}.{name}.{sk.value}"))
                                       for sk, sv in v.value], flow_style=v.flow_style)
        pairs.append((k if name == k.value else key_node(name), v))
    return pairs


def struct(pairs):
    return yaml.MappingNode(MAP, [(key_node("@type"), key_node(STRUCT)),
                                  (key_node("value"), yaml.MappingNode(MAP, pairs))])


def replace(node, pairs):
    """Rewrites mapping `node` in place (aliases of it follow)."""
    node.value = pairs
    node.tag = MAP
    node.flow_style = False


# -------------------------------------------------------------- converting --

class Converter:
    def __init__(self, lua_package_path=None):
        self.lua_package_path = lua_package_path
        self.filters = 0
        self.per_route = 0
        # The stat_prefix of the HttpConnectionManager being walked.
        self.stat_prefix = None

    def module_config(self):
        """dynamic_module_config; inside an HCM, the module's metrics are named
        as the stock filter's (`http.<stat_prefix>.lua.*`)."""
        config = dict(MODULE_CONFIG)
        if self.stat_prefix is not None:
            config["metrics_namespace"] = f"http.{self.stat_prefix}"
        return config

    def filter_config(self, typed_config, name, where):
        """Turns the Lua config `typed_config` of http filter `name` into ours."""
        pairs = lua_fields(typed_config, where)
        pairs.append((key_node("metadata_namespace"), key_node(name)))
        if self.lua_package_path is not None:
            pairs.append((key_node("lua_package_path"), key_node(self.lua_package_path)))
        replace(typed_config, [
            (key_node("@type"), key_node(DYNAMIC_MODULE)),
            (key_node("dynamic_module_config"), to_node(self.module_config())),
            (key_node("filter_name"), key_node(FILTER_NAME)),
            (key_node("filter_config"), struct(pairs)),
        ])
        self.filters += 1

    def per_route_config(self, config, where):
        """Turns a LuaPerRoute into the module's per-route config."""
        replace(config, [
            (key_node("@type"), key_node(DYNAMIC_MODULE_PER_ROUTE)),
            (key_node("dynamic_module_config"), to_node(MODULE_CONFIG)),
            # Envoy 1.40's field; `per_route_config_name` (field 2) is deprecated.
            (key_node("filter_name"), key_node(FILTER_NAME)),
            (key_node("filter_config"), struct(lua_fields(config, where))),
        ])
        self.per_route += 1

    def typed_per_filter_config(self, node, where):
        for k, v in node.value if isinstance(node, yaml.MappingNode) else []:
            here = f"{where}.{k.value}"
            if type_url(v) == LUA_PER_ROUTE:
                self.per_route_config(v, here)
            elif type_url(v) == ROUTE_FILTER_CONFIG and type_url(get(v, "config")) == LUA_PER_ROUTE:
                self.per_route_config(get(v, "config"), f"{here}.config")

    def http_filter(self, node, name, where):
        """A mapping with `name` and `typed_config` or `config_discovery` (an
        HttpFilter, or an extension config inside a wrapper); `name` is the
        http filter's name (the outer one for wrapped filters)."""
        typed_config = get(node, "typed_config")
        url = type_url(typed_config)
        # By type only: Envoy 1.40 refuses a Lua filter without one
        # ("Didn't find a registered implementation ... with type URL: ''").
        if url == LUA:
            self.filter_config(typed_config, name, f"{where}.typed_config")
            return True
        if url == EXTENSION_WITH_MATCHER:
            inner = get(typed_config, "extension_config")
            if inner is not None and self.http_filter(inner, name, f"{where}.typed_config.extension_config"):
                return True
        discovery = get(node, "config_discovery")
        if discovery is not None:
            default = get(discovery, "default_config")
            urls = get(discovery, "type_urls")
            if type_url(default) == LUA:
                self.filter_config(default, name, f"{where}.config_discovery.default_config")
                if isinstance(urls, yaml.SequenceNode):
                    urls.value.append(key_node(DYNAMIC_MODULE))
            if urls is not None and LUA in [text(u) for u in urls.value]:
                warn(f"{where}: its config comes from ECDS; the discovery server must send "
                     f"the converted config (only default_config was converted)")
        return False

    def walk(self, node, where, seen):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, f"{where}[{i}]", seen)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        name = text(get(node, "name"))
        if name is not None and (get(node, "typed_config") is not None or get(node, "config_discovery") is not None):
            if self.http_filter(node, name, f"{where}({name})"):
                return
        outer = self.stat_prefix
        if get(node, "http_filters") is not None and text(get(node, "stat_prefix")) is not None:
            self.stat_prefix = text(get(node, "stat_prefix"))
        self.walk_fields(node, where, seen)
        self.stat_prefix = outer

    def walk_fields(self, node, where, seen):
        for k, v in node.value:
            key = snake(text(k) or "")
            here = f"{where}.{text(k)}" if where else text(k)
            if key == "typed_per_filter_config":
                self.typed_per_filter_config(v, here)
            elif key in ("rds", "scoped_routes") and self.lua_in_chain(node):
                warn(f"{here}: routes come from a discovery service; convert the LuaPerRoute configs it sends")
            self.walk(v, here, seen)

    @staticmethod
    def lua_in_chain(hcm):
        """Whether an HCM runs a Lua filter (or one this run converted)."""
        filters = get(hcm, "http_filters")
        return isinstance(filters, yaml.SequenceNode) and any(
            type_url(get(f, "typed_config")) == LUA or text(get(get(f, "typed_config"), "filter_name")) == FILTER_NAME
            for f in filters.value)


def convert_text(source, lua_package_path=None, is_json=None):
    """Returns the converted config as text (JSON in, JSON out)."""
    if is_json is None:
        is_json = source.lstrip().startswith(("{", "["))
    if is_json:
        representer = yaml.representer.SafeRepresenter(sort_keys=False)
        documents = [representer.represent_data(json.loads(source))]
    else:
        documents = list(yaml.compose_all(source, Loader=yaml.SafeLoader))
    converter = Converter(lua_package_path)
    for i, doc in enumerate(documents):
        converter.walk(doc, f"document {i + 1}: " if len(documents) > 1 else "", set())
    if converter.filters + converter.per_route == 0:
        warn("no envoy.filters.http.lua filter or LuaPerRoute config found; nothing converted")
    if is_json:
        loader = yaml.SafeLoader("")
        return json.dumps(loader.construct_document(documents[0]), indent=2) + "\n"
    return yaml.serialize_all(documents, Dumper=yaml.SafeDumper, width=1 << 20, allow_unicode=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="Envoy config (YAML or JSON; - for stdin)")
    parser.add_argument("--lua-package-path", metavar="P",
                        help="package.path of the converted filters (default: LuaJIT's, which honours LUA_PATH)")
    args = parser.parse_args(argv)
    try:
        if args.input == "-":
            source = sys.stdin.read()
        else:
            with open(args.input, encoding="utf-8") as f:
                source = f.read()
        out = convert_text(source, args.lua_package_path, args.input.endswith(".json") or None)
    except (OSError, yaml.YAMLError, ValueError) as e:
        print(f"convert.py: {args.input}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
