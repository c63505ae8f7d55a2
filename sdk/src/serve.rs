//! Ready-made poll loops: blocking threads, or futures on a tokio runtime.

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;

use crate::task::{Error, Response, Task, TaskQueue};

/// The rc of a request whose handler panicked.
pub const PANIC_RC: i32 = -2;

fn panic_response(panic: Box<dyn Any + Send>) -> Response {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::new(PANIC_RC, format!("resty_ffi_sdk: handler panicked: {msg}")).into()
}

impl TaskQueue {
    /// Serves the queue from `threads` new threads, each calling `handler`
    /// with a request and answering with what it returns. Returns once the
    /// threads are started; they end when the runtime is unloaded.
    ///
    /// The request is borrowed from the host (no copy). A panicking handler
    /// answers rc [`PANIC_RC`] and the thread keeps serving.
    pub fn serve<F, R>(self, threads: usize, handler: F) -> io::Result<()>
    where
        F: Fn(&[u8]) -> R + Send + Sync + 'static,
        R: Into<Response>,
    {
        let handler = std::sync::Arc::new(handler);
        for _ in 0..threads.max(1) {
            let handler = handler.clone();
            thread::Builder::new().name("resty_ffi_sdk".into()).spawn(move || {
                while let Some(task) = self.poll() {
                    handle_task(task, &*handler);
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(feature = "tokio")]
mod asynchronous {
    use std::future::Future;
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::thread;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    use super::panic_response;
    use crate::task::{Response, Task, TaskQueue, TryPoll};

    impl TaskQueue {
        /// Serves the queue with `handler`, an async function of the request
        /// bytes, on a new multi-threaded tokio runtime (`worker_threads`
        /// threads, or tokio's default for 0). Every request becomes its own
        /// tokio task, so slow requests run concurrently. A panic answers rc
        /// [`PANIC_RC`](crate::PANIC_RC).
        ///
        /// One thread polls the queue; once the runtime is unloaded it waits
        /// for the requests still in flight, then shuts tokio down.
        pub fn serve_async<F, Fut, R>(self, worker_threads: usize, handler: F) -> io::Result<()>
        where
            F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Into<Response>,
        {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all().thread_name("resty_ffi_sdk_async");
            if worker_threads > 0 {
                builder.worker_threads(worker_threads);
            }
            self.serve_on(builder.build()?, handler)
        }

        /// [`TaskQueue::serve_async`] on a tokio runtime built by the caller
        /// (owned by the server from now on).
        ///
        /// No thread blocks in `task_poll`: a tokio task waits for the
        /// queue's fd ([`TaskQueue::fd`], through `AsyncFd`) and takes the
        /// tasks with [`TaskQueue::try_poll`]. A host without the fd gets
        /// [`TaskQueue::serve_on_poll_thread`]'s poll thread instead.
        pub fn serve_on<F, Fut, R>(self, runtime: tokio::runtime::Runtime, handler: F) -> io::Result<()>
        where
            F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Into<Response>,
        {
            let Some(fd) = self.fd() else { return self.serve_on_poll_thread(runtime, handler) };
            let fd = {
                let _entered = runtime.enter();
                // SAFETY: the host keeps the fd open, unchanged, until the
                // queue is freed, which is after `try_poll` answered the end
                // (and a grace period): the AsyncFd is dropped at the end.
                unsafe { AsyncFd::register_with_interest(QueueFd(fd), Interest::READABLE) }?
            };
            let handle = runtime.handle().clone();
            // The runtime is dropped by a short-lived thread once the queue
            // ended: not on one of its own threads, which tokio forbids.
            let owner = Arc::new(Mutex::new(Some(runtime)));
            handle.spawn(async move {
                let (in_flight, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
                'serve: loop {
                    let Ok(mut ready) = fd.readable().await else { break };
                    loop {
                        match self.try_poll() {
                            TryPoll::Task(task) => spawn_task(task, &handler, in_flight.clone()),
                            TryPoll::Empty => {
                                ready.clear_ready();
                                break;
                            }
                            TryPoll::Unloaded => break 'serve,
                        }
                    }
                }
                drop(fd); // deregisters; the host owns (and closes) the fd
                drop(in_flight);
                all_done.recv().await;
                let runtime = owner.lock().unwrap_or_else(|e| e.into_inner()).take();
                let _ = thread::Builder::new().name("resty_ffi_sdk_stop".into()).spawn(move || drop(runtime));
            });
            Ok(())
        }

        /// [`TaskQueue::serve_on`] with a thread of its own blocking in
        /// `task_poll` (how the SDK served before the queue had an fd; for
        /// comparison, and for hosts without `resty_ffi_queue_fd`).
        pub fn serve_on_poll_thread<F, Fut, R>(self, runtime: tokio::runtime::Runtime, handler: F) -> io::Result<()>
        where
            F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Into<Response>,
        {
            thread::Builder::new()
                .name("resty_ffi_sdk_poll".into())
                .spawn(move || {
                    // Every request in flight holds a sender: recv() returns None
                    // once all of them are answered.
                    let (in_flight, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
                    let _entered = runtime.enter();
                    while let Some(task) = self.poll() {
                        spawn_task(task, &handler, in_flight.clone());
                    }
                    drop(in_flight);
                    runtime.block_on(all_done.recv());
                })?;
            Ok(())
        }
    }

    /// The queue's fd, for `AsyncFd` (which never closes it: the host owns it).
    struct QueueFd(RawFd);

    impl AsRawFd for QueueFd {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }

    /// Runs `handler` on the task's request as a tokio task of the current
    /// runtime, which answers it; `guard` is held until then.
    fn spawn_task<F, Fut, R>(task: Task, handler: &F, guard: tokio::sync::mpsc::Sender<()>)
    where
        F: Fn(Vec<u8>) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<Response>,
    {
        // The future gets a copy of the request: it may outlive any borrow
        // of the host's buffer. AssertUnwindSafe: a panic only fails this request.
        let fut = catch_unwind(AssertUnwindSafe(|| CatchUnwind(Box::pin(handler(task.request().to_vec())))));
        tokio::spawn(async move {
            let response = match fut {
                Ok(fut) => fut.await.map_or_else(panic_response, Into::into),
                Err(panic) => panic_response(panic),
            };
            task.respond(response);
            drop(guard);
        });
    }

    /// A future whose panic becomes its output.
    struct CatchUnwind<F>(Pin<Box<F>>);

    impl<F: Future> Future for CatchUnwind<F> {
        type Output = thread::Result<F::Output>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            // AssertUnwindSafe: after a panic the future is never polled again.
            match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
                Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
                Ok(Poll::Pending) => Poll::Pending,
                Err(panic) => Poll::Ready(Err(panic)),
            }
        }
    }
}

/// Answers `task` with what `f` makes of its request; a panic in `f` answers
/// rc [`PANIC_RC`]. For runtimes with their own poll loop.
pub fn handle_task<R: Into<Response>>(task: Task, f: impl FnOnce(&[u8]) -> R) {
    // AssertUnwindSafe: after a panic the handler only sees new requests;
    // state it shares across calls must be unwind safe by its own design.
    let response = catch_unwind(AssertUnwindSafe(|| f(task.request()).into())).unwrap_or_else(panic_response);
    task.respond(response);
}
