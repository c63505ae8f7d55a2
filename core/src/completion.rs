//! Completion queues: where answered tasks wait for their host, and the hooks
//! that wake the host's event loop once per batch.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use crate::spin::spin_until;
use crate::task::ResponseBuffer;
use crate::wake_timer;

/// How a completion queue tells its host that answers are waiting.
///
/// `wake` is called from runtime threads, at most once between two drains.
pub trait CompletionHook: Send + Sync {
    fn wake(&self);
}

/// Wakes an event loop through an eventfd (the nginx host).
pub struct EventFdHook {
    fd: OwnedFd,
}

impl EventFdHook {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(EventFdHook { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The descriptor to register for readability in the host's event loop.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Resets the eventfd counter; call when the loop reports it readable.
    pub fn acknowledge(&self) {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a local u64; a failure (EAGAIN) is harmless.
        unsafe { libc::read(self.fd(), &mut counter as *mut u64 as *mut libc::c_void, 8) };
    }
}

impl CompletionHook for EventFdHook {
    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64; the only failure (EAGAIN on a
        // saturated counter) still leaves the fd readable.
        unsafe { libc::write(self.fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Wakes the host through a closure, e.g. a post to its dispatcher (the Envoy host).
pub struct CallbackHook<F: Fn() + Send + Sync>(F);

impl<F: Fn() + Send + Sync> CallbackHook<F> {
    pub fn new(wake: F) -> Self {
        CallbackHook(wake)
    }
}

impl<F: Fn() + Send + Sync> CompletionHook for CallbackHook<F> {
    fn wake(&self) {
        (self.0)()
    }
}

/// An answered task as the host sees it.
pub struct Completion {
    pub token: u64,
    pub rc: i32,
    pub response: ResponseBuffer,
    /// Set when the answer broke the ABI: the caller gets this error instead.
    pub fault: Option<Fault>,
}

/// An answer that breaks the runtime ABI; its response was freed unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `rsp_len < 0`.
    NegativeLength,
}

impl Fault {
    /// The error the caller gets (a static C string, for C and Lua hosts).
    pub fn message(self) -> &'static CStr {
        match self {
            Fault::NegativeLength => c"resty_ffi: runtime answered with a negative length",
        }
    }
}

/// Answers for one host, drained on the host's thread.
///
/// Shared (`Arc`) by the host and by every task it posted, so a runtime may
/// answer after the host closed it: such answers are freed, never delivered.
pub struct CompletionQueue {
    done: SegQueue<Completion>,
    wake_pending: AtomicBool,
    closed: AtomicBool,
    cancelled: OnceLock<Box<[AtomicU64]>>,
    hook: Box<dyn CompletionHook>,
}

/// The table of cancelled tokens has 2^CANCELLED_BITS slots (allocated on
/// the first cancel). A token cancelled later may take the slot of an earlier
/// one, whose answer is then delivered: hosts drop answers to tokens they no
/// longer wait for.
const CANCELLED_BITS: u32 = 8;
const CANCELLED_SLOTS: usize = 1 << CANCELLED_BITS;

/// A token's slot in the table, and what the slot holds for it (0 = empty;
/// `u64::MAX`, stored as 0, cannot be cancelled).
fn cancelled_slot(token: u64) -> (usize, u64) {
    // Fibonacci hashing: spreads sequential and strided tokens.
    let slot = (token.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CANCELLED_BITS)) as usize;
    (slot, token.wrapping_add(1))
}

impl CompletionQueue {
    pub fn new(hook: impl CompletionHook + 'static) -> Self {
        CompletionQueue {
            done: SegQueue::new(),
            wake_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            cancelled: OnceLock::new(),
            hook: Box::new(hook),
        }
    }

    pub(crate) fn complete(&self, completion: Completion) {
        if self.closed.load(Ordering::Acquire) {
            return; // dropping the completion frees the response
        }
        self.done.push(completion);
        // Pairs with the fence in `drain`: either the drain sees this answer or
        // we see its cleared flag. Reading before swapping keeps the flag's
        // cache line shared while a wake-up is already pending.
        fence(Ordering::SeqCst);
        if !self.wake_pending.load(Ordering::Relaxed) && !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.hook.wake();
        }
    }

    /// Hands up to `max` answers to `deliver`, on the host thread; returns how
    /// many it delivered. Call again while it returns `max`: the hook is only
    /// re-armed for answers that arrive after a drain began.
    pub fn drain(&self, max: usize, mut deliver: impl FnMut(Completion)) -> usize {
        self.wake_pending.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut delivered = 0;
        while delivered < max {
            let Some(completion) = self.done.pop() else { break };
            if self.take_cancelled(completion.token) {
                continue;
            }
            deliver(completion);
            delivered += 1;
        }
        delivered
    }

    /// Busy-waits, never sleeping, up to `max` for an answer; returns whether
    /// one is waiting (drain it). For a host that expects a fast answer and
    /// has nothing else to run meanwhile. The host watches meanwhile, so an
    /// answer arriving during the wait does not call the hook.
    pub fn spin_until_answered(&self, max: Duration) -> bool {
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            // A wake-up is on its way already: just look.
            return spin_until(Instant::now() + max, || (!self.done.is_empty()).then_some(())).is_some();
        }
        if spin_until(Instant::now() + max, || (!self.done.is_empty()).then_some(())).is_some() {
            return true; // the host drains, which re-arms the hook
        }
        // Re-armed, then one more look: an answer that came in between (and
        // found the hook disarmed) is the host's to drain now.
        self.wake_pending.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        !self.done.is_empty()
    }

    /// Calls the hook `delay` from now on behalf of call `token` (a host
    /// without timers of its own uses it to give up on slow answers),
    /// replacing that call's wake-up armed before; `None` cancels it. Calls
    /// have independent wake-ups. Returns false if the timer thread cannot start.
    pub fn wake_after(self: &Arc<Self>, token: u64, delay: Option<Duration>) -> bool {
        match delay {
            Some(delay) => wake_timer::arm(self, token, delay),
            None => {
                wake_timer::disarm(self, token);
                true
            }
        }
    }

    /// The armed wake-up is due.
    pub(crate) fn wake_host(&self) {
        if !self.closed.load(Ordering::Acquire) {
            self.hook.wake();
        }
    }

    /// Forgets the caller of `token` (it went away): its answer will usually
    /// be freed, not delivered (the queue remembers a bounded number of
    /// cancelled tokens, see `CANCELLED_SLOTS`). Cancel only tokens that were
    /// posted and not yet delivered.
    pub fn cancel(&self, token: u64) {
        let slots = self.cancelled.get_or_init(|| (0..CANCELLED_SLOTS).map(|_| AtomicU64::new(0)).collect());
        let (slot, stored) = cancelled_slot(token);
        slots[slot].store(stored, Ordering::Release);
    }

    fn take_cancelled(&self, token: u64) -> bool {
        let Some(slots) = self.cancelled.get() else { return false };
        let (slot, stored) = cancelled_slot(token);
        let slot = &slots[slot];
        stored != 0
            && slot.load(Ordering::Acquire) == stored
            && slot.compare_exchange(stored, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// The host is going away: answers waiting now and arriving later are freed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        wake_timer::disarm_all(self);
        while self.done.pop().is_some() {}
    }
}

impl<H: CompletionHook + ?Sized> CompletionHook for Arc<H> {
    fn wake(&self) {
        (**self).wake()
    }
}
