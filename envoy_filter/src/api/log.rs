//! What the handle's log methods call: Envoy's log.

use std::ffi::{c_char, c_int};

use crate::abi::{log_bytes, log_enabled as enabled, LogLevel};
use crate::api::bytes;

fn level(raw: c_int) -> LogLevel {
    match raw {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    }
}

/// 1 if Envoy logs at `level` (0 trace … 5 critical), else 0.
///
/// # Safety
/// None: safe to call with any value; `unsafe` only for the function table.
pub unsafe extern "C" fn log_enabled(raw: c_int) -> c_int {
    c_int::from(enabled(level(raw)))
}

/// Writes `message` to Envoy's log at `level`.
///
/// # Safety
/// `message` is readable for `len` bytes.
pub unsafe extern "C" fn log(raw: c_int, message: *const c_char, len: usize) -> c_int {
    log_bytes(level(raw), bytes(message, len));
    0
}

/// Envoy's level for a runtime's (nginx's numbering: 1 emerg … 8 debug).
fn runtime_level(nginx: c_int) -> LogLevel {
    match nginx {
        ..=3 => LogLevel::Critical,
        4 => LogLevel::Error,
        5 => LogLevel::Warn,
        6 | 7 => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// Runtime log messages (`resty_ffi_log`) go to Envoy's log, written by a
/// thread of the core (Envoy's log is thread-safe), never by the runtime's.
pub fn take_runtime_logs() {
    let taken = resty_ffi::log::use_writer(Box::new(|level, text| log_bytes(runtime_level(level), text)));
    if taken.is_err() {
        log_bytes(LogLevel::Warn, b"resty_ffi: runtime log messages cannot reach Envoy's log in this process");
    }
}
