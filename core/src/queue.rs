//! The per-runtime task queue: hosts post, runtime threads poll.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::completion::CompletionQueue;
use crate::task::Task;

/// Why a task could not be posted. The caller gets it at once; posting never blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// `max_queue` tasks are already waiting to be polled.
    QueueFull,
    /// The runtime was unloaded.
    Finished,
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PostError::QueueFull => "resty_ffi: task queue full",
            PostError::Finished => "resty_ffi: runtime unloaded",
        })
    }
}

impl std::error::Error for PostError {}

/// A bounded queue of tasks for one runtime. `None` in the channel is the
/// end-of-queue marker that unloading appends; every poll after it sees it again.
pub struct TaskQueue {
    tx: Sender<Option<Box<Task>>>,
    rx: Receiver<Option<Box<Task>>>,
    max_queue: usize,
    /// Orders posts against unload, so that no task lands after the marker.
    gate: Mutex<()>,
    finished: AtomicBool,
}

impl TaskQueue {
    pub fn new(max_queue: usize) -> Arc<TaskQueue> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(TaskQueue {
            tx,
            rx,
            max_queue: max_queue.max(1),
            gate: Mutex::new(()),
            finished: AtomicBool::new(false),
        })
    }

    /// Queues a request; its answer goes to `sink` under `token`.
    pub fn post(&self, request: &[u8], token: u64, sink: &Arc<CompletionQueue>) -> Result<(), PostError> {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if self.finished.load(Ordering::Relaxed) {
            return Err(PostError::Finished);
        }
        if self.rx.len() >= self.max_queue {
            return Err(PostError::QueueFull);
        }
        // The receiver lives in `self`, so sending cannot fail.
        let _ = self.tx.send(Some(Task::new(request, token, sink)));
        Ok(())
    }

    /// Marks the queue finished after every task already posted; returns false
    /// if it was already finished.
    pub fn unload(&self) -> bool {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if self.finished.swap(true, Ordering::Relaxed) {
            return false;
        }
        let _ = self.tx.send(None);
        true
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Tasks posted and not yet polled.
    pub fn len(&self) -> usize {
        // Once finished, the channel also holds the end marker.
        self.rx.len().saturating_sub(usize::from(self.is_finished()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until a task arrives (spinning briefly, then sleeping); `None`
    /// once the queue is finished and empty.
    pub fn poll(&self) -> Option<Box<Task>> {
        match self.rx.recv() {
            Ok(Some(task)) => Some(task),
            _ => self.repost_marker(),
        }
    }

    /// Like [`poll`](Self::poll) without blocking: `Ok(None)` = finished,
    /// `Err(())` = nothing queued right now.
    pub fn try_poll(&self) -> Result<Option<Box<Task>>, ()> {
        match self.rx.try_recv() {
            Ok(Some(task)) => Ok(Some(task)),
            Ok(None) | Err(TryRecvError::Disconnected) => Ok(self.repost_marker()),
            Err(TryRecvError::Empty) => Err(()),
        }
    }

    /// Puts the end marker back so that every poller (several runtime threads
    /// may poll one queue) sees the end.
    fn repost_marker(&self) -> Option<Box<Task>> {
        let _ = self.tx.send(None);
        None
    }
}
