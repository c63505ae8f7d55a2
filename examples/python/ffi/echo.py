"""An echo runtime in the original lua-resty-ffi style: the module talks to
the runtime C ABI itself through cffi.

    ngx.load_ffi("ffi_python3", "ffi.echo,init", {is_global = true})
"""

import threading

from cffi import FFI

ffi = FFI()
ffi.cdef("""
void *malloc(size_t size);
void *memcpy(void *dest, const void *src, size_t n);
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *task, int *len);
void ngx_http_lua_ffi_respond(void *task, int rc, char *rsp, int rsp_len);
""")
C = ffi.dlopen(None)


def poll(tq):
    tq = ffi.cast("void *", tq)
    n = ffi.new("int *")
    while True:
        task = C.ngx_http_lua_ffi_task_poll(tq)
        if task == ffi.NULL:
            return  # unloaded
        req = C.ngx_http_lua_ffi_get_req(task, n)  # NULL for a nil request
        rsp = ffi.NULL
        if req != ffi.NULL and n[0] > 0:
            rsp = ffi.cast("char *", C.malloc(n[0]))
            C.memcpy(rsp, req, n[0])
        C.ngx_http_lua_ffi_respond(task, 0, rsp, n[0])


def init(cfg, tq):
    threading.Thread(target=poll, args=(tq,), daemon=True).start()
    return 0
