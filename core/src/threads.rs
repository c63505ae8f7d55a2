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
