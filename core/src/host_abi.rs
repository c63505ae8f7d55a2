//! The C host API: what the nginx module and `resty_ffi.lua` (through LuaJIT's
//! FFI) call. `include/resty_ffi.h` is generated from this file by cbindgen.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::abi::no_unwind;
use crate::completion::{CompletionHook, CompletionQueue, EventFdHook};
use crate::queue::PostError;
use crate::runtime::{LoadError, LoadOptions, Runtime};
use crate::stats::HostEvent;

pub const RESTY_FFI_OK: c_int = 0;
pub const RESTY_FFI_QUEUE_FULL: c_int = 1;
pub const RESTY_FFI_FINISHED: c_int = 2;
/// A panic inside the core was caught; the call had no effect.
pub const RESTY_FFI_INTERNAL_ERROR: c_int = 3;

/// A loaded runtime (opaque).
pub struct resty_ffi_runtime {
    runtime: Arc<Runtime>,
    /// A shared runtime's holder detached (unloaded) itself; the runtime
    /// goes on for the others.
    detached: AtomicBool,
    shared: bool,
}

/// A completion queue (opaque), woken through an eventfd ([`resty_ffi_sink_new`])
/// or a host's own hook ([`resty_ffi_sink::with_hook`]).
pub struct resty_ffi_sink {
    queue: Arc<CompletionQueue>,
    eventfd: Option<Arc<EventFdHook>>,
}

impl resty_ffi_sink {
    /// For hosts written in Rust: a sink woken by `hook`, to hand to C or Lua.
    /// Release it with [`resty_ffi_sink_free`].
    pub fn with_hook(hook: impl CompletionHook + 'static) -> *mut resty_ffi_sink {
        let queue = Arc::new(CompletionQueue::new(hook));
        Box::into_raw(Box::new(resty_ffi_sink { queue, eventfd: None }))
    }
}

/// One answer handed to the host. The host owns `rsp` and frees it with `free()`.
/// `err` is NULL, or a static message: the call failed with it (the runtime
/// broke the ABI) and `rsp` is NULL.
#[repr(C)]
pub struct resty_ffi_completion {
    pub token: u64,
    pub rc: c_int,
    pub rsp: *mut c_char,
    pub rsp_len: usize,
    pub err: *const c_char,
}

fn write_error(msg: &str, err: *mut c_char, err_len: usize) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let n = msg.len().min(err_len - 1);
    // SAFETY: the caller passes a writable buffer of `err_len` bytes; we write
    // at most `err_len - 1` bytes plus a NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err as *mut u8, n);
        *err.add(n) = 0;
    }
}

/// Loads a runtime library and calls its `libffi_init`.
///
/// `cfg` may be NULL (no config); otherwise it is `cfg_len` bytes. With
/// `shared` ≠ 0 the process has one runtime per `lib` and `cfg`: a load while
/// another holder keeps it returns that runtime (its first loader's options
/// apply), and unloading a holder lets only that holder go. On failure
/// returns NULL and sets `*init_rc` to `libffi_init`'s non-zero rc, or leaves
/// it 0 and writes a message to `err` (a buffer of `err_len` bytes).
///
/// # Safety
/// `lib` is a C string; `cfg` is NULL or readable for `cfg_len` bytes; `init_rc`
/// is writable; `err` is NULL or writable for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_load(
    lib: *const c_char,
    cfg: *const c_char,
    cfg_len: usize,
    max_queue: usize,
    is_global: c_int,
    unpin: c_int,
    shared: c_int,
    init_rc: *mut c_int,
    err: *mut c_char,
    err_len: usize,
) -> *mut resty_ffi_runtime {
    *init_rc = 0;
    let lib = CStr::from_ptr(lib).to_string_lossy();
    let cfg = (!cfg.is_null()).then(|| std::slice::from_raw_parts(cfg as *const u8, cfg_len));
    let opts = LoadOptions { max_queue, is_global: is_global != 0, unpin: unpin != 0 };
    let shared = shared != 0;
    let loaded = no_unwind(Err(LoadError::Library("internal error".to_owned())), || match shared {
        true => Runtime::shared(&lib, cfg, &opts),
        false => Runtime::load(&lib, cfg, &opts).map(Arc::new),
    });
    match loaded {
        Ok(runtime) => Box::into_raw(Box::new(resty_ffi_runtime { runtime, detached: AtomicBool::new(false), shared })),
        Err(LoadError::Init(rc)) => {
            *init_rc = rc;
            std::ptr::null_mut()
        }
        Err(e) => {
            write_error(&e.to_string(), err, err_len);
            std::ptr::null_mut()
        }
    }
}

