//! Wake-ups at a deadline, for hosts without timers of their own (the Envoy
//! filter enforces `opts.timeout` with them): one thread per process, started
//! on first use. Each call (a completion queue and a token) has at most one
//! armed wake-up; calls on one queue have independent deadlines.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::completion::CompletionQueue;

/// A queue is known by its address while it is armed (closing disarms it;
/// the `Weak` kept meanwhile keeps the address from being reused).
type QueueKey = usize;

/// Two ordered maps, no hashing and no map per queue: arming and disarming
/// a call take two tree operations each (on Envoy, 850 instructions per call
/// where a hash map of hash maps took 2,100), and a closing queue's calls
/// are one range of `by_call`.
#[derive(Default)]
struct Armed {
    by_deadline: BTreeMap<(Instant, QueueKey, u64), Weak<CompletionQueue>>,
    /// Each armed call's deadline, by queue and token.
    by_call: BTreeMap<(QueueKey, u64), Instant>,
    /// When the timer thread wakes up next (`None`: only when notified). Arming
    /// a later deadline, the usual case, needs no notification (a context
    /// switch per call); cancelling never does: the thread wakes at the old
    /// deadline, finds nothing due and sleeps on.
    sleeping_until: Option<Instant>,
}

#[derive(Default)]
struct WakeTimer {
    armed: Mutex<Armed>,
    changed: Condvar,
}

static TIMER: OnceLock<WakeTimer> = OnceLock::new();

fn key(queue: &CompletionQueue) -> QueueKey {
    queue as *const CompletionQueue as QueueKey
}

/// Wakes `queue`'s host after `delay` on behalf of call `token`, replacing
/// that call's armed wake-up if any. Returns false if the timer thread could
/// not be started.
pub(crate) fn arm(queue: &Arc<CompletionQueue>, token: u64, delay: Duration) -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    let timer = TIMER.get_or_init(WakeTimer::default);
    let running = *RUNNING.get_or_init(|| {
        crate::threads::spawn_quiet("resty_ffi_timer", || timer.run())
    });
    if !running {
        return false;
    }
    let deadline = Instant::now() + delay;
    let mut armed = timer.lock();
    if let Some(replaced) = armed.by_call.insert((key(queue), token), deadline) {
        armed.by_deadline.remove(&(replaced, key(queue), token));
    }
    armed.by_deadline.insert((deadline, key(queue), token), Arc::downgrade(queue));
    if armed.sleeping_until.is_none_or(|wake_up| deadline < wake_up) {
        armed.sleeping_until = Some(deadline);
        timer.changed.notify_one();
    }
    true
}

/// Cancels the armed wake-up of call `token` on `queue`, if any.
pub(crate) fn disarm(queue: &CompletionQueue, token: u64) {
    if let Some(timer) = TIMER.get() {
        timer.lock().remove(key(queue), token);
    }
}

/// Cancels every armed wake-up of `queue` (it is closing).
pub(crate) fn disarm_all(queue: &CompletionQueue) {
    if let Some(timer) = TIMER.get() {
        let mut armed = timer.lock();
        let queue = key(queue);
        let tokens: Vec<u64> = armed.by_call.range((queue, 0)..=(queue, u64::MAX)).map(|(&(_, token), _)| token).collect();
        for token in tokens {
            armed.remove(queue, token);
        }
    }
}

impl Armed {
    fn remove(&mut self, queue: QueueKey, token: u64) {
        if let Some(deadline) = self.by_call.remove(&(queue, token)) {
            self.by_deadline.remove(&(deadline, queue, token));
        }
    }
}

impl WakeTimer {
    fn lock(&self) -> MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut armed = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = armed.by_deadline.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, queue, token), weak) = entry.remove_entry();
                armed.by_call.remove(&(queue, token));
                due.push(weak);
            }
            if !due.is_empty() {
                // Hooks run without the lock: they may take locks of their own.
                drop(armed);
                for queue in due.iter().filter_map(Weak::upgrade) {
                    queue.wake_host();
                }
                armed = self.lock();
                continue;
            }
            let next = armed.by_deadline.keys().next().map(|&(deadline, _, _)| deadline);
            armed.sleeping_until = next;
            armed = match next {
                Some(deadline) => {
                    self.changed.wait_timeout(armed, deadline - now).unwrap_or_else(|e| e.into_inner()).0
                }
                None => self.changed.wait(armed).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}
