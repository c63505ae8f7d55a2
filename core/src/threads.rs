//! Threads the core starts for itself.

/// Starts a named thread that blocks every signal, so that the host's
/// signals (nginx's, Envoy's) stay with the host's own threads. Returns
/// whether it started.
pub(crate) fn spawn_quiet(name: &str, run: impl FnOnce() + Send + 'static) -> bool {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // SAFETY: `set` is a local sigset_t initialised by sigfillset before
            // use; pthread_sigmask only changes this thread's mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut set);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            run();
        })
        .is_ok()
}

/// The CPU the calling thread runs on (it may move right after); `u32::MAX`
/// if unknown.
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(u32::MAX)
}