/// Posts a request of `len` bytes; a NULL `req` is a NULL request (Lua's
/// `nil`, `len` ignored), which the runtime's `get_req` returns as NULL. Its
/// answer arrives on `sink` under `token`. Never blocks.
///
/// # Safety
/// `rt` and `sink` are live handles; `req` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_post(
    rt: *const resty_ffi_runtime,
    sink: *const resty_ffi_sink,
    token: u64,
    req: *const c_char,
    len: usize,
) -> c_int {
    let request = match (req.is_null(), len) {
        (true, _) => None,
        (false, 0) => Some(&[][..]),
        (false, len) => Some(std::slice::from_raw_parts(req as *const u8, len)),
    };
    let (rt, sink) = (&*rt, &*sink);
    if rt.detached.load(Ordering::Relaxed) {
        return RESTY_FFI_FINISHED;
    }
    no_unwind(RESTY_FFI_INTERNAL_ERROR, || match rt.runtime.post(request, token, &sink.queue) {
        Ok(()) => RESTY_FFI_OK,
        Err(PostError::QueueFull) => RESTY_FFI_QUEUE_FULL,
        Err(PostError::Finished) => RESTY_FFI_FINISHED,
    })
}

/// Ends the runtime after the requests already posted; returns
/// `RESTY_FFI_FINISHED` if it was already unloaded.
///
/// # Safety
/// `rt` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_unload(rt: *const resty_ffi_runtime) -> c_int {
    let rt = &*rt;
    if rt.shared {
        // Only this holder lets go; the runtime ends with its last holder.
        return if rt.detached.swap(true, Ordering::Relaxed) { RESTY_FFI_FINISHED } else { RESTY_FFI_OK };
    }
    if rt.runtime.unload() {
        RESTY_FFI_OK
    } else {
        RESTY_FFI_FINISHED
    }
}

/// Unloads (if needed) and releases the handle.
///
/// # Safety
/// `rt` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_free(rt: *mut resty_ffi_runtime) {
    if !rt.is_null() {
        drop(Box::from_raw(rt));
    }
}

/// A new completion queue with an eventfd hook; NULL if no eventfd can be made.
#[no_mangle]
pub extern "C" fn resty_ffi_sink_new() -> *mut resty_ffi_sink {
    let Ok(hook) = EventFdHook::new() else { return std::ptr::null_mut() };
    let hook = Arc::new(hook);
    let queue = Arc::new(CompletionQueue::new(Arc::clone(&hook)));
    Box::into_raw(Box::new(resty_ffi_sink { queue, eventfd: Some(hook) }))
}

/// The eventfd that becomes readable when answers wait (-1 for a sink with
/// another hook). It stays owned by the sink: an event loop that closes what it
/// watches must watch a `dup()`.
///
/// # Safety
/// `sink` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_fd(sink: *const resty_ffi_sink) -> c_int {
    (*sink).eventfd.as_ref().map_or(-1, |hook| hook.fd())
}

/// Resets the eventfd after the event loop saw it readable.
///
/// # Safety
/// `sink` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_acknowledge(sink: *const resty_ffi_sink) {
    if let Some(hook) = &(*sink).eventfd {
        hook.acknowledge();
    }
}

