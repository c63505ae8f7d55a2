"""Write resty_ffi runtimes in Python without touching the C ABI.

A runtime module for the Python loader (libffi_python3.so)::

    import resty_ffi

    async def handle(req: bytes):
        return req.upper()

    def init(cfg, tq):
        return resty_ffi.serve(tq, handle)

Lua loads it with ``ngx.load_ffi("ffi_python3", "mymodule,init", {is_global = true})``.

A handler gets the request as ``bytes`` and returns ``bytes``, ``str``, any
buffer or ``None`` (``true, body`` in Lua). An exception answers ``false, rc,
text``: rc from :class:`Error`, else 1, and the exception's text; so does any
other ``BaseException`` (``SystemExit``, ``CancelledError``): every task is
answered exactly once. A body over 2 GB - 1 answers an error. Plain functions run
on ``threads`` poll threads; ``async def`` handlers run on an asyncio loop of
their own, every request a task, so slow requests overlap.

:class:`LogHandler` is a ``logging.Handler`` that writes to the host's log
(nginx's error.log, with its level, format and rotation; Envoy's log)::

    logging.getLogger("mymodule").addHandler(resty_ffi.LogHandler(tq))
"""

import asyncio
import concurrent.futures
import ctypes
import logging
import threading

__all__ = ["Error", "LogHandler", "serve", "config"]

MAX_BODY = 2**31 - 1  # the ABI's rsp_len is a C int

_C = ctypes.CDLL(None)  # the host's global symbols (the runtime ABI) and libc
_C.ngx_http_lua_ffi_task_poll.argtypes = [ctypes.c_void_p]
_C.ngx_http_lua_ffi_task_poll.restype = ctypes.c_void_p
_C.ngx_http_lua_ffi_get_req.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
_C.ngx_http_lua_ffi_get_req.restype = ctypes.c_void_p
_C.ngx_http_lua_ffi_respond.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_C.ngx_http_lua_ffi_respond.restype = None
_C.resty_ffi_log.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_C.resty_ffi_log.restype = None
_C.malloc.argtypes = [ctypes.c_size_t]
_C.malloc.restype = ctypes.c_void_p


class LogHandler(logging.Handler):
    """Writes records to the host's log: nginx's error log (written by the
    worker, so ``error_log``'s level and ``reopen``/USR1 rotation apply: the
    original's WatchedFileHandler wish) or Envoy's log, each line prefixed
    with the loader's name (``ffi_python3: ...``; none when ``tq`` is None).
    Never blocks: a flooded host log drops lines and says how many."""

    # Python's levels to nginx's (3 crit, 4 err, 5 warn, 7 info, 8 debug).
    LEVELS = ((logging.CRITICAL, 3), (logging.ERROR, 4), (logging.WARNING, 5), (logging.INFO, 7))

    def __init__(self, tq=None, level=logging.NOTSET):
        super().__init__(level)
        self._tq = ctypes.c_void_p(tq) if tq else None

    def emit(self, record):
        try:
            msg = self.format(record).encode("utf-8", "replace")
            level = next((n for at, n in self.LEVELS if record.levelno >= at), 8)
            _C.resty_ffi_log(self._tq, level, msg, len(msg))
        except Exception:
            self.handleError(record)


class Error(Exception):
    """Raise it to answer ``false, rc, message``."""

    def __init__(self, rc, message=""):
        super().__init__(message)
        self.rc = rc if rc != 0 else 1


def config(cfg):
    """The loader's ``cfg`` argument (an address or 0) as ``str`` or ``None``."""
    return ctypes.string_at(cfg).decode() if cfg else None


def _request(task):
    n = ctypes.c_int(0)
    ptr = _C.ngx_http_lua_ffi_get_req(task, ctypes.byref(n))
    return ctypes.string_at(ptr, n.value) if ptr and n.value > 0 else b""


def _encode(body):
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    try:
        view = memoryview(body)
    except TypeError:
        raise TypeError(f"handler returned {type(body).__name__}, want bytes, str or None") from None
    if view.nbytes > MAX_BODY:  # checked before copying
        raise Error(1, f"resty_ffi: response too large: {view.nbytes} bytes (at most {MAX_BODY})")
    return body if isinstance(body, bytes) else view.tobytes()


def _respond(task, rc, body):
    """Answers `task`; the host frees the malloc()ed copy of `body`."""
    if not body:
        _C.ngx_http_lua_ffi_respond(task, rc, None, 0)
        return
    buf = _C.malloc(len(body))
    if not buf:
        _C.ngx_http_lua_ffi_respond(task, 1 if rc == 0 else rc, None, 0)
        return
    ctypes.memmove(buf, body, len(body))
    _C.ngx_http_lua_ffi_respond(task, rc, buf, len(body))


def _failure(exc):
    if isinstance(exc, Error):
        return exc.rc, _text(exc).encode()
    return 1, f"{type(exc).__name__}: {_text(exc)}".encode()


def _text(exc):
    try:
        return str(exc)
    except BaseException:  # a __str__ that raises
        return "(no text)"


def _answer(task, result):
    """Answers `task` with what `result()` returns or raises, exactly once."""
    try:
        rc, body = 0, _encode(result())
    except BaseException as exc:  # SystemExit and CancelledError too
        rc, body = _failure(exc)
    _respond(task, rc, body)


def _poll_sync(tq, handler):
    while True:
        task = _C.ngx_http_lua_ffi_task_poll(tq)  # blocks without the GIL
        if not task:
            return  # unloaded
        req = _request(task)
        _answer(task, lambda: handler(req))


def _poll_async(tq, handler, loop):
    async def run(task, req):
        try:
            result = await handler(req)
        except BaseException as exc:  # CancelledError too
            _respond(task, *_failure(exc))
        else:
            _answer(task, lambda: result)

    pending = set()
    while True:
        task = _C.ngx_http_lua_ffi_task_poll(tq)
        if not task:
            break
        fut = asyncio.run_coroutine_threadsafe(run(task, _request(task)), loop)
        pending.add(fut)
        fut.add_done_callback(pending.discard)
    # Unloaded: answer what is in flight, then end the loop.
    concurrent.futures.wait(list(pending))
    loop.call_soon_threadsafe(loop.stop)


def serve(tq, handler, threads=1):
    """Serves the queue `tq` (the loader's int) with `handler`; returns 0,
    the rc for the loader, once the threads are started."""
    tq = ctypes.c_void_p(tq)
    if asyncio.iscoroutinefunction(handler):
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="resty_ffi-loop", daemon=True).start()
        threading.Thread(target=_poll_async, args=(tq, handler, loop), name="resty_ffi-poll",
                         daemon=True).start()
    else:
        for _ in range(max(1, threads)):
            threading.Thread(target=_poll_sync, args=(tq, handler), name="resty_ffi-poll",
                             daemon=True).start()
    return 0
