//! A resty_ffi runtime on the Rust SDK: answers each request upper-cased,
//! every request a tokio task; an empty or nil request answers rc 22,
//! "empty request".
//! Build: cargo build --release   (-> target/release/libmy_runtime.so)
//! Lua:   local rt = ngx.load_ffi("/path/to/libmy_runtime.so", "2")

use std::time::Duration;

use resty_ffi_sdk::{export_runtime, tokio, Error, TaskQueue};

/// Runs once per `ngx.load_ffi(lib, cfg)` key, per nginx worker / Envoy
/// worker thread. cfg: the number of tokio threads (default 1).
fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let threads = cfg.map_or(Ok(1), str::parse).map_err(|_| 22)?; // Err(rc): ngx.load_ffi returns nil, rc
    queue
        .serve_async(threads, |req: Vec<u8>| async move {
            if req.is_empty() {
                return Err(Error::new(22, "empty request")); // false, 22, "empty request"
            }
            tokio::time::sleep(Duration::from_millis(1)).await; // await anything here
            Ok(req.to_ascii_uppercase()) // true, "HELLO"
        })
        .map_err(|_| 2)
}

export_runtime!(init);