/// Moves up to `max` answers into `out`; returns how many. Call again while it
/// returns `max`.
///
/// # Safety
/// `sink` is a live handle; `out` is writable for `max` entries.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_drain(
    sink: *const resty_ffi_sink,
    out: *mut resty_ffi_completion,
    max: usize,
) -> usize {
    let sink = &*sink;
    let out = std::slice::from_raw_parts_mut(out, max);
    no_unwind(0, || {
        let mut n = 0;
        sink.queue.drain(max, |completion| {
            let (rsp, rsp_len) = completion.response.into_raw();
            out[n] = resty_ffi_completion {
                token: completion.token,
                rc: completion.rc,
                rsp: rsp as *mut c_char,
                rsp_len,
                err: completion.fault.map_or(std::ptr::null(), |fault| fault.message().as_ptr()),
            };
            n += 1;
        })
    })
}

/// Longest busy-wait `resty_ffi_sink_spin` accepts.
const MAX_SINK_SPIN_US: u32 = 1000;

/// Busy-waits, never sleeping, up to `max_us` microseconds (at most 1000) for
/// an answer; returns 1 if one is waiting (drain it), else 0. For a host that
/// expects a fast answer and has nothing else to run meanwhile.
///
/// # Safety
/// `sink` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_spin(sink: *const resty_ffi_sink, max_us: u32) -> c_int {
    let max = Duration::from_micros(max_us.min(MAX_SINK_SPIN_US).into());
    c_int::from((*sink).queue.spin_until_answered(max))
}

/// Has the sink's hook called `ms` milliseconds from now on behalf of call
/// `token`, for a host without timers of its own that must give up on slow
/// answers; `ms` = 0 cancels. Each call has one such wake-up (arming again
/// replaces it), independent of the other calls on the sink. Returns 0, or
/// -1 if the timer thread cannot be started.
///
/// # Safety
/// `sink` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_wake_in(sink: *const resty_ffi_sink, token: u64, ms: u32) -> c_int {
    let delay = (ms > 0).then(|| Duration::from_millis(ms.into()));
    if (*sink).queue.wake_after(token, delay) { 0 } else { -1 }
}

/// The caller of `token` went away: its answer will be freed, not delivered.
///
/// # Safety
/// `sink` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_cancel(sink: *const resty_ffi_sink, token: u64) {
    (*sink).queue.cancel(token);
}

/// Closes the sink (answers now waiting or arriving later are freed) and
/// releases the host's handle.
///
/// # Safety
/// `sink` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_sink_free(sink: *mut resty_ffi_sink) {
    if !sink.is_null() {
        let sink = Box::from_raw(sink);
        sink.queue.close();
    }
}

/// A runtime's counters ([`resty_ffi_runtime_stats`]): posted, answered,
/// failed (rc != 0), timed_out, cancelled, queue_full, in_flight, queue_len,
/// and latencies from post to answer in µs (p50_us, p99_us, max_us) over the
/// last 1024 answers (`samples`).
pub type resty_ffi_stats = crate::StatsSnapshot;

/// Fills `out` with the counters of `rt`'s runtime (shared by every holder
/// of a shared runtime).
///
/// # Safety
/// `rt` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_stats(rt: *const resty_ffi_runtime, out: *mut resty_ffi_stats) {
    *out = (*rt).runtime.queue().snapshot();
}

/// For hosts written in Rust: see [`Runtime::stats_since_published`].
///
/// # Safety
/// `rt` is a live handle.
pub unsafe fn runtime_stats_since_published(
    rt: *const resty_ffi_runtime,
) -> (crate::StatsSnapshot, crate::StatsSnapshot) {
    (*rt).runtime.stats_since_published()
}

/// Has `rt`'s poll threads busy-wait up to `us` µs for the next task before
/// they sleep, instead of the adaptive default (0 restores it; capped at
/// 100,000). For latency at low load: a thread woken from sleep answers tens
/// of µs later on a virtual machine; a spinning one at once, for a core's
/// idle time. Applies to every holder of a shared runtime.
///
/// # Safety
/// `rt` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_set_poll_spin(rt: *const resty_ffi_runtime, us: u32) {
    (*rt).runtime.queue().set_poll_spin(us);
}

