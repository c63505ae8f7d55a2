//! Runtime log messages on their way to the host's log (`resty_ffi_log`).
//!
//! Runtime threads never write a log themselves: they push a record into a
//! bounded queue and, at most once between two drains, wake its consumer.
//! The consumer is the host's event loop (nginx: an eventfd its worker
//! watches, so nginx's own log writes the line), or a thread of the core
//! that hands each record to the host's log function (Envoy), or, when no
//! host said which before the first message, that thread writing stderr.
//! A full queue drops records and counts them; the next drain reports them
//! in one line.

use std::io::Write;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;

use crate::completion::EventFdHook;

/// Records waiting for the host; more are dropped (and counted).
pub const LOG_QUEUE_LEN: usize = 4096;
/// Longest message kept; longer ones are cut and end in "...".
pub const MAX_MESSAGE: usize = 16 * 1024;

/// nginx's numbering: 1 emerg ... 4 err, 5 warn, 6 notice, 7 info, 8 debug.
pub const LEVEL_EMERG: i32 = 1;
pub const LEVEL_WARN: i32 = 5;
pub const LEVEL_DEBUG: i32 = 8;

pub struct LogRecord {
    pub level: i32,
    pub text: Vec<u8>,
}

/// What the host writes a line with (`level`, bytes).
pub type LogWriter = Box<dyn Fn(i32, &[u8]) + Send + Sync>;

enum Consumer {
    EventFd(EventFdHook),
    /// The core's log thread (parked while idle) calls the writer.
    Thread(Thread),
}

struct LogQueue {
    records: ArrayQueue<LogRecord>,
    dropped: AtomicU64,
    wake_pending: AtomicBool,
    consumer: OnceLock<Consumer>,
    writer: OnceLock<LogWriter>,
}

static LOG: OnceLock<LogQueue> = OnceLock::new();

fn queue() -> &'static LogQueue {
    LOG.get_or_init(|| LogQueue {
        records: ArrayQueue::new(LOG_QUEUE_LEN),
        dropped: AtomicU64::new(0),
        wake_pending: AtomicBool::new(false),
        consumer: OnceLock::new(),
        writer: OnceLock::new(),
    })
}

/// Why a host could not take the log.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerError {
    /// Another consumer (or stderr, for messages logged before) has it.
    Taken,
    /// The eventfd or the thread could not be made.
    Os,
}

/// The host drains the log itself when the returned eventfd is readable
/// (see [`drain`]). One consumer per process.
pub fn use_eventfd() -> Result<i32, ConsumerError> {
    let hook = EventFdHook::new().map_err(|_| ConsumerError::Os)?;
    let q = queue();
    q.consumer.set(Consumer::EventFd(hook)).map_err(|_| ConsumerError::Taken)?;
    let Some(Consumer::EventFd(hook)) = q.consumer.get() else { unreachable!() };
    Ok(hook.fd())
}

/// A thread of the core hands each record to `writer`. One consumer per process.
pub fn use_writer(writer: LogWriter) -> Result<(), ConsumerError> {
    let q = queue();
    if q.consumer.get().is_some() || q.writer.set(writer).is_err() {
        return Err(ConsumerError::Taken);
    }
    start_thread(q)
}

fn start_thread(q: &'static LogQueue) -> Result<(), ConsumerError> {
    let spawned = std::thread::Builder::new().name("resty_ffi_log".into()).spawn(move || loop {
        drain_all(|level, text| match q.writer.get() {
            Some(writer) => writer(level, text),
            None => write_stderr(level, text),
        });
        std::thread::park();
    });
    let thread = spawned.map_err(|_| ConsumerError::Os)?.thread().clone();
    match q.consumer.set(Consumer::Thread(thread)) {
        Ok(()) => Ok(()),
        // Lost a race with another consumer: our thread just parks forever.
        Err(_) => Err(ConsumerError::Taken),
    }
}

fn write_stderr(level: i32, text: &[u8]) {
    const NAMES: [&str; 8] = ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"];
    let name = NAMES[(level.clamp(LEVEL_EMERG, LEVEL_DEBUG) - 1) as usize];
    let mut line = Vec::with_capacity(text.len() + 16);
    line.extend_from_slice(format!("[{name}] ").as_bytes());
    line.extend_from_slice(text);
    line.push(b'\n');
    let _ = std::io::stderr().write_all(&line);
}

/// Queues a message for the host's log; never blocks. `prefix` (the
/// runtime's library name) goes first, followed by ": ".
pub fn log(prefix: Option<&str>, level: i32, message: &[u8]) {
    let q = queue();
    if q.consumer.get().is_none() {
        // No host said where logs go: stderr, by a thread of ours.
        let _ = start_thread(q);
    }
    let level = level.clamp(LEVEL_EMERG, LEVEL_DEBUG);
    let cut = message.len() > MAX_MESSAGE;
    let message = &message[..message.len().min(MAX_MESSAGE)];
    let mut text = Vec::with_capacity(message.len() + prefix.map_or(0, |p| p.len() + 2) + 3);
    if let Some(prefix) = prefix {
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(b": ");
    }
    text.extend_from_slice(message);
    if cut {
        text.extend_from_slice(b"...");
    }
    if q.records.push(LogRecord { level, text }).is_err() {
        q.dropped.fetch_add(1, Ordering::Relaxed);
    }
    // As in `CompletionQueue::complete`: a drain that began before our push
    // either sees it or has cleared the flag that we read after this fence.
    fence(Ordering::SeqCst);
    if !q.wake_pending.load(Ordering::Relaxed) && !q.wake_pending.swap(true, Ordering::AcqRel) {
        match q.consumer.get() {
            Some(Consumer::EventFd(hook)) => crate::completion::CompletionHook::wake(hook),
            Some(Consumer::Thread(thread)) => thread.unpark(),
            None => {}
        }
    }
}

/// Hands up to `max` waiting records to `write`, on the consumer's thread,
/// first one line for records dropped since the last drain; returns how many
/// it handed over. Call again while it returns `max`.
pub fn drain(max: usize, mut write: impl FnMut(i32, &[u8])) -> usize {
    let q = queue();
    if let Some(Consumer::EventFd(hook)) = q.consumer.get() {
        hook.acknowledge();
    }
    q.wake_pending.store(false, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    let mut n = 0;
    let dropped = q.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 && max > 0 {
        write(LEVEL_WARN, format!("resty_ffi: {dropped} log messages dropped").as_bytes());
        n += 1;
    }
    while n < max {
        let Some(record) = q.records.pop() else { break };
        write(record.level, &record.text);
        n += 1;
    }
    n
}

fn drain_all(mut write: impl FnMut(i32, &[u8])) {
    while drain(256, &mut write) == 256 {}
}

/// Records waiting (for tests).
pub fn pending() -> usize {
    LOG.get().map_or(0, |q| q.records.len())
}
