//! An echo runtime for resty_ffi, written only against the runtime C ABI of
//! SPEC §2: every request comes back unchanged with rc 0.
//!
//! `cfg` is the number of poll threads (default 1), e.g. `ngx.load_ffi("rust_echo", "2")`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::thread;

// The runtime ABI, resolved at load time from the host (nginx module or Envoy filter).
extern "C" {
    fn ngx_http_lua_ffi_task_poll(tq: *mut c_void) -> *mut c_void;
    fn ngx_http_lua_ffi_get_req(task: *mut c_void, len: *mut c_int) -> *mut c_char;
    fn ngx_http_lua_ffi_respond(task: *mut c_void, rc: c_int, rsp: *mut c_char, rsp_len: c_int);
}

/// The queue pointer, moved to the poll threads.
struct TaskQueue(*mut c_void);
// SAFETY: the runtime ABI is callable from any thread with the same `tq`.
unsafe impl Send for TaskQueue {}

fn serve(tq: TaskQueue) {
    loop {
        // SAFETY: `tq` is the queue handed to libffi_init; NULL ends the loop,
        // after which `tq` is not touched again.
        let task = unsafe { ngx_http_lua_ffi_task_poll(tq.0) };
        if task.is_null() {
            return;
        }
        let mut len: c_int = 0;
        // SAFETY: `task` is live until we respond; `len` is a valid out pointer.
        let req = unsafe { ngx_http_lua_ffi_get_req(task, &mut len) };
        let n = usize::try_from(len).unwrap_or(0);
        // SAFETY: the response is malloc()ed (the host frees it) and filled from
        // the `n` readable request bytes before the task is answered.
        unsafe {
            let rsp = if n == 0 { std::ptr::null_mut() } else { libc_malloc(n) as *mut c_char };
            if !rsp.is_null() {
                std::ptr::copy_nonoverlapping(req, rsp, n);
            }
            ngx_http_lua_ffi_respond(task, 0, rsp, len);
        }
    }
}

extern "C" {
    #[link_name = "malloc"]
    fn libc_malloc(size: usize) -> *mut c_void;
}

/// # Safety
/// Called by the host with `cfg` NULL or a C string, and a task queue pointer.
#[no_mangle]
pub unsafe extern "C" fn libffi_init(cfg: *mut c_char, tq: *mut c_void) -> c_int {
    let threads = if cfg.is_null() {
        1
    } else {
        match CStr::from_ptr(cfg).to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) if n >= 1 => n,
            _ => return 1,
        }
    };
    for _ in 0..threads {
        let queue = TaskQueue(tq);
        if thread::Builder::new().name("rust_echo".into()).spawn(move || serve(queue)).is_err() {
            return 2;
        }
    }
    0
}
