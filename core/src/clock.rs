//! Cheap timestamps for call latencies: every call is stamped when posted
//! (on the host's thread) and when answered, so a clock read must cost next
//! to nothing. On x86_64 that is the time-stamp counter (invariant on the
//! machines this runs on: `constant_tsc`, `nonstop_tsc`), converted to µs
//! only when stats are read; elsewhere a monotonic clock.

use std::sync::OnceLock;
use std::time::Instant;

/// A point in time, in ticks of [`ticks`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp(u64);

/// The first stamp's time in both clocks: the base of the conversion.
static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();

fn origin() -> &'static (Instant, u64) {
    ORIGIN.get_or_init(|| (Instant::now(), raw_ticks()))
}

#[cfg(target_arch = "x86_64")]
fn raw_ticks() -> u64 {
    // SAFETY: RDTSC has no memory operands and exists on every x86_64 CPU.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn raw_ticks() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        origin();
        Stamp(raw_ticks())
    }

    /// Ticks from `self` to now (0 if the counter went backwards).
    pub(crate) fn ticks_since(self) -> u64 {
        raw_ticks().saturating_sub(self.0)
    }

    /// Ticks from `earlier` to `self`; `None` if `self` is not later.
    pub(crate) fn ticks_after(self, earlier: Stamp) -> Option<u64> {
        self.0.checked_sub(earlier.0).filter(|&ticks| ticks > 0)
    }

    /// A stamp `us` microseconds before now (tests).
    #[cfg(test)]
    pub(crate) fn micros_ago(us: u64) -> Stamp {
        let now = Stamp::now();
        Stamp(now.0.saturating_sub((us as f64 * ticks_per_us()) as u64))
    }
}

/// [`ticks_per_us`] as first measured (the first call may wait 1 ms).
pub(crate) fn ticks_per_us_once() -> f64 {
    static MEASURED: OnceLock<f64> = OnceLock::new();
    *MEASURED.get_or_init(ticks_per_us)
}

/// Ticks per µs, measured against the monotonic clock since the first stamp
/// (at least 1 ms of it: the first call may wait that long).
pub(crate) fn ticks_per_us() -> f64 {
    let (since, ticks0) = *origin();
    let mut elapsed = since.elapsed();
    while elapsed.as_micros() < 1000 {
        std::thread::sleep(std::time::Duration::from_micros(200));
        elapsed = since.elapsed();
    }
    let ticks = raw_ticks().saturating_sub(ticks0) as f64;
    (ticks / (elapsed.as_nanos() as f64 / 1000.0)).max(f64::MIN_POSITIVE)
}
