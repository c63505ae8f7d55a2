//! The runtime C ABI of the original lua-resty-ffi (SPEC §2), exported with its
//! exact names. Runtime libraries call these from their own threads.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::completion::Fault;
use crate::queue::TaskQueue;
use crate::task::{ResponseBuffer, Task};

/// Runs `f`, turning a panic into `fallback`: no panic unwinds into C.
pub(crate) fn no_unwind<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: on a panic we return `fallback` and touch none of the
    // state `f` may have left half-updated.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The queue behind a `tq` pointer, for runtimes written against the Rust API
/// (the C++ bridge): the one place where a `tq` becomes a reference.
///
/// # Safety
/// `tq` is non-NULL and points to a `TaskQueue` that stays alive for `'a`: one
/// passed to `libffi_init` (kept while the runtime may use it, see `reaper`)
/// or an `Arc::as_ptr` of a queue whose `Arc` the caller keeps.
pub unsafe fn task_queue<'a>(tq: *const c_void) -> &'a TaskQueue {
    // SAFETY: the caller's contract above.
    unsafe { &*(tq as *const TaskQueue) }
}

/// Blocks until a task arrives on `tq`; NULL once the runtime was unloaded and
/// every earlier task was handed out (then `tq` must not be used again).
#[no_mangle]
pub extern "C" fn ngx_http_lua_ffi_task_poll(tq: *mut c_void) -> *mut c_void {
    if tq.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `tq` is the pointer passed to `libffi_init`; the queue it points to
    // is kept alive until this thread received NULL from it (see `reaper`).
    let queue = unsafe { task_queue(tq) };
    no_unwind(std::ptr::null_mut(), || {
        queue.poll().map_or(std::ptr::null_mut(), |task| Box::into_raw(task) as *mut c_void)
    })
}

/// The request of `task`: NUL-terminated after its `*len` bytes; NULL (and
/// `*len` 0) for a `nil` request. `len` may be NULL.
#[no_mangle]
pub extern "C" fn ngx_http_lua_ffi_get_req(task: *mut c_void, len: *mut c_int) -> *mut c_char {
    let request = if task.is_null() {
        None
    } else {
        // SAFETY: a non-NULL `task` came from `task_poll` and was not yet
        // responded to, so it is a live `Task` owned by the calling runtime.
        unsafe { &*(task as *const Task) }.request_with_nul()
    };
    let (ptr, n) = request.map_or((std::ptr::null_mut(), 0), |r| (r.as_ptr() as *mut c_char, r.len() - 1));
    if !len.is_null() {
        // SAFETY: the caller passes NULL or a pointer to a writable int.
        unsafe { *len = c_int::try_from(n).unwrap_or(c_int::MAX) };
    }
    ptr
}

/// Answers `task` (exactly once). The host takes ownership of the `malloc()`ed
/// `rsp`; `rsp_len == 0` with a non-NULL `rsp` means a NUL-terminated string.
/// A negative `rsp_len` fails the call (SPEC §2); `rsp` is freed unread.
#[no_mangle]
pub extern "C" fn ngx_http_lua_ffi_respond(task: *mut c_void, rc: c_int, rsp: *mut c_char, rsp_len: c_int) {
    let len = match usize::try_from(rsp_len) {
        Ok(0) if !rsp.is_null() => {
            // SAFETY: a non-NULL `rsp` without a length is a NUL-terminated string.
            unsafe { CStr::from_ptr(rsp) }.to_bytes().len()
        }
        Ok(n) => n,
        Err(_) => 0,
    };
    // SAFETY: the runtime hands over a malloc()ed buffer of at least `len`
    // bytes (or NULL); with a negative length we only free it.
    let response = unsafe { ResponseBuffer::from_raw(rsp as *mut u8, len) };
    if task.is_null() {
        return; // nothing to answer; the response is freed
    }
    // SAFETY: `task` came from `task_poll` and is answered once, which hands
    // its ownership back to us.
    let task = unsafe { Box::from_raw(task as *mut Task) };
    no_unwind((), || {
        if rsp_len < 0 {
            task.reject(rc, Fault::NegativeLength);
        } else {
            task.respond(rc, response);
        }
    });
}

