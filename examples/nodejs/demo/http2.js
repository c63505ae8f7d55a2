// An HTTP/2 client on resty_ffi.serve: the request is a URL (http:// means h2c
// with prior knowledge), the answer its body; a status other than 200 answers
// false, status, body. One session per origin, requests multiplexed on it.
const http2 = require('node:http2');
const ffi = require('resty_ffi');

const sessions = new Map();

function session(origin) {
  let s = sessions.get(origin);
  if (s === undefined || s.closed || s.destroyed) {
    s = http2.connect(origin);
    s.on('error', () => sessions.delete(origin));
    s.on('close', () => sessions.delete(origin));
    s.unref();
    sessions.set(origin, s);
  }
  return s;
}

function get(url) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = session(u.origin);
    const req = s.request({ ':path': u.pathname + u.search });
    const chunks = [];
    let status = 0;
    req.on('response', (headers) => {
      status = headers[':status'];
    });
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (status === 200) {
        resolve(body);
      } else {
        reject(new ffi.Error(status, body.toString()));
      }
    });
    req.on('error', reject);
    req.end();
  });
}

exports.init = (cfg, tq) => ffi.serve(tq, (req) => get(req.toString()));
