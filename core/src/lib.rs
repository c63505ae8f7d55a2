//! The core of resty_ffi: per-runtime task queues, the runtime C ABI of the
//! original lua-resty-ffi, and completion queues that wake a host once per batch.
//!
//! A *host* (the nginx module, the Envoy filter, a test) loads a runtime library
//! with [`Runtime::load`], posts requests with [`Runtime::post`] and receives the
//! answers from a [`CompletionQueue`] whose [`CompletionHook`] wakes its event
//! loop. A *runtime* (any C-ABI library exporting `libffi_init`) polls tasks on its
//! own threads through the four functions of [`abi`] and answers each exactly once.
//! Runtimes also reach the host's shared dicts by name ([`shdict_abi`]): nginx's
//! `lua_shared_dict` zones through the host, or the core's own [`shdict`] store.
//!
//! What this crate is not: it has no Lua, no nginx and no Envoy code; those live
//! in the host crates and modules that link it.
//!
//! # Implementation notes
//! * A task is one heap allocation owned by exactly one party at a time: the
//!   queue, then the runtime (from `task_poll` to `respond`), then the completion
//!   queue, then the host. Dropping it anywhere frees its request and response.
//! * A queue handed to a runtime (`tq`) outlives the host's handle: a runtime
//!   may still poll it after its host unloaded it, and every later poll
//!   answers NULL. Once every task was answered, every thread that polled got
//!   its NULL, and nothing polled for a grace period, the queue is freed (and
//!   an unpinned library closed): see `reaper`.
//!
//! ```
//! use std::sync::Arc;
//! use resty_ffi::{CallbackHook, CompletionQueue, TaskQueue};
//!
//! let sink = Arc::new(CompletionQueue::new(CallbackHook::new(|| {})));
//! let queue = TaskQueue::new(16);
//! queue.post(b"ping", 7, &sink).unwrap();
//! let task = queue.poll().unwrap();           // what a runtime thread does
//! assert_eq!(task.request(), b"ping");
//! task.respond(0, b"pong".to_vec().into());
//! let mut answers = Vec::new();
//! sink.drain(64, |c| answers.push((c.token, c.rc, c.response.to_vec())));
//! assert_eq!(answers, vec![(7, 0, b"pong".to_vec())]);
//! ```

pub mod abi;
mod clock;
mod completion;
mod glibc_heap;
pub mod host_abi;
mod library;
pub mod log;
mod queue;
mod reaper;
mod runtime;
pub mod shdict;
pub mod shdict_abi;
mod spin;
mod stats;
mod task;
mod threads;
mod wake_timer;

pub use completion::{CallbackHook, Completion, CompletionHook, CompletionQueue, EventFdHook, Fault};
pub use queue::{PostError, TaskQueue};
pub use reaper::retired_runtimes;
pub use runtime::{LoadError, LoadOptions, Runtime};
pub use stats::{HostEvent, Stats, StatsSnapshot, LATENCY_WINDOW};
pub use task::{ResponseBuffer, Task};
