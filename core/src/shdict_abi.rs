//! The shared-dict part of the runtime C ABI (`resty_ffi_shdict_*`, SPEC
//! §2): runtimes read and write the host's shared dicts by name from any
//! thread. A host with dicts of its own (nginx's `lua_shared_dict` zones)
//! registers them with [`resty_ffi_shdict_host_set`]; without one, the
//! dicts are the core's own ([`crate::shdict`], declared by the Envoy
//! filter's config).
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, CStr};
use std::sync::RwLock;

use crate::abi::no_unwind;
use crate::shdict::{self, Error, StoreOp, Value, MAX_KEY_LEN};

/// No dict of that name (or the host's dicts are gone: the worker exits).
pub const RESTY_FFI_SHDICT_NO_DICT: c_int = -1;
/// No memory, even after evicting (`set`, `incr`), or for the copy (`get`).
pub const RESTY_FFI_SHDICT_NO_MEMORY: c_int = -2;
/// A NULL pointer, a key of 0 or more than 65535 bytes, a negative or NaN
/// exptime or init_ttl.
pub const RESTY_FFI_SHDICT_BAD_ARGUMENT: c_int = -3;
/// The value has another type: `get` of a number, boolean or list; `incr`
/// of anything but a number.
pub const RESTY_FFI_SHDICT_WRONG_TYPE: c_int = -4;
/// A bug in the core was caught; the call may or may not have happened.
pub const RESTY_FFI_SHDICT_INTERNAL_ERROR: c_int = -5;

/// A host's own dicts: the four operations on arguments the core already
/// checked (non-NULL pointers, a key of 1 to 65535 bytes, times in
/// milliseconds ≥ 0), with the return codes of `resty_ffi_shdict_*`. Each
/// may be called from any thread, concurrently.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct resty_ffi_shdict_host {
    pub get: Option<
        unsafe extern "C" fn(
            dict: *const c_char,
            key: *const c_char,
            key_len: usize,
            val: *mut *mut c_char,
            val_len: *mut usize,
            flags: *mut c_int,
        ) -> c_int,
    >,
    pub set: Option<
        unsafe extern "C" fn(
            dict: *const c_char,
            key: *const c_char,
            key_len: usize,
            val: *const c_char,
            val_len: usize,
            exptime_ms: c_long,
            flags: c_int,
        ) -> c_int,
    >,
    pub incr: Option<
        unsafe extern "C" fn(
            dict: *const c_char,
            key: *const c_char,
            key_len: usize,
            by: f64,
            init: f64,
            init_ttl_ms: c_long,
            out: *mut f64,
        ) -> c_int,
    >,
    pub delete: Option<unsafe extern "C" fn(dict: *const c_char, key: *const c_char, key_len: usize) -> c_int>,
}

/// The registered host, if any. Calls into it hold the read lock, so that
/// unregistering waits until none runs.
static HOST: RwLock<Option<resty_ffi_shdict_host>> = RwLock::new(None);

/// Registers the host's dicts (`host` is copied), or with NULL unregisters
/// them: this returns once no call into the old ones runs any more, and
/// later calls answer `RESTY_FFI_SHDICT_NO_DICT`. Call it from the host's
/// own thread, never from inside one of the host's functions.
///
/// # Safety
/// `host` is NULL or points to a readable `resty_ffi_shdict_host` whose
/// functions stay callable until they are unregistered.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_shdict_host_set(host: *const resty_ffi_shdict_host) {
    // SAFETY: the caller's contract: NULL or a readable struct.
    let host = unsafe { host.as_ref() }.copied();
    *HOST.write().unwrap_or_else(|e| e.into_inner()) = host;
}

/// Runs `own` on the core's dict `name`, or `hosted` with the host if one is
/// registered (holding the lock that keeps it registered).
fn dispatch(
    name: &[u8],
    hosted: impl FnOnce(&resty_ffi_shdict_host) -> c_int,
    own: impl FnOnce(&shdict::SharedDict) -> c_int,
) -> c_int {
    no_unwind(RESTY_FFI_SHDICT_INTERNAL_ERROR, || {
        let host = HOST.read().unwrap_or_else(|e| e.into_inner());
        match &*host {
            Some(host) => hosted(host),
            None => {
                drop(host);
                shdict::with_dict(name, own).unwrap_or(RESTY_FFI_SHDICT_NO_DICT)
            }
        }
    })
}

