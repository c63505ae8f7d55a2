//! The per-runtime task queue: hosts post, runtime threads poll.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use crossbeam_utils::CachePadded;

use crate::clock::{ticks_per_us_once, Stamp};
use crate::completion::{CompletionHook, CompletionQueue, EventFdHook};
use crate::spin::spin_until;
use crate::stats::{Stats, StatsSnapshot};
use crate::task::{RequestPool, Task};
use crate::threads::current_cpu;

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
///
/// What hosts write and what pollers write live on separate cache lines: a
/// spinning poller must not steal the line a host locks on every post.
pub struct TaskQueue {
    posting: CachePadded<Posting>,
    polling: CachePadded<Polling>,
    pollers: CachePadded<Pollers>,
    /// The runtime's library name, for its log lines.
    name: OnceLock<Box<str>>,
    /// Readable while tasks wait, once a runtime asked for it (`fd`).
    ready: OnceLock<ReadyFd>,
}

/// An eventfd that is readable while tasks wait (level-triggered for the
/// runtime's event loop). Posts write it when `signalled` was clear;
/// pollers that found the queue empty reset it, clear `signalled`, and look
/// again (the same handshake as `CompletionQueue`'s wake-up).
struct ReadyFd {
    hook: EventFdHook,
    signalled: AtomicBool,
}

/// The threads that poll a queue, so that it is freed (and an unpinned
/// library closed) only once none can use it any more (see `reaper`).
struct Pollers {
    /// Tells queues apart in threads' lists (an address may be reused).
    id: u64,
    /// One reference here and one per task posted and not yet answered
    /// (which count there as they are answered).
    unanswered: Arc<Stats>,
    /// Threads that polled and did not yet receive the end (NULL), plus one
    /// while an event loop polls with `try_poll` (`event_loop`).
    active: AtomicUsize,
    /// Whether an event loop counts among `active`: set by the first
    /// `try_poll` or `fd`, cleared by the first `try_poll` that ends.
    event_loop: AtomicU8,
    /// Counts threads starting to poll and receiving the end.
    events: AtomicU64,
}

