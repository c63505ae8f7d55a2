//! Frees what a dropped runtime leaves behind, its task queue and (when
//! unpinned) its library, once nothing can run or use them any more: every
//! task was answered, every thread that polled received the end (NULL) and
//! left, and then nothing polled for a grace period (a thread returning from
//! `task_poll` or `respond` is still in the library's code). One thread per
//! process, started on first use, checks the retired runtimes a few times a
//! second while there are any.

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::library::Library;
use crate::queue::TaskQueue;

/// How long a retired runtime must stay quiet before it is freed.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
const CHECK_EVERY: Duration = Duration::from_millis(100);

struct Retired {
    queue: Arc<TaskQueue>,
    /// Closed on drop, if unpinned.
    _library: Library,
    /// Since when, and at which count of poller events, it has been quiet.
    quiet_since: Option<(Instant, u64)>,
}

#[derive(Default)]
struct Reaper {
    retired: Mutex<Vec<Retired>>,
    added: Condvar,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

/// Hands over an unloaded runtime's queue and library. If the reaper thread
/// cannot start, both are kept until the process exits (safe, not freed).
pub(crate) fn retire(queue: Arc<TaskQueue>, library: Library) {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    let reaper = REAPER.get_or_init(Reaper::default);
    let running = *RUNNING.get_or_init(|| crate::threads::spawn_quiet("resty_ffi_reaper", || reaper.run()));
    if !running {
        std::mem::forget((queue, library));
        return;
    }
    reaper.lock().push(Retired { queue, _library: library, quiet_since: None });
    reaper.added.notify_one();
}

/// Queues retired and not yet freed (for tests and diagnostics).
pub fn retired_runtimes() -> usize {
    REAPER.get().map_or(0, |reaper| reaper.lock().len())
}

impl Retired {
    /// Whether it has been quiet for the grace period.
    fn expired(&mut self, now: Instant) -> bool {
        let quiet = self.queue.quiet();
        // Pairs with the release of the last task's reference and of the
        // last poller's count: what they did before happens before our free.
        fence(Ordering::Acquire);
        match (quiet, self.quiet_since) {
            (Some(events), Some((since, seen))) if events == seen => now.duration_since(since) >= GRACE,
            (Some(events), _) => {
                self.quiet_since = Some((now, events));
                false
            }
            (None, _) => {
                self.quiet_since = None;
                false
            }
        }
    }
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, Vec<Retired>> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut retired = self.lock();
        loop {
            if retired.is_empty() {
                retired = self.added.wait(retired).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let now = Instant::now();
            let mut freed = Vec::new();
            let mut i = 0;
            while i < retired.len() {
                if retired[i].expired(now) {
                    freed.push(retired.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            // dlclose runs the library's destructors: not under our lock.
            drop(retired);
            drop(freed);
            std::thread::sleep(CHECK_EVERY);
            retired = self.lock();
        }
    }
}
