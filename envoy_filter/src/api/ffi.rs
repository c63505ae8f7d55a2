//! The resty_ffi host for Lua: each stream's completion sink (the core's C
//! handle, woken through the Envoy scheduler) and what `ffi.lua` calls to
//! find the sink of the stream whose coroutine is running. The only `unsafe`
//! that touches the core's C API.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

use resty_ffi::host_abi::{resty_ffi_runtime, resty_ffi_sink, resty_ffi_sink_free, runtime_stats_since_published};
use resty_ffi::CallbackHook;

use crate::abi::Scheduler;
use crate::api::{bytes, StreamCtx};

/// Owns a `resty_ffi_sink *` handed to Lua. Dropping it closes the sink:
/// answers arriving later are freed by the core, and the scheduler is
/// deleted once the last posted task lets go of the queue.
pub struct Sink(*mut resty_ffi_sink);

impl Sink {
    /// Each batch of answers (and each due call deadline) commits one event
    /// on the stream's worker thread.
    pub fn new(scheduler: Scheduler) -> Sink {
        Sink(resty_ffi_sink::with_hook(CallbackHook::new(move || scheduler.commit(0))))
    }

    pub fn as_ptr(&self) -> *mut resty_ffi_sink {
        self.0
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `with_hook` and is freed once, here; Lua may
        // still hold the pointer, but only uses it while the stream is alive.
        unsafe { resty_ffi_sink_free(self.0) }
    }
}

thread_local! {
    /// The streams whose coroutines are running on this thread, innermost last.
    static CURRENT: RefCell<Vec<Rc<StreamCtx>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` (a coroutine resume) with `ctx` as the current stream.
pub fn with_current<T>(ctx: &Rc<StreamCtx>, f: impl FnOnce() -> T) -> T {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().pop());
        }
    }
    CURRENT.with(|c| c.borrow_mut().push(Rc::clone(ctx)));
    let _pop = Pop;
    f()
}

/// The current stream's `resty_ffi_sink *`, created on first use; NULL
/// outside a stream's coroutine or once the stream is gone.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn current_sink() -> *mut c_void {
    CURRENT
        .with(|c| c.borrow().last().cloned())
        .and_then(|ctx| ctx.sink_ptr())
        .map_or(std::ptr::null_mut(), |sink| sink as *mut c_void)
}

/// Publishes the stats of runtime `rt` (a `resty_ffi_runtime *`, cache key
/// `key`) as the current stream's filter config's metrics; 0 outside a
/// stream (nothing published), 1 otherwise.
///
/// # Safety
/// `rt` is a live `resty_ffi_runtime *` (Lua's runtime object holds it);
/// `key` is readable for `len` bytes.
pub unsafe extern "C" fn publish_stats(rt: *mut c_void, key: *const c_char, len: usize) -> c_int {
    let Some(ctx) = CURRENT.with(|c| c.borrow().last().cloned()) else { return 0 };
    let Some(envoy) = ctx.envoy() else { return 0 };
    // SAFETY: the caller's contract.
    let (was, now) = unsafe { runtime_stats_since_published(rt as *const resty_ffi_runtime) };
    ctx.metrics.publish_runtime(envoy, bytes(key, len), &was, &now);
    1
}
