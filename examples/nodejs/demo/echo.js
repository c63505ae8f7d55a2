// Echo in the original lua-resty-ffi's style: a worker thread polls (poll_task
// blocks), the main thread answers.
const { Worker, isMainThread, parentPort } = require('node:worker_threads');
const ffi = require('resty_ffi');

if (isMainThread) {
  exports.init = (cfg, tq) => {
    const worker = new Worker(__filename);
    worker.on('message', (task) => {
      ffi.respond(task, 0, ffi.get_req(task));
    });
    worker.postMessage(tq);
    return 0;
  };
} else {
  parentPort.once('message', (tq) => {
    for (;;) {
      const task = ffi.poll_task(tq);
      if (task == 0) {
        break;
      }
      parentPort.postMessage(task);
    }
  });
}