/// The dict's name and the key, checked; Err(code) for bad arguments.
///
/// # Safety
/// `dict` is NULL or a C string; `key` is NULL or readable for `key_len` bytes.
unsafe fn names<'a>(dict: *const c_char, key: *const c_char, key_len: usize) -> Result<(&'a [u8], &'a [u8]), c_int> {
    if dict.is_null() || key.is_null() || key_len == 0 || key_len > MAX_KEY_LEN {
        return Err(RESTY_FFI_SHDICT_BAD_ARGUMENT);
    }
    // SAFETY: the caller's contract, and both are non-NULL.
    unsafe { Ok((CStr::from_ptr(dict).to_bytes(), std::slice::from_raw_parts(key as *const u8, key_len))) }
}

/// Seconds as whole milliseconds, as lua-resty-core converts them (`long`
/// of `seconds * 1000`); None for negative or NaN.
fn millis(seconds: f64) -> Option<c_long> {
    (seconds >= 0.0).then_some((seconds * 1000.0) as c_long)
}

fn error_code(e: Error) -> c_int {
    match e {
        Error::NoMemory => RESTY_FFI_SHDICT_NO_MEMORY,
        Error::NotANumber | Error::IsList | Error::NotAList => RESTY_FFI_SHDICT_WRONG_TYPE,
        Error::NotFound | Error::Exists | Error::NilValue => RESTY_FFI_SHDICT_BAD_ARGUMENT,
    }
}

/// A `malloc()`ed copy of `bytes` (one byte at least, so never NULL on success).
fn malloc_copy(bytes: &[u8]) -> Option<*mut c_char> {
    // SAFETY: malloc of a non-zero size; NULL is checked.
    let copy = unsafe { libc::malloc(bytes.len().max(1)) } as *mut u8;
    if copy.is_null() {
        return None;
    }
    // SAFETY: `copy` has room for `bytes.len()` bytes and does not overlap it.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len()) };
    Some(copy as *mut c_char)
}

/// The string stored under `key` in dict `dict`: 1 = found (`*val` is a
/// `malloc()`ed copy the caller frees, never NULL; `*val_len` its length;
/// `*flags`, if `flags` is not NULL, its user flags), 0 = not found or
/// expired, < 0 = error (`RESTY_FFI_SHDICT_*`; a number, boolean or list
/// is `RESTY_FFI_SHDICT_WRONG_TYPE`).
///
/// # Safety
/// `dict` is a C string; `key` is readable for `key_len` bytes; `val` and
/// `val_len` are writable; `flags` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_shdict_get(
    dict: *const c_char,
    key: *const c_char,
    key_len: usize,
    val: *mut *mut c_char,
    val_len: *mut usize,
    flags: *mut c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    let (name, key_bytes) = match unsafe { names(dict, key, key_len) } {
        Ok(names) if !val.is_null() && !val_len.is_null() => names,
        _ => return RESTY_FFI_SHDICT_BAD_ARGUMENT,
    };
    dispatch(
        name,
        // SAFETY: the host's contract, on arguments checked above.
        |host| host.get.map_or(RESTY_FFI_SHDICT_NO_DICT, |get| unsafe { get(dict, key, key_len, val, val_len, flags) }),
        |shdict| {
            let found = shdict.get(key_bytes, false, |found| match found {
                None => Ok(None),
                Some((Value::Str(s), user_flags, _)) => malloc_copy(s).map(|copy| Some((copy, s.len(), user_flags))).ok_or(RESTY_FFI_SHDICT_NO_MEMORY),
                Some(_) => Err(RESTY_FFI_SHDICT_WRONG_TYPE),
            });
            match found.map_err(error_code).and_then(|r| r) {
                Ok(None) => 0,
                Ok(Some((copy, len, user_flags))) => {
                    // SAFETY: `val`, `val_len` are writable (checked non-NULL);
                    // `flags` is NULL or writable (contract).
                    unsafe {
                        *val = copy;
                        *val_len = len;
                        if !flags.is_null() {
                            *flags = user_flags as c_int;
                        }
                    }
                    1
                }
                Err(code) => code,
            }
        },
    )
}

