//! A task: one request travelling host → runtime → host.

use std::sync::Arc;

use crate::clock::Stamp;
use crate::completion::{Completion, CompletionQueue, Fault};
use crate::glibc_heap;
use crate::stats::{HostEvent, Stats};

/// A response buffer allocated by a runtime with `malloc()` (or by us with
/// [`ResponseBuffer::from`]); freed with `free()` when dropped.
pub struct ResponseBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is exclusively owned heap memory; nothing else aliases it.
unsafe impl Send for ResponseBuffer {}

impl ResponseBuffer {
    /// An empty response (a runtime answered with a NULL `rsp`).
    pub const fn empty() -> Self {
        ResponseBuffer { ptr: std::ptr::null_mut(), len: 0 }
    }

    /// Takes ownership of a `malloc()`ed buffer of `len` bytes (one from
    /// glibc's own malloc in a process whose malloc is another is swapped
    /// for a copy: see `glibc_heap`).
    ///
    /// # Safety
    /// `ptr` is NULL or was returned by `malloc()` with at least `len` readable
    /// bytes, and nobody else frees or writes it afterwards.
    pub(crate) unsafe fn from_raw(ptr: *mut u8, len: usize) -> Self {
        // SAFETY: our own contract.
        let ptr = unsafe { glibc_heap::adopt(ptr, len) };
        ResponseBuffer { ptr, len: if ptr.is_null() { 0 } else { len } }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `from_raw`'s contract: `len` readable bytes owned by us.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// Gives up ownership; the caller must `free()` the pointer.
    pub fn into_raw(self) -> (*mut u8, usize) {
        let raw = (self.ptr, self.len);
        std::mem::forget(self);
        raw
    }
}

impl From<Vec<u8>> for ResponseBuffer {
    /// Copies `bytes` into a `malloc()`ed buffer, as a C runtime would.
    fn from(bytes: Vec<u8>) -> Self {
        if bytes.is_empty() {
            return ResponseBuffer::empty();
        }
        // SAFETY: malloc of a non-zero size; the result is checked before use.
        let ptr = unsafe { libc::malloc(bytes.len()) } as *mut u8;
        assert!(!ptr.is_null(), "resty_ffi: out of memory");
        // SAFETY: `ptr` has room for `bytes.len()` bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        ResponseBuffer { ptr, len: bytes.len() }
    }
}

impl Drop for ResponseBuffer {
    fn drop(&mut self) {
        // SAFETY: we own the buffer, which came from malloc (or is NULL).
        unsafe { libc::free(self.ptr as *mut libc::c_void) };
    }
}

/// One request posted by a host; a runtime holds it from poll to respond.
pub struct Task {
    request: RequestBytes,
    token: u64,
    sink: Arc<CompletionQueue>,
    /// Counts the task among its queue's tasks not yet answered, and its
    /// answer in the queue's stats.
    stats: Arc<Stats>,
    posted_at: Stamp,
}

/// Requests up to this size (NUL included) live inside the task: one
/// allocation per call instead of two.
const INLINE_REQUEST: usize = 64;

/// The request bytes followed by one NUL byte (runtimes may read it as a C
/// string), or no request at all (Lua's `nil`: the runtime sees NULL).
enum RequestBytes {
    Null,
    Inline { len: usize, bytes: [u8; INLINE_REQUEST] },
    Heap(Box<[u8]>),
}

impl RequestBytes {
    fn copy(request: &[u8]) -> Self {
        let with_nul = request.len() + 1;
        if with_nul <= INLINE_REQUEST {
            let mut bytes = [0; INLINE_REQUEST];
            bytes[..request.len()].copy_from_slice(request);
            RequestBytes::Inline { len: with_nul, bytes }
        } else {
            let mut buf = Vec::with_capacity(with_nul);
            buf.extend_from_slice(request);
            buf.push(0);
            RequestBytes::Heap(buf.into_boxed_slice())
        }
    }
}

impl Task {
    /// A task for `request`; `None` is a NULL request.
    pub(crate) fn new(
        request: Option<&[u8]>,
        token: u64,
        sink: &Arc<CompletionQueue>,
        stats: &Arc<Stats>,
    ) -> Box<Task> {
        let request = match request {
            None => RequestBytes::Null,
            Some(request) => RequestBytes::copy(request),
        };
        Box::new(Task { request, token, sink: Arc::clone(sink), stats: Arc::clone(stats), posted_at: Stamp::now() })
    }

    /// The request bytes, without the trailing NUL (empty for a NULL request).
    pub fn request(&self) -> &[u8] {
        self.request_with_nul().map_or(&[], |with_nul| &with_nul[..with_nul.len() - 1])
    }

    /// The request including its trailing NUL (for C runtimes); `None` for a
    /// NULL request.
    pub(crate) fn request_with_nul(&self) -> Option<&[u8]> {
        match &self.request {
            RequestBytes::Null => None,
            RequestBytes::Inline { len, bytes } => Some(&bytes[..*len]),
            RequestBytes::Heap(bytes) => Some(bytes),
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// Answers the task: hands the answer to the completion queue of the host
    /// that posted it. Only the answer is queued, not the task, so a completion
    /// queue never holds a reference to itself.
    pub fn respond(self: Box<Self>, rc: i32, response: ResponseBuffer) {
        self.complete(rc, response, None);
    }

    /// Answers the task with an error instead of what the runtime sent.
    pub(crate) fn reject(self: Box<Self>, rc: i32, fault: Fault) {
        self.complete(rc, ResponseBuffer::empty(), Some(fault));
    }

    fn complete(self: Box<Self>, rc: i32, response: ResponseBuffer, fault: Option<Fault>) {
        let Task { token, sink, stats, posted_at, .. } = *self;
        stats.answered(rc, posted_at);
        if !sink.complete(Completion { token, rc, response, fault }) {
            stats.host_event(HostEvent::Cancelled);
        }
    }
}
