//! The stream's completion sink: the core's C handle, woken through the
//! Envoy scheduler. The only `unsafe` that touches the core's C API.

use resty_ffi::host_abi::{resty_ffi_sink, resty_ffi_sink_free};
use resty_ffi::CallbackHook;

use crate::envoy::Scheduler;

/// Owns a `resty_ffi_sink *` handed to Lua as lightuserdata. Dropping it
/// closes the sink: answers arriving later are freed by the core, and the
/// scheduler is deleted once the last posted task lets go of the queue.
pub struct Sink(*mut resty_ffi_sink);

impl Sink {
    /// Each batch of answers commits one event on the stream's worker thread.
    pub fn new(scheduler: Scheduler) -> Sink {
        Sink(resty_ffi_sink::with_hook(CallbackHook::new(move || {
            scheduler.commit(0)
        })))
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
