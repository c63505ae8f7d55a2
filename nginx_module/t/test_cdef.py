"""resty_ffi.lua declares the C host API for LuaJIT's FFI by hand (ffi.cdef cannot
read a C header); this keeps each declaration identical to the generated header."""

import os
import re
from pathlib import Path

LUA = Path(os.environ["RESTY_FFI_LUA_DIR"]) / "resty_ffi.lua"
HEADER = Path(os.environ["RESTY_FFI_HEADER"])


def normalize(decl):
    decl = re.sub(r"\bstruct\s+", "", decl)
    return re.sub(r"\s+", " ", decl).replace("( ", "(").replace(" )", ")").strip()


def prototypes(text):
    """name -> normalized prototype of every resty_ffi_* function."""
    return {m.group(2): normalize(m.group(0))
            for m in re.finditer(r"[\w\s\*]*?\b(\w[\w\s]*\*?\s*)((?<!\w)resty_ffi_\w+)\s*\([^;{]*\)\s*;", text)}


def test_lua_cdef_matches_generated_header():
    header = prototypes(re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S))
    cdefs = "\n".join(re.findall(r"ffi\.cdef\s*\[\[(.*?)\]\]", LUA.read_text(), flags=re.S))
    lua = prototypes(cdefs)
    assert lua, "no declarations found in resty_ffi.lua"
    assert {name: header.get(name) for name in lua} == lua


def test_lua_completion_struct_matches_header():
    def fields(text):
        body = re.search(r"typedef struct resty_ffi_completion \{(.*?)\}", text, flags=re.S).group(1)
        return [normalize(f) for f in body.split(";") if f.strip()]
    assert fields(LUA.read_text()) == fields(HEADER.read_text())
