// require('resty_ffi'): the loader's native binding (poll_task, get_req, respond,
// poll_async, poll_loop, log) and serve(), which answers each request with an async handler.
'use strict';

const ffi = process._linkedBinding('resty_ffi');

// throw new resty_ffi.Error(7, 'msg') answers false, 7, 'msg'.
class FfiError extends Error {
  constructor(rc, message) {
    super(message);
    this.rc = rc;
  }
}

// serve(tq, handler): handler(req: Buffer) returns (or resolves to) a string, a
// Buffer, null or undefined: Lua gets true, body. A throw or a rejection gives
// false, rc, message (rc 1 and 'TypeError: ...' unless it is a resty_ffi.Error).
// Requests are taken on this JS thread's own event loop (poll_loop: libuv
// watches the queue's fd, no poll thread) and handled there, concurrently;
// { pollThread: true } polls on a native thread instead (poll_async, how serve
// worked before the queue had an fd). Returns 0, the rc for libffi_init.
function serve(tq, handler, options = {}) {
  const poll = options.pollThread ? ffi.poll_async : ffi.poll_loop;
  poll(tq, (task) => {
    const req = ffi.get_req(task);
    new Promise((resolve) => resolve(handler(req)))
      .then((rsp) => ffi.respond(task, 0, rsp))
      .catch((err) => {
        if (err instanceof FfiError) {
          ffi.respond(task, err.rc, err.message);
        } else {
          ffi.respond(task, 1, String(err));
        }
      });
  });
  return 0;
}

module.exports = { ...ffi, serve, Error: FfiError };
