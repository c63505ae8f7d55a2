//! An async echo runtime (tokio): cfg "thread" serves with a poll thread
//! blocking in `task_poll` (`serve_on_poll_thread`), anything else waits on
//! the queue's fd from a tokio task (`serve_async`). For the benchmark of
//! the two (nginx_module/bench/ext_bench.sh).

use resty_ffi_sdk::{export_runtime, Response, TaskQueue};

fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let echo = |req: Vec<u8>| async move { Response::ok(req) };
    if cfg == Some("thread") {
        let runtime = resty_ffi_sdk::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|_| 2)?;
        queue.serve_on_poll_thread(runtime, echo).map_err(|_| 2)
    } else {
        queue.serve_async(1, echo).map_err(|_| 2)
    }
}

export_runtime!(init);
