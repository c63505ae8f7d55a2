// A resty_ffi runtime in Node.js: answers each request upper-cased; an empty or
// nil request answers rc 22, "empty request".
// Lua: local rt = ngx.load_ffi("ffi_nodejs", "/path/to/this/folder,init", { is_global = true })
'use strict';

const ffi = require('resty_ffi'); // provided by the loader (resty_ffi.js next to libffi_nodejs.so)

// Runs once per ngx.load_ffi(lib, cfg) key, per nginx worker / Envoy worker
// thread, on Node's main thread (one Node per process).
exports.init = (cfg, tq) => ffi.serve(tq, async (req) => { // req: a Buffer
  if (req.length === 0) {
    throw new ffi.Error(22, 'empty request'); // false, 22, "empty request"
  }
  return req.toString().toUpperCase(); // true, "HELLO"
});
