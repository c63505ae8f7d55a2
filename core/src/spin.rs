//! Bounded busy-waiting: cheaper than sleeping and being woken when the wait
//! is short (a wake-up across threads costs tens of µs here).

use std::time::Instant;

/// Empty looks between two reads of the clock.
const LOOKS_PER_CLOCK_READ: u32 = 64;

/// Calls `look` until it finds something or `deadline` passes.
pub(crate) fn spin_until<T>(deadline: Instant, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        for _ in 0..LOOKS_PER_CLOCK_READ {
            if let Some(found) = look() {
                return Some(found);
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}
