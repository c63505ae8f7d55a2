//! The `log` crate's facade, writing to the host's log (`resty_ffi_log`):
//! nginx's error log (its level, format and rotation apply) or Envoy's log.
//!
//! ```no_run
//! # fn init(_cfg: Option<&str>, queue: resty_ffi_sdk::TaskQueue) -> Result<(), i32> {
//! resty_ffi_sdk::logger::init(&queue, log::LevelFilter::Info);
//! log::warn!("started");          // -> "[warn] ... <library>: started"
//! # Ok(()) }
//! ```

use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::task::{log_raw, Level, TaskQueue};

/// The queue whose library name prefixes the lines (the first `init`'s).
static QUEUE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => Level::Err,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug | log::Level::Trace => Level::Debug,
        };
        let text = match record.module_path() {
            Some(module) => format!("{module}: {}", record.args()),
            None => record.args().to_string(),
        };
        log_raw(QUEUE.load(Ordering::Acquire), level, &text);
    }

    fn flush(&self) {}
}

/// Makes the host's log the `log` crate's logger of this library, up to
/// `max`; returns false if the library already had a logger (this one
/// included: call it once). Lines
/// start with the library name of `queue`'s runtime (the first call's).
/// The host's own level (nginx's `error_log`) filters as well.
pub fn init(queue: &TaskQueue, max: log::LevelFilter) -> bool {
    let _ = QUEUE.compare_exchange(std::ptr::null_mut(), queue.as_ptr(), Ordering::AcqRel, Ordering::Acquire);
    let installed = log::set_logger(&LOGGER).is_ok();
    if installed {
        log::set_max_level(max);
    }
    installed
}
