"""Runtimes on the resty_ffi Python package for test_python.py."""

import asyncio

import resty_ffi


def handle(req):
    if req == b"boom":
        raise ValueError("bad input")
    if req.startswith(b"rc:"):
        raise resty_ffi.Error(int(req[3:]), "custom failure")
    if req == b"nothing":
        return None
    if req == b"number":
        return 42  # not bytes: answered as a TypeError
    return b"sync:" + req


async def ahandle(req):
    await asyncio.sleep(0.3)
    if req == b"boom":
        raise RuntimeError("async boom")
    return "async:" + req.decode()


def init(cfg, tq):
    mode = resty_ffi.config(cfg)
    return resty_ffi.serve(tq, ahandle if mode == "async" else handle, threads=2)


def init_rc(cfg, tq):
    return int(resty_ffi.config(cfg))


def init_raises(cfg, tq):
    raise RuntimeError("init failed on purpose")
