//! An echo runtime for resty_ffi on resty_ffi_sdk: every request comes back
//! unchanged with rc 0.
//!
//! `cfg` is the number of poll threads (default 1), e.g. `ngx.load_ffi("rust_echo", "2")`.

use resty_ffi_sdk::{export_runtime, Response, TaskQueue};

fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let threads = match cfg.map(|s| s.trim().parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return Err(1),
    };
    queue.serve(threads, |req: &[u8]| Response::ok(req)).map_err(|_| 2)
}

export_runtime!(init);
