//! A task: one request travelling host → runtime → host.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

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
    Pooled(PooledBuffer),
}

impl RequestBytes {
    fn copy(request: &[u8], pool: &Arc<RequestPool>) -> Self {
        let with_nul = request.len() + 1;
        if with_nul <= INLINE_REQUEST {
            let mut bytes = [0; INLINE_REQUEST];
            bytes[..request.len()].copy_from_slice(request);
            RequestBytes::Inline { len: with_nul, bytes }
        } else if RequestPool::pools(with_nul) {
            let mut buf = pool.take(with_nul);
            buf.extend_from_slice(request);
            buf.push(0);
            RequestBytes::Pooled(PooledBuffer { buf, pool: Arc::clone(pool) })
        } else {
            let mut buf = Vec::with_capacity(with_nul);
            buf.extend_from_slice(request);
            buf.push(0);
            RequestBytes::Heap(buf.into_boxed_slice())
        }
    }
}

/// Buffers of large requests, reused by the next large requests of the same
/// queue. A buffer is allocated on the host's thread and freed on a
/// runtime's (where the task ends): with glibc, each such free of a large
/// chunk trimmed the heap and the next request faulted its pages in again,
/// which cost more than copying the request (nginx, 100 KB echo: 68 → 39 µs
/// per call with trimming turned off). Keeps at most `POOL_SLOTS` buffers of
/// at most `POOL_MAX` bytes per queue; smaller and larger requests are
/// allocated and freed as before.
pub(crate) struct RequestPool {
    free: ArrayQueue<Vec<u8>>,
}

const POOL_MIN: usize = 32 << 10;
/// (1 MiB of payload and its NUL.)
const POOL_MAX: usize = (1 << 20) + 1;
const POOL_SLOTS: usize = 4;
/// Pooled buffers are rounded up to whole pages, so that a request a little
/// larger than the last one still fits.
const POOL_ROUND: usize = 4 << 10;

impl RequestPool {
    pub(crate) fn new() -> Arc<RequestPool> {
        Arc::new(RequestPool { free: ArrayQueue::new(POOL_SLOTS) })
    }

    /// Whether requests of `len` bytes (NUL included) use pooled buffers.
    fn pools(len: usize) -> bool {
        (POOL_MIN..=POOL_MAX).contains(&len)
    }

    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        match self.free.pop() {
            Some(buf) if buf.capacity() >= len => buf,
            // Too small: freed here, and a larger one takes its place later.
            _ => Vec::with_capacity(len.next_multiple_of(POOL_ROUND)),
        }
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        // A full pool frees the buffer.
        let _ = self.free.push(buf);
    }
}

/// A request in a buffer that goes back to its pool when the task ends.
struct PooledBuffer {
    buf: Vec<u8>,
    pool: Arc<RequestPool>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl Task {
    /// A task for `request`; `None` is a NULL request. Large requests are
    /// copied into buffers from `pool`.
    pub(crate) fn new(
        request: Option<&[u8]>,
        token: u64,
        sink: &Arc<CompletionQueue>,
        stats: &Arc<Stats>,
        pool: &Arc<RequestPool>,
    ) -> Box<Task> {
        let request = match request {
            None => RequestBytes::Null,
            Some(request) => RequestBytes::copy(request, pool),
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
            RequestBytes::Pooled(pooled) => Some(&pooled.buf),
        }
    }

    /// When the host posted it.
    pub(crate) fn posted_at(&self) -> Stamp {
        self.posted_at
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
        let Task { request, token, sink, stats, posted_at } = *self;
        // A pooled request buffer is back before the host learns of the
        // answer, so that its next request finds it.
        drop(request);
        stats.answered(rc, posted_at);
        if !sink.complete(Completion { token, rc, response, fault }) {
            stats.host_event(HostEvent::Cancelled);
        }
        // Last: the queue may be freed once no task holds this.
        drop(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::CallbackHook;

    fn task(request: &[u8], pool: &Arc<RequestPool>, sink: &Arc<CompletionQueue>) -> Box<Task> {
        Task::new(Some(request), 1, sink, &Arc::new(Stats::default()), pool)
    }

    #[test]
    fn large_requests_reuse_buffers_of_their_queue() {
        let pool = RequestPool::new();
        let sink = Arc::new(CompletionQueue::new(CallbackHook::new(|| ())));
        let big = vec![b'x'; 100 << 10];
        let first = task(&big, &pool, &sink);
        assert_eq!(first.request(), &big[..]);
        assert_eq!(first.request_with_nul().unwrap().last(), Some(&0));
        let ptr = first.request().as_ptr();
        first.respond(0, ResponseBuffer::empty());
        // The answer gave the buffer back: a request of about the same size gets it.
        let second = task(&big[1..], &pool, &sink);
        assert_eq!(second.request().as_ptr(), ptr);
        assert_eq!(second.request(), &big[1..]);
        second.respond(0, ResponseBuffer::empty());
        // A larger one does not fit, and gets a buffer of its own.
        let larger = vec![b'y'; 200 << 10];
        let third = task(&larger, &pool, &sink);
        assert_eq!(third.request(), &larger[..]);
        // Small and huge requests are not pooled.
        for len in [10, 1000, POOL_MAX + 1] {
            let t = task(&vec![b'z'; len], &pool, &sink);
            assert_eq!(t.request().len(), len);
            assert!(matches!(t.request, RequestBytes::Inline { .. } | RequestBytes::Heap(_)));
        }
    }
}
