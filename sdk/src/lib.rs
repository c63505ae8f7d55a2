//! Write [resty_ffi] runtimes in safe Rust.
//!
//! A runtime is a shared library (`crate-type = ["cdylib"]`) exporting
//! `libffi_init`, that answers the requests Lua posts with
//! `rt:anyname(req)`. This crate provides, without `unsafe` in your code:
//!
//! - [`export_runtime!`]: exports `libffi_init`, calling your init function
//!   with the `cfg` string of `ngx.load_ffi(lib, cfg)` and the [`TaskQueue`];
//! - [`TaskQueue::serve`]: blocking handlers on a pool of threads;
//! - [`TaskQueue::serve_async`] (feature `tokio`, on by default): `async`
//!   handlers, each request a tokio task, many in flight at once;
//! - [`Response`] / [`Error`]: `true, body` or `false, rc, err` in Lua;
//! - [`TaskQueue::poll`] / [`Task`] for a poll loop of your own.
//!
//! It is not a host: it does not link the resty_ffi core. The runtime ABI
//! symbols stay undefined in your library and are resolved from the host
//! (the nginx module or the Envoy filter) when the library is loaded.
//!
//! # Example
//!
//! ```no_run
//! use resty_ffi_sdk::{export_runtime, Error, TaskQueue};
//!
//! // cfg: the number of threads ("4"); nil means 1.
//! fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
//!     let threads = cfg.map_or(Ok(1), str::parse).map_err(|_| 22)?;
//!     queue.serve(threads, |req: &[u8]| -> Result<Vec<u8>, Error> {
//!         let text = std::str::from_utf8(req)?; // -> false, 1, "invalid utf-8 ..."
//!         Ok(text.to_uppercase().into_bytes())  // -> true, "TEXT"
//!     })
//!     .map_err(|_| 2)
//! }
//!
//! export_runtime!(init);
//! ```
//!
//! With tokio, every request runs concurrently. The SDK re-exports the tokio
//! it runs handlers on ([`tokio`], with the `rt-multi-thread`, `sync` and
//! `time` features); a runtime that needs more of tokio (`net`, `fs`, …)
//! adds `tokio = { version = "1", features = [...] }` itself, and Cargo
//! unifies the two:
//!
//! ```no_run
//! use std::time::Duration;
//! use resty_ffi_sdk::{export_runtime, tokio, Response, TaskQueue};
//!
//! fn init(_cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
//!     queue.serve_async(2, |req: Vec<u8>| async move {
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         Response::ok(req)
//!     })
//!     .map_err(|_| 2)
//! }
//!
//! export_runtime!(init);
//! ```
//!
//! `examples/upper.rs` is the first example as a complete runtime;
//! `examples/rust_echo` and `examples/rust_http_client` in the repository
//! are runtimes built on this crate.
//!
//! # Implementation notes
//!
//! - A [`Task`] is answered exactly once: [`Task::respond`] consumes it, and
//!   dropping it unanswered answers rc [`Error::DROPPED_RC`].
//! - Responses are copied once into a `malloc()`ed buffer, which the host
//!   frees. Blocking handlers borrow the request from the host; async
//!   handlers get a copy (a future may outlive the borrow).
//! - Panics never cross into C: a panicking handler answers rc [`PANIC_RC`],
//!   a panicking init returns it from `libffi_init`.
//!
//! [resty_ffi]: https://github.com/search?q=lua-resty-ffi

mod abi;
mod serve;
mod task;

pub use serve::{handle_task, PANIC_RC};
/// The tokio that [`TaskQueue::serve_async`] runs handlers on (features
/// `rt-multi-thread`, `sync`, `time`).
#[cfg(feature = "tokio")]
pub use tokio;
pub use task::{Error, Response, Task, TaskQueue};

/// `libffi_init`'s rc when `cfg` is not UTF-8.
pub const CFG_NOT_UTF8: i32 = 22;

/// Exports `libffi_init` calling `init(cfg, queue)`, a function or closure of
/// type `FnOnce(Option<&str>, TaskQueue) -> Result<(), i32>`.
///
/// `cfg` is `None` when Lua passed no cfg; `Err(rc)` makes `ngx.load_ffi`
/// return `nil, rc` (an rc of 0 is turned into 1). Use it once per library.
#[macro_export]
macro_rules! export_runtime {
    ($init:expr) => {
        /// The runtime's entry point, called by the host (SPEC §2).
        ///
        /// # Safety
        /// `cfg` is NULL or a C string, `tq` the host's task queue.
        #[no_mangle]
        pub unsafe extern "C" fn libffi_init(
            cfg: *mut ::std::ffi::c_char,
            tq: *mut ::std::ffi::c_void,
        ) -> ::std::ffi::c_int {
            // SAFETY: the host calls us with the arguments documented above.
            unsafe { $crate::__private::init(cfg, tq, $init) }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use crate::{TaskQueue, CFG_NOT_UTF8, PANIC_RC};

    /// The body of `libffi_init`.
    ///
    /// # Safety
    /// `cfg` is NULL or a C string; `tq` is the queue passed to `libffi_init`.
    pub unsafe fn init<F>(cfg: *const c_char, tq: *mut c_void, init: F) -> c_int
    where
        F: FnOnce(Option<&str>, TaskQueue) -> Result<(), i32>,
    {
        let cfg = if cfg.is_null() {
            None
        } else {
            // SAFETY: a non-NULL cfg is a C string that the host keeps until we return.
            match unsafe { CStr::from_ptr(cfg) }.to_str() {
                Ok(s) => Some(s),
                Err(_) => return CFG_NOT_UTF8,
            }
        };
        // SAFETY: `tq` is the host's queue (our caller's contract).
        let queue = unsafe { TaskQueue::from_raw(tq) };
        // AssertUnwindSafe: after a panic the init closure is gone and the
        // load fails; nothing it touched is used again by us.
        match catch_unwind(AssertUnwindSafe(|| init(cfg, queue))) {
            Ok(Ok(())) => 0,
            Ok(Err(0)) => 1,
            Ok(Err(rc)) => rc,
            Err(_) => PANIC_RC,
        }
    }
}