/// Stores `val_len` bytes at `val` (NULL with 0: the empty string) under
/// `key`, with user flags `flags`, expiring after `exptime` seconds (0:
/// never). Evicts least recently used entries when the dict is full, like
/// `ngx.shared.DICT:set`. 0 = stored; `RESTY_FFI_SHDICT_NO_MEMORY` when it
/// does not fit even after evicting.
///
/// # Safety
/// `dict` is a C string; `key` is readable for `key_len` bytes; `val` is
/// NULL or readable for `val_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_shdict_set(
    dict: *const c_char,
    key: *const c_char,
    key_len: usize,
    val: *const c_char,
    val_len: usize,
    exptime: f64,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    let (name, key_bytes) = match unsafe { names(dict, key, key_len) } {
        Ok(names) => names,
        Err(code) => return code,
    };
    let Some(exptime_ms) = millis(exptime) else { return RESTY_FFI_SHDICT_BAD_ARGUMENT };
    let (val, value) = match (val.is_null(), val_len) {
        (true, 0) => (c"".as_ptr(), &[][..]),
        (true, _) => return RESTY_FFI_SHDICT_BAD_ARGUMENT,
        // SAFETY: the caller's contract: readable for `val_len` bytes.
        (false, len) => (val, unsafe { std::slice::from_raw_parts(val as *const u8, len) }),
    };
    dispatch(
        name,
        // SAFETY: the host's contract, on arguments checked above.
        |host| {
            host.set.map_or(RESTY_FFI_SHDICT_NO_DICT, |set| unsafe {
                set(dict, key, key_len, val, val_len, exptime_ms, flags)
            })
        },
        |shdict| {
            match shdict.store(StoreOp::Set, false, key_bytes, Some(Value::Str(value)), exptime_ms, flags as u32) {
                Ok(_) => 0,
                Err((e, _)) => error_code(e),
            }
        },
    )
}

/// Like `ngx.shared.DICT:incr(key, by, init, init_ttl)`: adds `by` to the
/// number under `key`; a missing or expired key starts at `init` (expiring
/// after `init_ttl` seconds if > 0). 0 = ok, `*out` the new value;
/// `RESTY_FFI_SHDICT_WRONG_TYPE` if the value is not a number.
///
/// # Safety
/// `dict` is a C string; `key` is readable for `key_len` bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_shdict_incr(
    dict: *const c_char,
    key: *const c_char,
    key_len: usize,
    by: f64,
    init: f64,
    init_ttl: f64,
    out: *mut f64,
) -> c_int {
    // SAFETY: the caller's contract.
    let (name, key_bytes) = match unsafe { names(dict, key, key_len) } {
        Ok(names) if !out.is_null() => names,
        _ => return RESTY_FFI_SHDICT_BAD_ARGUMENT,
    };
    let Some(init_ttl_ms) = millis(init_ttl) else { return RESTY_FFI_SHDICT_BAD_ARGUMENT };
    dispatch(
        name,
        // SAFETY: the host's contract, on arguments checked above.
        |host| {
            host.incr.map_or(RESTY_FFI_SHDICT_NO_DICT, |incr| unsafe {
                incr(dict, key, key_len, by, init, init_ttl_ms, out)
            })
        },
        |shdict| match shdict.incr(key_bytes, by, Some(init), init_ttl_ms) {
            Ok((value, _)) => {
                // SAFETY: `out` is writable (checked non-NULL, contract).
                unsafe { *out = value };
                0
            }
            Err(e) => error_code(e),
        },
    )
}

/// Removes `key` (present or not): 0, or < 0 for an error.
///
/// # Safety
/// `dict` is a C string; `key` is readable for `key_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resty_ffi_shdict_delete(dict: *const c_char, key: *const c_char, key_len: usize) -> c_int {
    // SAFETY: the caller's contract.
    let (name, key_bytes) = match unsafe { names(dict, key, key_len) } {
        Ok(names) => names,
        Err(code) => return code,
    };
    dispatch(
        name,
        // SAFETY: the host's contract, on arguments checked above.
        |host| host.delete.map_or(RESTY_FFI_SHDICT_NO_DICT, |delete| unsafe { delete(dict, key, key_len) }),
        |shdict| match shdict.store(StoreOp::Set, false, key_bytes, None, 0, 0) {
            Ok(_) => 0,
            Err((e, _)) => error_code(e),
        },
    )
}