// Extensions (SPEC §2, "Runtime ABI extensions"): new names, same rules.

/// Blocks like `task_poll` until at least one task is there; writes up to
/// `max` tasks into `tasks[]` and returns how many (>= 1). Returns 0 once the
/// runtime is unloaded (after the pending tasks were handed out), like
/// `task_poll`'s NULL; and 0 for a NULL `tq` or `tasks`, or `max` < 1.
#[no_mangle]
pub extern "C" fn resty_ffi_task_poll_many(tq: *mut c_void, tasks: *mut *mut c_void, max: c_int) -> c_int {
    let Ok(max) = usize::try_from(max) else { return 0 };
    if tq.is_null() || tasks.is_null() || max == 0 {
        return 0;
    }
    // SAFETY: as in `ngx_http_lua_ffi_task_poll`.
    let queue = unsafe { task_queue(tq) };
    // SAFETY: the caller passes room for `max` pointers.
    let out = unsafe { std::slice::from_raw_parts_mut(tasks, max) };
    no_unwind(0, || {
        let mut n = 0;
        queue.poll_many(max, |task| {
            out[n] = Box::into_raw(task) as *mut c_void;
            n += 1;
        }) as c_int
    })
}

/// Never blocks: 1 = `*task` set, 0 = nothing now, -1 = unloaded (`tq` is
/// gone afterwards). -1 too for a NULL `tq` or `task`.
#[no_mangle]
pub extern "C" fn resty_ffi_task_try_poll(tq: *mut c_void, task: *mut *mut c_void) -> c_int {
    if tq.is_null() || task.is_null() {
        return -1;
    }
    // SAFETY: as in `ngx_http_lua_ffi_task_poll`; an event-loop poller is
    // counted until its first -1 (see `TaskQueue::try_poll`).
    let queue = unsafe { task_queue(tq) };
    no_unwind(-1, || match queue.try_poll() {
        Ok(Some(polled)) => {
            // SAFETY: the caller passes a writable `void *`.
            unsafe { *task = Box::into_raw(polled) as *mut c_void };
            1
        }
        Ok(None) => 0,
        Err(()) => -1,
    })
}

/// A file descriptor readable while tasks wait in `tq` (level-triggered), and
/// at the end of the queue. Owned by the core (never close it); valid until
/// the runtime received its -1/0/NULL. -1 if `tq` is NULL or no eventfd
/// can be made.
#[no_mangle]
pub extern "C" fn resty_ffi_queue_fd(tq: *mut c_void) -> c_int {
    if tq.is_null() {
        return -1;
    }
    // SAFETY: as in `ngx_http_lua_ffi_task_poll`.
    let queue = unsafe { task_queue(tq) };
    no_unwind(-1, || queue.fd().unwrap_or(-1))
}

/// Writes `msg` (`len` bytes; `len` < 0 means NUL-terminated) to the host's
/// log at `level` (nginx's numbering: 1 emerg ... 4 err, 5 warn, 6 notice,
/// 7 info, 8 debug; others are clamped to 1..8), prefixed with the runtime's
/// library name (no prefix when `tq` is NULL). Never blocks: a full log queue
/// drops the message (the host's log then says how many were dropped). A
/// NULL `msg` is ignored; messages over 16 KiB are cut.
#[no_mangle]
pub extern "C" fn resty_ffi_log(tq: *mut c_void, level: c_int, msg: *const c_char, len: c_int) {
    if msg.is_null() {
        return;
    }
    let message = match usize::try_from(len) {
        // SAFETY: the caller passes `len` readable bytes.
        Ok(n) => unsafe { std::slice::from_raw_parts(msg as *const u8, n) },
        // SAFETY: a negative `len` means a NUL-terminated string.
        Err(_) => unsafe { CStr::from_ptr(msg) }.to_bytes(),
    };
    let prefix = if tq.is_null() {
        None
    } else {
        // SAFETY: as in `ngx_http_lua_ffi_task_poll`.
        unsafe { task_queue(tq) }.name()
    };
    no_unwind((), || crate::log::log(prefix, level, message));
}