/// 1 if one of `rt`'s poll threads is awake (spinning for the next task or
/// running one), so that a task posted now is taken without waking a
/// sleeping thread; else 0. A hint for a host deciding whether to busy-wait
/// for an answer ([`resty_ffi_sink_spin`]). A runtime serving the queue from
/// an event loop (`resty_ffi_queue_fd`) always counts as awake.
///
/// # Safety
/// `rt` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_awake(rt: *const resty_ffi_runtime) -> c_int {
    c_int::from((*rt).runtime.queue().has_awake_poller())
}

/// [`resty_ffi_runtime_count`]: a caller gave up waiting (its timeout).
pub const RESTY_FFI_TIMED_OUT: c_int = 1;
/// [`resty_ffi_runtime_count`]: a caller went away (client abort, stream reset).
pub const RESTY_FFI_CANCELLED: c_int = 2;

/// Counts an event only the host sees (`RESTY_FFI_TIMED_OUT`,
/// `RESTY_FFI_CANCELLED`); other values are ignored.
///
/// # Safety
/// `rt` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_runtime_count(rt: *const resty_ffi_runtime, event: c_int) {
    let event = match event {
        RESTY_FFI_TIMED_OUT => HostEvent::TimedOut,
        RESTY_FFI_CANCELLED => HostEvent::Cancelled,
        _ => return,
    };
    (*rt).runtime.queue().stats().host_event(event);
}

/// The host drains runtime log messages itself (nginx: its worker, through
/// its own log): returns an eventfd that is readable while messages wait
/// (owned by the core: watch a `dup()` if the loop closes what it watches),
/// then call [`resty_ffi_log_drain`]. -1 if another consumer took the log
/// first (one per process), or no eventfd can be made.
#[no_mangle]
pub extern "C" fn resty_ffi_log_use_eventfd() -> c_int {
    crate::log::use_eventfd().unwrap_or(-1)
}

/// Writes one log line for the host: `level` in nginx's numbering (1 emerg
/// .. 8 debug), `msg` is `len` bytes (no NUL), valid during the call.
pub type resty_ffi_log_write = extern "C" fn(ctx: *mut c_void, level: c_int, msg: *const c_char, len: usize);

/// A thread of the core hands runtime log messages to `write` (with `ctx`)
/// one at a time (Envoy: its log is thread-safe). Returns 0, or -1 if another
/// consumer took the log first, or the thread cannot start.
///
/// # Safety
/// `write` may be called with `ctx` from the core's thread until the process exits.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_log_use_writer(write: resty_ffi_log_write, ctx: *mut c_void) -> c_int {
    struct Ctx(*mut c_void);
    // SAFETY: the caller's contract: `ctx` may be used from the core's thread.
    unsafe impl Send for Ctx {}
    // SAFETY: only the core's one log thread calls the writer.
    unsafe impl Sync for Ctx {}
    let ctx = Ctx(ctx);
    let writer = Box::new(move |level: i32, text: &[u8]| {
        let ctx = &ctx;
        write(ctx.0, level, text.as_ptr() as *const c_char, text.len())
    });
    match crate::log::use_writer(writer) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Hands up to `max` waiting log messages to `write` (with `ctx`) on the
/// calling thread, the first one a "resty_ffi: N log messages dropped"
/// warning if the queue overflowed since the last drain; returns how many.
/// Call again while it returns `max`. For the host that took the eventfd.
///
/// # Safety
/// `write` is callable with `ctx` during the call.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_log_drain(write: resty_ffi_log_write, ctx: *mut c_void, max: usize) -> usize {
    no_unwind(0, || {
        crate::log::drain(max, |level, text| write(ctx, level, text.as_ptr() as *const c_char, text.len()))
    })
}
