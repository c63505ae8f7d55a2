//! A complete runtime on resty_ffi_sdk: upper-cases UTF-8 requests.
//! `cargo build --release -p resty_ffi_sdk --example upper` builds
//! `target/release/examples/libupper.so`; in Lua:
//! `ngx.load_ffi("/path/to/libupper.so", "2"):call("hi")` -> `true, "HI"`.

use resty_ffi_sdk::{export_runtime, Error, TaskQueue};

/// cfg: the number of threads ("4"); nil means 1.
fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let threads = cfg.map_or(Ok(1), str::parse).map_err(|_| 22)?;
    queue
        .serve(threads, |req: &[u8]| -> Result<Vec<u8>, Error> {
            let text = std::str::from_utf8(req)?;
            Ok(text.to_uppercase().into_bytes())
        })
        .map_err(|_| 2)
}

export_runtime!(init);
