// Echo on resty_ffi.serve: the handler may be async; a throw or a rejection
// answers false, rc, message. cfg (the rest of the load cfg) prefixes answers.
const ffi = require('resty_ffi');

exports.init = (cfg, tq) => ffi.serve(tq, async (req) => {
  const text = req.toString();
  if (text === 'throw') {
    throw new TypeError('bad input');
  }
  if (text === 'reject') {
    return Promise.reject(new ffi.Error(7, 'custom failure'));
  }
  if (text.startsWith('sleep ')) {
    await new Promise((resolve) => setTimeout(resolve, Number(text.slice(6))));
  }
  if (text === 'nil') {
    return null;
  }
  if (text === 'huge') {
    return Buffer.allocUnsafe(2 ** 31); // 2 GB, never touched: over the ABI's limit
  }
  return cfg === null ? req : Buffer.concat([Buffer.from(cfg), req]);
});

exports.fail = () => {
  throw new Error('init failed on purpose');
};

exports.rc = (cfg) => Number(cfg);

// Errors nobody catches are logged; the host process keeps running.
exports.uncaught = (cfg, tq) => {
  setTimeout(() => {
    throw new Error('uncaught on purpose');
  });
  Promise.reject(new Error('unhandled on purpose'));
  return ffi.serve(tq, (req) => req);
};