thread_local! {
    /// The queues this thread polls and has not received the end of.
    static POLLING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Posting {
    tx: Sender<Option<Box<Task>>>,
    max_queue: usize,
    /// Orders posts against unload, so that no task lands after the marker.
    /// Holds an upper bound of the tasks queued, so that a post reads the
    /// channel's length (a cache line pollers write) only near `max_queue`.
    gate: Mutex<usize>,
    finished: AtomicBool,
    /// Buffers of large requests, filled here and given back by the runtime.
    pool: Arc<RequestPool>,
    /// The CPU the host last posted from (`threads::current_cpu`).
    host_cpu: AtomicU32,
}

struct Polling {
    rx: Receiver<Option<Box<Task>>>,
    /// How soon tasks come after a poll: how long a poller spins.
    gaps: Gaps,
    /// A fixed spin set by the host (`set_poll_spin`); 0: adapt.
    fixed_spin_us: AtomicU32,
    /// Pollers asleep on `wake` (see `has_awake_poller`).
    sleeping: AtomicUsize,
    /// Where pollers sleep: crossbeam's blocking `recv` would call
    /// `sched_yield` in its back-off, a context switch each on a busy
    /// machine, after our own spin already waited.
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Whether a poller is spinning: one at a time does.
    spinning: AtomicBool,
}

/// `Pollers::event_loop`: no event loop polls / one does / it received the end.
const LOOP_NONE: u8 = 0;
const LOOP_POLLING: u8 = 1;
const LOOP_ENDED: u8 = 2;

/// Longest fixed spin a host may set (`set_poll_spin`).
const MAX_POLL_SPIN_US: u32 = 100_000;
/// A task that came this soon after a poll began would have been cheaper to
/// spin for than a sleep and wake-up (both threads' CPU, ~15 µs on a virtual
/// machine). Tasks further apart are slept for: spinning for them costs more
/// CPU than it saves, and takes a core that the host and its clients need.
/// Where waking a thread takes longer (`Gaps::wake_ns`), so does this, up
/// to `MAX_WORTH_SPINNING_US`.
const WORTH_SPINNING_US: u32 = 20;
const MAX_WORTH_SPINNING_US: u32 = 100;
/// Shortest adaptive spin.
const MIN_SPIN_US: u32 = 4;
/// `Gaps::soon` of every gap short.
const ALL_SOON: u32 = 1024;

/// The gaps between a poll that began on an empty queue and the task that
/// ended it, judged by the task's post stamp (so a sleeping poller's own
/// wake-up does not count), as moving averages over the last ~8 such polls.
/// A poller that took the spinning turn writes them once it has its task,
/// also after sleeping for it (then `wake_ns` too); two such pollers may
/// race and lose a sample, never corrupt one.
#[derive(Default)]
struct Gaps {
    /// The share of gaps shorter than `worth_us`, in `ALL_SOON`ths.
    soon: AtomicU32,
    /// The mean of those short gaps, in ns.
    soon_ns: AtomicU32,
    /// How long a sleeping poller took to wake for a task (post to
    /// receipt), in ns: this machine's cost of a wake-up, on either side.
    wake_ns: AtomicU32,
}

impl Gaps {
    /// A gap shorter than this (µs) is worth a spin: `WORTH_SPINNING_US`, or
    /// a wake-up's time where that is longer (a busy virtual machine's
    /// vCPUs can take 40 µs and more to wake).
    fn worth_us(&self) -> u32 {
        (self.wake_ns.load(Ordering::Relaxed) / 1000).clamp(WORTH_SPINNING_US, MAX_WORTH_SPINNING_US)
    }

    /// How long (µs) to spin: 1.5 times the usual short gap (within
    /// `MIN_SPIN_US ..= worth_us`) while at least a third of the gaps are
    /// short, when the wake-ups spinning saves cost more than the spins that
    /// fail; else none.
    fn spin_us(&self) -> u32 {
        if self.soon.load(Ordering::Relaxed) * 3 < ALL_SOON {
            return 0;
        }
        (3 * self.soon_ns.load(Ordering::Relaxed) / 2000 + 1).clamp(MIN_SPIN_US, self.worth_us())
    }

    fn record(&self, gap_us: f64) {
        let soon = gap_us < f64::from(self.worth_us());
        moving_average(&self.soon, if soon { ALL_SOON } else { 0 });
        if soon {
            moving_average(&self.soon_ns, (gap_us * 1000.0) as u32);
        }
    }

    fn record_wake(&self, wake_us: f64) {
        moving_average(&self.wake_ns, (wake_us * 1000.0).min(f64::from(u32::MAX)) as u32);
    }
}

fn moving_average(average: &AtomicU32, sample: u32) {
    let old = average.load(Ordering::Relaxed);
    average.store(old - old / 8 + sample / 8, Ordering::Relaxed);
}

impl TaskQueue {
    pub fn new(max_queue: usize) -> Arc<TaskQueue> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(TaskQueue {
            posting: CachePadded::new(Posting {
                tx,
                max_queue: max_queue.max(1),
                gate: Mutex::new(0),
                finished: AtomicBool::new(false),
                pool: RequestPool::new(),
                host_cpu: AtomicU32::new(u32::MAX),
            }),
            polling: CachePadded::new(Polling {
                rx,
                gaps: Gaps::default(),
                fixed_spin_us: AtomicU32::new(0),
                sleeping: AtomicUsize::new(0),
                sleep_lock: Mutex::new(()),
                wake: Condvar::new(),
                spinning: AtomicBool::new(false),
            }),
            pollers: CachePadded::new(Pollers {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                unanswered: Arc::new(Stats::default()),
                active: AtomicUsize::new(0),
                event_loop: AtomicU8::new(LOOP_NONE),
                events: AtomicU64::new(0),
            }),
            name: OnceLock::new(),
            ready: OnceLock::new(),
        })
    }

    /// Queues a request; its answer goes to `sink` under `token`.
    pub fn post(&self, request: &[u8], token: u64, sink: &Arc<CompletionQueue>) -> Result<(), PostError> {
        self.post_request(Some(request), token, sink)
    }

    /// Queues a request that the runtime sees as NULL (Lua's `nil`).
    pub fn post_nil(&self, token: u64, sink: &Arc<CompletionQueue>) -> Result<(), PostError> {
        self.post_request(None, token, sink)
    }

    fn post_request(&self, request: Option<&[u8]>, token: u64, sink: &Arc<CompletionQueue>) -> Result<(), PostError> {
        let posting = &self.posting;
        let mut queued = posting.gate.lock().unwrap_or_else(|e| e.into_inner());
        if posting.finished.load(Ordering::Relaxed) {
            return Err(PostError::Finished);
        }
        if *queued >= posting.max_queue {
            *queued = posting.tx.len();
            if *queued >= posting.max_queue {
                self.pollers.unanswered.queue_full();
                return Err(PostError::QueueFull);
            }
        }
        let task = Task::new(request, token, sink, &self.pollers.unanswered, &posting.pool);
        self.send(Some(task));
        *queued += 1;
        self.pollers.unanswered.posted();
        let cpu = current_cpu();
        if posting.host_cpu.load(Ordering::Relaxed) != cpu {
            posting.host_cpu.store(cpu, Ordering::Relaxed);
        }
        drop(queued);
        self.signal_ready();
        Ok(())
    }

    /// Marks the queue finished after every task already posted; returns false
    /// if it was already finished.
    pub fn unload(&self) -> bool {
        let posting = &self.posting;
        let _gate = posting.gate.lock().unwrap_or_else(|e| e.into_inner());
        if posting.finished.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.send(None);
        drop(_gate);
        self.signal_ready();
        true
    }

    /// The runtime's library name (its log lines start with it); set once.
    pub fn set_name(&self, name: &str) {
        let _ = self.name.set(name.into());
    }

    pub fn name(&self) -> Option<&str> {
        self.name.get().map(|n| &**n)
    }

    /// The counters of this queue's calls.
    pub fn stats(&self) -> &Stats {
        &self.pollers.unanswered
    }

    /// A snapshot of the counters, with the queue's length.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot { queue_len: self.len() as u64, ..self.stats().snapshot() }
    }

    pub fn is_finished(&self) -> bool {
        self.posting.finished.load(Ordering::Relaxed)
    }

    /// Tasks posted and not yet polled.
    pub fn len(&self) -> usize {
        // Once finished, the channel also holds the end marker.
        self.posting.tx.len().saturating_sub(usize::from(self.is_finished()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until a task arrives; `None` once the queue is finished and empty.
    ///
    /// Waking a sleeping thread costs tens of µs, so a poller first spins
    /// (`Gaps::spin_us`) while most tasks have come within `WORTH_SPINNING_US`
    /// of a poll; an idle runtime, or one whose tasks are spaced out, sleeps.
    /// Only one poller spins at a time; the others sleep at once, so that a
    /// runtime with more threads than the machine has cores does not take the
    /// host's core.
    pub fn poll(&self) -> Option<Box<Task>> {
        self.start_polling();
        let task = self.next_task();
        if task.is_none() {
            self.stop_polling();
        } else {
            self.reset_ready();
        }
        task
    }

    /// Like `poll`, then takes up to `max` − 1 more tasks already waiting;
    /// returns how many it put into `out` (0 only at the end of the queue,
    /// after every task was handed out, like `poll`'s `None`).
    pub fn poll_many(&self, max: usize, mut out: impl FnMut(Box<Task>)) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.poll() else { return 0 };
        out(first);
        let mut n = 1;
        while n < max {
            match self.polling.rx.try_recv() {
                Ok(Some(task)) => out(task),
                Ok(None) => {
                    // The end: handed out by the next call.
                    let _ = self.task_or_end(None);
                    break;
                }
                Err(_) => break,
            }
            n += 1;
        }
        self.reset_ready();
        n
    }

    /// Never blocks: a task, `Ok(None)` when none waits now, `Err(())` at the
    /// end of the queue (then the caller must not use the queue again).
    ///
    /// An event loop may call it from any thread: the queue counts one
    /// event-loop poller (not one per thread), which the first end releases;
    /// other threads polling it so must stop within the grace period.
    pub fn try_poll(&self) -> Result<Option<Box<Task>>, ()> {
        self.start_event_loop();
        match self.polling.rx.try_recv() {
            Ok(Some(task)) => {
                self.reset_ready();
                Ok(Some(task))
            }
            Err(TryRecvError::Empty) => {
                self.reset_ready();
                Ok(None)
            }
            Ok(None) | Err(TryRecvError::Disconnected) => {
                let _ = self.task_or_end(None);
                self.stop_event_loop();
                Err(())
            }
        }
    }

    /// The queue's readiness eventfd (readable while tasks wait, or at the
    /// end), created on first use; `None` if no eventfd can be made. It
    /// stays open until the queue is freed. Counts an event-loop poller
    /// (see `try_poll`): a runtime that asks for it polls until the end.
    pub fn fd(&self) -> Option<i32> {
        if self.ready.get().is_none() {
            // Under the gate: no post slips between the look and the fd.
            let _gate = self.posting.gate.lock().unwrap_or_else(|e| e.into_inner());
            if self.ready.get().is_none() {
                let hook = EventFdHook::new().ok()?;
                let waiting = !self.polling.rx.is_empty();
                if waiting {
                    hook.wake();
                }
                let _ = self.ready.set(ReadyFd { hook, signalled: AtomicBool::new(waiting) });
            }
        }
        self.start_event_loop();
        self.ready.get().map(|ready| ready.hook.fd())
    }

    /// After a post: make the readiness fd readable, if there is one.
    fn signal_ready(&self) {
        let Some(ready) = self.ready.get() else { return };
        fence(Ordering::SeqCst);
        if !ready.signalled.load(Ordering::Relaxed) && !ready.signalled.swap(true, Ordering::AcqRel) {
            ready.hook.wake();
        }
    }

    /// After a poll: if nothing waits, make the fd unreadable; then look
    /// again, so that a post racing with us leaves it readable.
    fn reset_ready(&self) {
        let Some(ready) = self.ready.get() else { return };
        let rx = &self.polling.rx;
        if !rx.is_empty() || !ready.signalled.load(Ordering::Relaxed) {
            return;
        }
        ready.hook.acknowledge();
        ready.signalled.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !rx.is_empty() && !ready.signalled.swap(true, Ordering::AcqRel) {
            ready.hook.wake();
        }
    }

    fn start_event_loop(&self) {
        let Pollers { active, events, event_loop, .. } = &*self.pollers;
        if event_loop.load(Ordering::Acquire) == LOOP_NONE
            && event_loop.compare_exchange(LOOP_NONE, LOOP_POLLING, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            active.fetch_add(1, Ordering::AcqRel);
            events.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn stop_event_loop(&self) {
        let Pollers { active, events, event_loop, .. } = &*self.pollers;
        // Every end counts as activity: the grace period starts again.
        events.fetch_add(1, Ordering::AcqRel);
        if event_loop.compare_exchange(LOOP_POLLING, LOOP_ENDED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Pollers spin up to `us` µs for the next task before they sleep,
    /// whatever the traffic (0: adapt, the default; at most `MAX_POLL_SPIN_US`).
    /// Trades a core's idle time for latency: a sleeping poller takes tens of
    /// µs to wake on a virtual machine.
    pub fn set_poll_spin(&self, us: u32) {
        self.polling.fixed_spin_us.store(us.min(MAX_POLL_SPIN_US), Ordering::Relaxed);
    }

    /// Whether a thread that polls the queue is awake (spinning for the next
    /// task, or running one) rather than asleep: a task posted now is taken
    /// within µs, without a wake-up. A hint for a host deciding whether to
    /// busy-wait for an answer; racy by nature. An event loop polling with
    /// `try_poll` counts as awake: whether it sleeps in its own loop is not
    /// known here.
    pub fn has_awake_poller(&self) -> bool {
        self.pollers.active.load(Ordering::Relaxed) > self.polling.sleeping.load(Ordering::Relaxed)
    }

    /// Queues a task (or the end) and wakes a sleeping poller, if any.
    fn send(&self, item: Option<Box<Task>>) {
        // The receiver lives in `self`, so sending cannot fail.
        let _ = self.posting.tx.send(item);
        // Pairs with the fence in `sleep_for_task`: either the poller sees
        // `item` or this sees the poller asleep.
        fence(Ordering::SeqCst);
        let Polling { sleeping, sleep_lock, wake, .. } = &*self.polling;
        if sleeping.load(Ordering::Relaxed) > 0 {
            // Taking the lock waits for a poller between counting itself
            // and its wait, so the notification reaches it. Notifying after
            // letting the lock go: a poller woken while it was held would
            // wake only to sleep on the lock (seen: two sleeps per task).
            drop(sleep_lock.lock().unwrap_or_else(PoisonError::into_inner));
            wake.notify_one();
        }
    }

    /// Sleeps until a task or the end arrives (`None`: every sender is gone).
    fn sleep_for_task(&self) -> Option<Option<Box<Task>>> {
        let Polling { rx, sleeping, sleep_lock, wake, .. } = &*self.polling;
        let mut lock = sleep_lock.lock().unwrap_or_else(PoisonError::into_inner);
        sleeping.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let received = loop {
            match rx.try_recv() {
                Ok(item) => break Some(item),
                Err(TryRecvError::Disconnected) => break None,
                Err(TryRecvError::Empty) => lock = wake.wait(lock).unwrap_or_else(PoisonError::into_inner),
            }
        };
        sleeping.fetch_sub(1, Ordering::Relaxed);
        received
    }

    fn next_task(&self) -> Option<Box<Task>> {
        let Polling { rx, gaps, fixed_spin_us, spinning, .. } = &*self.polling;
        if spinning.load(Ordering::Relaxed) || spinning.swap(true, Ordering::Acquire) {
            return self.task_or_end(self.sleep_for_task().flatten());
        }
        let fixed = fixed_spin_us.load(Ordering::Relaxed);
        let budget = if fixed > 0 {
            fixed
        } else if current_cpu() == self.posting.host_cpu.load(Ordering::Relaxed) {
            // On the CPU the host last posted from, a spin would only keep
            // the host from running (and posting): sleep, handing it over.
            0
        } else {
            gaps.spin_us()
        };
        let began = Stamp::now();
        let spun = if budget > 0 {
            // Inside: a task, or `None` for the end of the queue.
            spin_until(Instant::now() + Duration::from_micros(budget.into()), || match rx.try_recv() {
                Ok(received) => Some(received),
                Err(TryRecvError::Disconnected) => Some(None),
                Err(TryRecvError::Empty) => None,
            })
        } else {
            None
        };
        spinning.store(false, Ordering::Release);
        let slept = spun.is_none();
        let received = spun.unwrap_or_else(|| self.sleep_for_task().flatten());
        if let (0, Some(task)) = (fixed, &received) {
            // A task posted before the poll began was waiting: no gap.
            if let Some(ticks) = task.posted_at().ticks_after(began) {
                gaps.record(ticks as f64 / ticks_per_us_once());
                if slept {
                    gaps.record_wake(task.posted_at().ticks_since() as f64 / ticks_per_us_once());
                }
            }
        }
        self.task_or_end(received)
    }

    /// Counts the calling thread as a poller, once.
    fn start_polling(&self) {
        let Pollers { id, active, events, .. } = &*self.pollers;
        let first = POLLING.try_with(|ids| {
            let mut ids = ids.borrow_mut();
            let first = !ids.contains(id);
            if first {
                ids.push(*id);
            }
            first
        });
        if first == Ok(true) {
            active.fetch_add(1, Ordering::AcqRel);
            events.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The calling thread received the end: the last time it touches the queue.
    fn stop_polling(&self) {
        let Pollers { id, active, events, .. } = &*self.pollers;
        let was_polling = POLLING.try_with(|ids| {
            let mut ids = ids.borrow_mut();
            let len = ids.len();
            ids.retain(|other| other != id);
            ids.len() < len
        });
        if was_polling == Ok(true) {
            events.fetch_add(1, Ordering::AcqRel);
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// How often threads started polling or received the end, if no task
    /// is unanswered and no thread polls now; `None` otherwise.
    pub(crate) fn quiet(&self) -> Option<u64> {
        let Pollers { active, events, unanswered, .. } = &*self.pollers;
        let before = events.load(Ordering::Acquire);
        // A task's reference is released when it is answered (`Release`); the
        // caller's acquire fence orders what the task did before its free.
        (Arc::strong_count(unanswered) == 1 && active.load(Ordering::Acquire) == 0).then_some(before)
    }

    /// Passes a task on; at the end of the queue (`None`), puts the end marker
    /// back so that every poller (several runtime threads may poll one queue)
    /// sees the end.
    fn task_or_end(&self, task: Option<Box<Task>>) -> Option<Box<Task>> {
        if task.is_none() {
            self.send(None);
        }
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(gaps: &Gaps, gap_us: &[f64]) {
        for _ in 0..64 {
            for &gap in gap_us {
                gaps.record(gap);
            }
        }
    }

    #[test]
    fn pollers_spin_for_gaps_that_are_mostly_short_and_sleep_through_long_ones() {
        let gaps = Gaps::default();
        assert_eq!(gaps.spin_us(), 0, "no spin before any gap is known");
        record(&gaps, &[6.0]);
        assert_eq!(gaps.spin_us(), 10, "1.5 times the usual short gap, rounded up");
        // Half of the gaps long: spinning for the short ones still pays.
        record(&gaps, &[6.0, 500.0]);
        assert_eq!(gaps.spin_us(), 10);
        // Mostly long gaps (a lightly loaded runtime): sleep at once.
        record(&gaps, &[6.0, 500.0, 500.0, 500.0]);
        assert_eq!(gaps.spin_us(), 0);
        // Within bounds: never past the gap worth spinning for, nor below the least spin.
        record(&gaps, &[19.0]);
        assert_eq!(gaps.spin_us(), WORTH_SPINNING_US);
        record(&gaps, &[0.5]);
        assert_eq!(gaps.spin_us(), MIN_SPIN_US);
    }

    #[test]
    fn where_wake_ups_are_slow_longer_gaps_are_worth_a_spin() {
        let gaps = Gaps::default();
        record(&gaps, &[45.0]);
        assert_eq!(gaps.spin_us(), 0, "45 µs gaps are slept through where waking takes less");
        for _ in 0..64 {
            gaps.record_wake(80.0);
        }
        record(&gaps, &[45.0]);
        let spin = gaps.spin_us();
        assert!((66..=68).contains(&spin), "{spin}: 1.5 x 45, within the 80 µs a wake-up takes");
        for _ in 0..64 {
            gaps.record_wake(5000.0);
        }
        record(&gaps, &[500.0]);
        assert_eq!(gaps.spin_us(), 0, "never for gaps past MAX_WORTH_SPINNING_US");
    }
}
