//! Safe wrappers over the runtime ABI: the queue, its tasks and responses.

use std::ffi::{c_char, c_int, c_void};
use std::fmt;
use std::os::fd::RawFd;

use crate::abi;

/// The task queue of one loaded runtime, as passed to `libffi_init`.
///
/// Thread contract: the queue may be polled from any number of threads at
/// once (`Send + Sync + Copy`). After [`TaskQueue::poll`] returned `None`
/// (the runtime was unloaded) every later poll returns `None` as well.
#[derive(Clone, Copy)]
pub struct TaskQueue(*mut c_void);

// SAFETY: the runtime ABI is callable from any thread with the same queue.
unsafe impl Send for TaskQueue {}
// SAFETY: as above; the queue has no state on the Rust side.
unsafe impl Sync for TaskQueue {}

impl TaskQueue {
    /// # Safety
    /// `tq` is the queue pointer the host passed to `libffi_init`.
    pub(crate) unsafe fn from_raw(tq: *mut c_void) -> Self {
        TaskQueue(tq)
    }

    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0
    }

    /// Blocks until the next task arrives; `None` once the runtime was
    /// unloaded and every task posted before was handed out.
    pub fn poll(&self) -> Option<Task> {
        // SAFETY: `self.0` is the host's queue; the host keeps it alive for
        // the life of the process and keeps answering NULL after unload.
        let task = unsafe { abi::ngx_http_lua_ffi_task_poll(self.0) };
        (!task.is_null()).then_some(Task(task))
    }

    /// Blocks like [`TaskQueue::poll`] until a task arrives, then takes up
    /// to `max` waiting tasks at once into `out`; returns how many (0 once
    /// the runtime was unloaded and every task was handed out).
    pub fn poll_many(&self, max: usize, out: &mut Vec<Task>) -> usize {
        let max = max.clamp(1, c_int::MAX as usize);
        let mut raw = vec![std::ptr::null_mut(); max];
        // SAFETY: as in `poll`; `raw` has room for `max` pointers.
        let n = unsafe { abi::resty_ffi_task_poll_many(self.0, raw.as_mut_ptr(), max as c_int) };
        let n = usize::try_from(n).unwrap_or(0);
        out.extend(raw[..n].iter().map(|&task| Task(task)));
        n
    }

    /// Never blocks: a task, nothing now, or the end (then stop using the
    /// queue). For event loops woken by [`TaskQueue::fd`].
    pub fn try_poll(&self) -> TryPoll {
        let mut task = std::ptr::null_mut();
        // SAFETY: as in `poll`; `task` is a writable local.
        match unsafe { abi::resty_ffi_task_try_poll(self.0, &mut task) } {
            1 => TryPoll::Task(Task(task)),
            0 => TryPoll::Empty,
            _ => TryPoll::Unloaded,
        }
    }

    /// A descriptor readable while tasks wait (and at the end), owned by the
    /// host: wait on it (epoll, tokio's `AsyncFd`), never close it. `None` if
    /// the host could not make one.
    pub fn fd(&self) -> Option<RawFd> {
        // SAFETY: as in `poll`.
        let fd = unsafe { abi::resty_ffi_queue_fd(self.0) };
        (fd >= 0).then_some(fd)
    }

    /// Writes `message` to the host's log (nginx's error log, Envoy's log),
    /// prefixed with the runtime's library name. Never blocks. See also
    /// [`crate::logger`], the `log` crate's facade.
    pub fn log(&self, level: Level, message: &str) {
        log_raw(self.0, level, message)
    }
}

/// Host log levels (nginx's numbering, which `resty_ffi_log` takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Emerg = 1,
    Alert = 2,
    Crit = 3,
    Err = 4,
    Warn = 5,
    Notice = 6,
    Info = 7,
    Debug = 8,
}

pub(crate) fn log_raw(tq: *mut c_void, level: Level, message: &str) {
    let len = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
    // SAFETY: `tq` is NULL or the host's queue; the message is `len`
    // readable bytes, copied by the host during the call.
    unsafe { abi::resty_ffi_log(tq, level as c_int, message.as_ptr() as *const c_char, len) }
}

/// What [`TaskQueue::try_poll`] found.
pub enum TryPoll {
    Task(Task),
    /// Nothing waits now.
    Empty,
    /// The runtime was unloaded: stop using the queue.
    Unloaded,
}

/// One request, owned by the runtime until it is answered.
///
/// Answer it with [`Task::respond`]; a task dropped without an answer is
/// answered with rc [`Error::DROPPED_RC`] so that its caller never waits forever.
pub struct Task(*mut c_void);

// SAFETY: a task may be answered from any thread, once; `respond` takes `self`.
unsafe impl Send for Task {}
// SAFETY: `&Task` only reads the immutable request bytes.
unsafe impl Sync for Task {}

impl Task {
    /// The request bytes (empty for a `nil` request); borrowed from the
    /// host until the task is answered.
    pub fn request(&self) -> &[u8] {
        let mut len: c_int = 0;
        // SAFETY: `self.0` is a live task (not answered yet: `respond` consumes
        // `self`); `len` is a valid out pointer.
        let ptr = unsafe { abi::ngx_http_lua_ffi_get_req(self.0, &mut len) };
        match usize::try_from(len) {
            // SAFETY: the host keeps `len` bytes at `ptr` until the task is
            // answered, which cannot happen while `&self` is borrowed.
            Ok(n) if n > 0 && !ptr.is_null() => unsafe { std::slice::from_raw_parts(ptr as *const u8, n) },
            _ => &[],
        }
    }

