// require('resty_ffi'): the loader's native binding (poll_task, get_req, respond,
// poll_async) and serve(), which answers each request with an async handler.
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
// Requests are polled on a native thread and handled on this JS thread,
// concurrently. Returns 0, the rc for libffi_init.
function serve(tq, handler) {
  ffi.poll_async(tq, (task) => {
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
