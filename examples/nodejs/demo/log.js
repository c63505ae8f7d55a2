// console.* goes to the host's log: a request "<method>:<text>" is written
// with console[method] (error, warn, info, log, debug) and answered "logged".
// cfg "thread" serves from a native poll thread (poll_async) instead of the
// JS thread's own loop (poll_loop).
const ffi = require('resty_ffi');

exports.init = (cfg, tq) => ffi.serve(tq, (req) => {
  const text = req.toString();
  const at = text.indexOf(':');
  if (at > 0 && typeof console[text.slice(0, at)] === 'function') {
    console[text.slice(0, at)]('node says %s', text.slice(at + 1), { n: 1 });
    return 'logged';
  }
  return text;
}, { pollThread: cfg === 'thread' });
