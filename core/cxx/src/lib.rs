//! A cxx bridge over the resty_ffi core, for C++ hosts and C++ runtimes that
//! link the core statically (it is built as rlib and staticlib only: a shared
//! object would carry a second copy of the core's runtime C ABI).
//!
//! Host side: [`new_task_queue`] and [`new_sink`], then post, wait on the
//! sink's eventfd, acknowledge, drain. Runtime side: [`poll_task`] on the `tq`
//! address, read the request, [`respond`]. C++ sees them in namespace
//! `resty_ffi` through the generated header `resty_ffi_cxx/src/lib.rs.h`.
//!
//! Not for runtimes loaded next to `libresty_ffi.so`: those use the C ABI of
//! `resty_ffi.h` (SPEC §2), which works whatever built the core.

use std::ffi::c_void;
use std::io;
use std::sync::{Arc, OnceLock};

use resty_ffi::{CompletionQueue, EventFdHook, PostError, ResponseBuffer, Task, TaskQueue};

#[cxx::bridge(namespace = "resty_ffi")]
mod ffi {
    /// What `TaskQueue::post` did; the values of `RESTY_FFI_*` in `resty_ffi.h`.
    #[repr(i32)]
    enum PostStatus {
        Ok = 0,
        QueueFull = 1,
        Finished = 2,
    }

    /// One answer, copied out of the core.
    struct Completion {
        token: u64,
        rc: i32,
        response: Vec<u8>,
        /// Empty, or why the call failed (the runtime broke the ABI).
        error: String,
    }

    extern "Rust" {
        /// A runtime's task queue, owned by the host; dropping it unloads.
        #[cxx_name = "TaskQueue"]
        type QueueHandle;
        fn new_task_queue(max_queue: usize) -> Box<QueueHandle>;
        fn tq(self: &QueueHandle) -> usize;
        fn post(self: &QueueHandle, sink: &Sink, token: u64, request: &[u8]) -> PostStatus;
        fn unload(self: &QueueHandle) -> bool;
        fn pending(self: &QueueHandle) -> usize;

        /// A completion queue woken through an eventfd; dropping it closes it.
        type Sink;
        fn new_sink() -> Result<Box<Sink>>;
        fn fd(self: &Sink) -> i32;
        fn acknowledge(self: &Sink);
        fn drain(self: &Sink, max: usize) -> Vec<Completion>;
        fn cancel(self: &Sink, token: u64);
        fn close(self: &Sink);

        /// A polled task, or the end of the queue (`finished()`).
        #[cxx_name = "Task"]
        type TaskHandle;
        unsafe fn poll_task(tq: usize) -> Box<TaskHandle>;
        fn finished(self: &TaskHandle) -> bool;
        fn request(self: &TaskHandle) -> &[u8];
        fn respond(task: Box<TaskHandle>, rc: i32, response: &[u8]);
    }
}

pub use ffi::{Completion, PostStatus};

pub struct QueueHandle {
    queue: Arc<TaskQueue>,
    tq: OnceLock<usize>,
}

pub fn new_task_queue(max_queue: usize) -> Box<QueueHandle> {
    Box::new(QueueHandle { queue: TaskQueue::new(max_queue), tq: OnceLock::new() })
}

impl QueueHandle {
    /// The address runtimes poll (`libffi_init`'s `tq`). Like the queues of
    /// loaded runtimes, a queue handed out stays allocated until the process exits.
    pub fn tq(&self) -> usize {
        *self.tq.get_or_init(|| Arc::into_raw(Arc::clone(&self.queue)) as usize)
    }

    pub fn post(&self, sink: &Sink, token: u64, request: &[u8]) -> PostStatus {
        match self.queue.post(request, token, &sink.queue) {
            Ok(()) => PostStatus::Ok,
            Err(PostError::QueueFull) => PostStatus::QueueFull,
            Err(PostError::Finished) => PostStatus::Finished,
        }
    }

    /// Ends the queue after the tasks already posted; false if already unloaded.
    pub fn unload(&self) -> bool {
        self.queue.unload()
    }

    /// Tasks posted and not yet polled.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.queue.unload();
    }
}

pub struct Sink {
    queue: Arc<CompletionQueue>,
    hook: Arc<EventFdHook>,
}

pub fn new_sink() -> io::Result<Box<Sink>> {
    let hook = Arc::new(EventFdHook::new()?);
    let queue = Arc::new(CompletionQueue::new(Arc::clone(&hook)));
    Ok(Box::new(Sink { queue, hook }))
}

impl Sink {
    /// Readable while answers wait; owned by the sink.
    pub fn fd(&self) -> i32 {
        self.hook.fd()
    }

    /// Resets the eventfd; call before draining.
    pub fn acknowledge(&self) {
        self.hook.acknowledge();
    }

    /// Up to `max` answers; call again while it returns `max`.
    pub fn drain(&self, max: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        self.queue.drain(max, |c| {
            out.push(Completion {
                token: c.token,
                rc: c.rc,
                response: c.response.to_vec(),
                error: c.fault.map_or_else(String::new, |f| f.message().to_string_lossy().into_owned()),
            })
        });
        out
    }

    /// The caller of `token` went away: its answer is freed, not delivered.
    pub fn cancel(&self, token: u64) {
        self.queue.cancel(token);
    }

    /// Answers waiting now or arriving later are freed.
    pub fn close(&self) {
        self.queue.close();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.queue.close();
    }
}

pub struct TaskHandle(Option<Box<Task>>);

/// Blocks until a task arrives on `tq`; a `finished()` task once the queue was
/// unloaded and emptied (then `tq` must not be used again).
///
/// # Safety
/// `tq` is the `tq` of a loaded runtime or of a live [`QueueHandle::tq`].
pub unsafe fn poll_task(tq: usize) -> Box<TaskHandle> {
    // SAFETY: the caller's contract; both kinds of queue stay allocated until exit.
    let queue = unsafe { resty_ffi::abi::task_queue(tq as *const c_void) };
    Box::new(TaskHandle(queue.poll()))
}

impl TaskHandle {
    pub fn finished(&self) -> bool {
        self.0.is_none()
    }

    /// The request bytes (empty for a finished task).
    pub fn request(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |task| task.request())
    }
}

/// Answers `task` with a `malloc()`ed copy of `response`, which may borrow the
/// task's own request. Answering a finished task does nothing.
#[allow(clippy::boxed_local)] // cxx hands ownership over as a Box
pub fn respond(task: Box<TaskHandle>, rc: i32, response: &[u8]) {
    let response = ResponseBuffer::from(response.to_vec());
    if let Some(task) = task.0 {
        task.respond(rc, response);
    }
}