    /// Answers the task; the caller gets `true, body` or `false, rc, err`.
    pub fn respond(self, response: impl Into<Response>) {
        let Response { rc, body } = response.into();
        let (ptr, len) = body.map_or((std::ptr::null_mut(), 0), MallocBuf::into_raw);
        let task = std::mem::ManuallyDrop::new(self);
        // SAFETY: the task is live and answered exactly once (`self` is
        // consumed and its Drop skipped); the host takes ownership of the
        // malloc()ed body.
        unsafe { abi::ngx_http_lua_ffi_respond(task.0, rc, ptr, len) };
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // A task forgotten by a handler (or a panic unwinding past it).
        Task(self.0).respond(Error::new(
            Error::DROPPED_RC,
            "resty_ffi_sdk: request dropped without a response",
        ));
    }
}

/// What a runtime answers: `rc` 0 with an optional body, or a non-zero `rc`
/// with optional error bytes.
pub struct Response {
    rc: c_int,
    body: Option<MallocBuf>,
}

impl Response {
    /// rc 0 with `body` (`true, body` in Lua).
    pub fn ok(body: impl AsRef<[u8]>) -> Self {
        Response {
            rc: 0,
            body: MallocBuf::copy(body.as_ref()),
        }
    }

    /// rc 0 without a body (`true, ""` in Lua).
    pub fn empty() -> Self {
        Response { rc: 0, body: None }
    }

    /// A failure: `false, rc, err` in Lua (`err` is nil when empty). An `rc`
    /// of 0 would mean success, so it is turned into 1.
    pub fn error(rc: i32, err: impl AsRef<[u8]>) -> Self {
        Response {
            rc: if rc == 0 { 1 } else { rc },
            body: MallocBuf::copy(err.as_ref()),
        }
    }

    /// The return code (0 = success).
    pub fn rc(&self) -> i32 {
        self.rc
    }

    /// The body (or error bytes).
    pub fn body(&self) -> &[u8] {
        self.body.as_ref().map_or(&[], MallocBuf::as_slice)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("rc", &self.rc)
            .field("body", &String::from_utf8_lossy(self.body()))
            .finish()
    }
}

impl From<Vec<u8>> for Response {
    fn from(body: Vec<u8>) -> Self {
        Response::ok(body)
    }
}

impl From<&[u8]> for Response {
    fn from(body: &[u8]) -> Self {
        Response::ok(body)
    }
}

impl From<String> for Response {
    fn from(body: String) -> Self {
        Response::ok(body)
    }
}

impl From<&str> for Response {
    fn from(body: &str) -> Self {
        Response::ok(body)
    }
}

impl From<()> for Response {
    fn from(_: ()) -> Self {
        Response::empty()
    }
}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        Response::error(e.rc, e.message)
    }
}

impl<T: Into<Response>> From<Result<T, Error>> for Response {
    fn from(result: Result<T, Error>) -> Self {
        result.map_or_else(Response::from, Into::into)
    }
}

/// A failed request: `false, rc, message` in Lua.
///
/// Any `std::error::Error` converts into it (rc [`Error::RC`]), so handlers
/// returning `Result<_, Error>` can use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    rc: i32,
    message: String,
}

impl Error {
    /// The rc of errors converted from other error types.
    pub const RC: i32 = 1;
    /// The rc of a task dropped without a response.
    pub const DROPPED_RC: i32 = -1;

    /// An error with its own rc (0 is turned into 1) and message.
    pub fn new(rc: i32, message: impl Into<String>) -> Self {
        Error {
            rc: if rc == 0 { 1 } else { rc },
            message: message.into(),
        }
    }

    pub fn rc(&self) -> i32 {
        self.rc
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(Error::RC, e.to_string())
    }
}

/// Bytes in a `malloc()`ed buffer, the only kind the host may `free()`.
struct MallocBuf {
    ptr: *mut c_char,
    len: usize,
}

// SAFETY: the buffer is owned exclusively; malloc/free work across threads.
unsafe impl Send for MallocBuf {}
// SAFETY: `&MallocBuf` only allows reading.
unsafe impl Sync for MallocBuf {}

impl MallocBuf {
    /// A copy of `bytes`; `None` when empty (a NULL response). Aborts like
    /// `Vec` when memory runs out.
    fn copy(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return None;
        }
        // SAFETY: a plain allocation of `bytes.len()` > 0 bytes.
        let ptr = unsafe { libc::malloc(bytes.len()) } as *mut c_char;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(std::alloc::Layout::for_value(bytes));
        }
        // SAFETY: `ptr` is a fresh allocation of `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr as *mut u8, bytes.len()) };
        Some(MallocBuf { ptr, len: bytes.len() })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialized bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Hands the buffer over (for `respond`); the length saturates at
    /// `c_int::MAX` like the host's own `get_req`.
    fn into_raw(self) -> (*mut c_char, c_int) {
        let this = std::mem::ManuallyDrop::new(self);
        (this.ptr, c_int::try_from(this.len).unwrap_or(c_int::MAX))
    }
}

impl Drop for MallocBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from malloc and is still owned by `self`.
        unsafe { libc::free(self.ptr as *mut c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_from_values() {
        assert_eq!(
            (Response::from("hi").rc(), Response::from("hi").body()),
            (0, &b"hi"[..])
        );
        assert_eq!(Response::from(vec![0u8, 1]).body(), &[0, 1]);
        assert_eq!(Response::from(()).body(), b"");
        let e = Response::from(Err::<String, _>(Error::new(7, "bad")));
        assert_eq!((e.rc(), e.body()), (7, &b"bad"[..]));
        assert_eq!(Response::error(0, "").rc(), 1);
        let parse: Result<u8, Error> = "x".parse::<u8>().map_err(Error::from);
        let r = Response::from(parse.map(|n| n.to_string()));
        assert_eq!((r.rc(), r.body()), (Error::RC, &b"invalid digit found in string"[..]));
    }
}
