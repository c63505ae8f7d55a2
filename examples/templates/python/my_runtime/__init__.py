"""A resty_ffi runtime in Python: answers each request upper-cased; an empty or
nil request answers rc 22, "empty request".

Lua (the Python loader, with the `resty_ffi` package on PYTHONPATH):
    local rt = ngx.load_ffi("ffi_python3", "/srv/my_python/my_runtime,init",
                            { is_global = true })
"""

import resty_ffi


async def handle(req: bytes):
    """Each request an asyncio task (a plain `def` runs on poll threads)."""
    if not req:
        raise resty_ffi.Error(22, "empty request")  # false, 22, "empty request"
    return req.upper()  # true, b"HELLO"


def init(cfg, tq):
    """Runs once per ngx.load_ffi(lib, cfg) key, per nginx worker / Envoy
    worker thread; resty_ffi.config(cfg) is the text after "module,init,"."""
    return resty_ffi.serve(tq, handle)
