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
