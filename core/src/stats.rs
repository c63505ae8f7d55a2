//! Per-runtime counters: what the hosts show as `rt:__stats()` and Envoy
//! metrics. Hosts count posts on their thread, runtimes count answers on
//! theirs: each side writes its own cache line.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::{ticks_per_us, Stamp};

use crossbeam_utils::CachePadded;

/// Latencies kept for the percentiles: the last `LATENCY_WINDOW` answers.
pub const LATENCY_WINDOW: usize = 1024;

/// Events only the host sees (Lua gives up on a call, or its caller went away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    TimedOut,
    Cancelled,
}

#[derive(Default)]
struct HostSide {
    posted: AtomicU64,
    queue_full: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
}

struct RuntimeSide {
    /// Also the number of the next slot of `latency` to write.
    answered: AtomicU64,
    failed: AtomicU64,
    /// Latencies in ticks of `clock` (converted to µs when read).
    latency: Box<[AtomicU64]>,
}

/// The counters of one runtime's queue.
pub struct Stats {
    host: CachePadded<HostSide>,
    runtime: CachePadded<RuntimeSide>,
}

/// A snapshot of [`Stats`]; also the C host API's `resty_ffi_stats`.
/// Latencies are from post to answer, in µs, over the last answers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub posted: u64,
    pub answered: u64,
    /// Answered with rc != 0.
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    pub queue_full: u64,
    /// Posted and not yet answered.
    pub in_flight: u64,
    /// Tasks waiting to be polled (filled in by the queue).
    pub queue_len: u64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    /// How many answers the percentiles are taken over (≤ `LATENCY_WINDOW`).
    pub samples: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            host: CachePadded::new(HostSide::default()),
            runtime: CachePadded::new(RuntimeSide {
                answered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                latency: (0..LATENCY_WINDOW).map(|_| AtomicU64::new(0)).collect(),
            }),
        }
    }
}

/// Only the thread that posts to (or answers on) a queue writes its side, so
/// a load and a store beat a locked add; a shared runtime's hosts may race
/// and lose a count, never corrupt one.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn posted(&self) {
        bump(&self.host.posted);
    }

    pub(crate) fn queue_full(&self) {
        bump(&self.host.queue_full);
    }

    pub fn host_event(&self, event: HostEvent) {
        let counter = match event {
            HostEvent::TimedOut => &self.host.timed_out,
            HostEvent::Cancelled => &self.host.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A task posted at `posted_at` was answered with `rc`. Several runtime
    /// threads may answer at once: one atomic add (two for a failure); a
    /// snapshot taken meanwhile may see the slot's previous latency.
    pub(crate) fn answered(&self, rc: i32, posted_at: Stamp) {
        let side = &self.runtime;
        let ticks = posted_at.ticks_since();
        if rc != 0 {
            side.failed.fetch_add(1, Ordering::Relaxed);
        }
        let n = side.answered.fetch_add(1, Ordering::Relaxed);
        side.latency[(n % LATENCY_WINDOW as u64) as usize].store(ticks, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let (host, runtime) = (&*self.host, &*self.runtime);
        let answered = runtime.answered.load(Ordering::Relaxed);
        let posted = host.posted.load(Ordering::Relaxed);
        let samples = (answered as usize).min(LATENCY_WINDOW);
        let per_us = if samples > 0 { ticks_per_us() } else { 1.0 };
        let to_us = |ticks: u64| (ticks as f64 / per_us).min(u32::MAX as f64) as u32;
        let mut latencies: Vec<u32> =
            runtime.latency[..samples].iter().map(|l| to_us(l.load(Ordering::Relaxed))).collect();
        latencies.sort_unstable();
        let percentile = |p: usize| match latencies.len() {
            0 => 0,
            n => latencies[((n * p).div_ceil(100)).clamp(1, n) - 1],
        };
        StatsSnapshot {
            posted,
            answered,
            failed: runtime.failed.load(Ordering::Relaxed),
            timed_out: host.timed_out.load(Ordering::Relaxed),
            cancelled: host.cancelled.load(Ordering::Relaxed),
            queue_full: host.queue_full.load(Ordering::Relaxed),
            in_flight: posted.saturating_sub(answered),
            queue_len: 0,
            p50_us: percentile(50),
            p99_us: percentile(99),
            max_us: latencies.last().copied().unwrap_or(0),
            samples: samples as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentiles() {
        let stats = Stats::default();
        for _ in 0..5 {
            stats.posted();
        }
        stats.queue_full();
        stats.answered(0, Stamp::now());
        stats.answered(3, Stamp::micros_ago(20_000));
        stats.host_event(HostEvent::TimedOut);
        stats.host_event(HostEvent::Cancelled);
        let s = stats.snapshot();
        assert_eq!((s.posted, s.answered, s.failed, s.queue_full, s.in_flight), (5, 2, 1, 1, 3));
        assert_eq!((s.timed_out, s.cancelled, s.samples), (1, 1, 2));
        assert!(s.max_us >= 20_000 && s.p99_us == s.max_us && s.p50_us < 20_000, "{s:?}");
    }

    #[test]
    fn window_keeps_the_last_answers() {
        let stats = Stats::default();
        stats.answered(0, Stamp::micros_ago(50_000));
        for _ in 0..LATENCY_WINDOW {
            stats.answered(0, Stamp::now());
        }
        let s = stats.snapshot();
        assert_eq!(s.samples as usize, LATENCY_WINDOW);
        assert!(s.max_us < 50_000, "the slow answer left the window: {s:?}");
    }
}
