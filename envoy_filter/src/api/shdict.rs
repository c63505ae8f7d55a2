//! `ngx.shared.NAME` on Envoy: what `shdict.lua` calls. The dicts are the
//! core's (`resty_ffi::shdict`), process-wide: every worker thread, every
//! filter config that declares them (`shared_dicts`) and every runtime
//! (`resty_ffi_shdict_*`) sees the same ones.
//!
//! Like the rest of this layer, the functions never raise: they return a
//! status (and an error's message in `*err`), and `shdict.lua` turns it into
//! lua-resty-core's return values. A string handed out (`get`, `lpop`,
//! `get_keys`) lives in a per-thread scratch buffer until the next call.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use mlua::{LightUserData, Lua, Table};
use resty_ffi::shdict::{Error, Item, SharedDict, StoreOp, Value};

use crate::api::{bytes, Buf, CType, PANICKED};

impl CType for *const SharedDict {
    const C: &'static str = "void *";
}

/// Value types, as Lua numbers them (and lua-nginx-module's FFI does).
const NIL: c_int = 0;
const BOOLEAN: c_int = 1;
const NUMBER: c_int = 3;
const STRING: c_int = 4;

/// The operation failed; its message is in `*err`.
const FAILED: c_int = -10;

/// `store`'s op bits: lua-resty-core's.
const ADD: c_int = 0x1;
const REPLACE: c_int = 0x2;
const SAFE: c_int = 0x4;

thread_local! {
    /// Where strings handed to Lua are copied (read at once by Lua).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Copies `bytes` to this thread's scratch buffer and points `out` at it.
fn hand_out(bytes: &[u8], out: *mut Buf) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        scratch.extend_from_slice(bytes);
        write(out, Buf { ptr: scratch.as_ptr() as *const c_char, length: scratch.len() });
    });
}

fn write<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: Lua passes NULL or a pointer to its own scratch cdata.
        unsafe { *out = value };
    }
}

fn fail(e: Error, err: *mut Buf) -> c_int {
    let message = e.message();
    write(err, Buf { ptr: message.as_ptr() as *const c_char, length: message.len() });
    FAILED
}

/// Runs `f` on the dict behind `dict`; `PANICKED` if it panics.
///
/// # Safety
/// `dict` came from [`install`] and Lua has not released it.
unsafe fn with_dict(dict: *const SharedDict, f: impl FnOnce(&SharedDict) -> c_int) -> c_int {
    // SAFETY: the caller's contract: Lua holds the `Arc` that `install` leaked.
    let dict = unsafe { &*dict };
    // AssertUnwindSafe: a dict's store stays consistent across a panic (see
    // `SharedDict::lock`), and nothing else is touched.
    catch_unwind(AssertUnwindSafe(|| f(dict))).unwrap_or(PANICKED)
}

/// Seconds × 1000 from Lua as whole milliseconds, as lua-resty-core passes
/// them to a `long` (truncated).
fn millis(ms: f64) -> i64 {
    ms as i64
}

/// Lua's reference to a dict is collected.
///
/// # Safety
/// `dict` came from [`install`] and is released once.
pub unsafe extern "C" fn release(dict: *const SharedDict) -> c_int {
    // SAFETY: the caller's contract; this drops the `Arc` that `install` leaked.
    drop(unsafe { Arc::from_raw(dict) });
    0
}

/// `get` / `get_stale`: the value's type (`NIL` when absent); a string in
/// `*out`, a number or boolean in `*num`; `meta[0]` the user flags,
/// `meta[1]` whether it expired. `FAILED` for a list.
///
/// # Safety
/// `dict` is live (see [`with_dict`]); `key` is readable for `key_len`
/// bytes; the out-pointers are NULL or writable.
pub unsafe extern "C" fn get(
    dict: *const SharedDict,
    key: *const c_char,
    key_len: usize,
    stale: c_int,
    out: *mut Buf,
    num: *mut f64,
    meta: *mut c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| {
            let found = dict.get(key, stale != 0, |found| {
                let Some((value, flags, expired)) = found else { return NIL };
                write(meta, flags as c_int);
                // SAFETY: `meta` is NULL or has room for two ints (contract).
                write(if meta.is_null() { meta } else { meta.add(1) }, c_int::from(expired));
                put_value(value, out, num)
            });
            found.unwrap_or_else(|e| fail(e, out))
        })
    }
}

fn put_value(value: Value<'_>, out: *mut Buf, num: *mut f64) -> c_int {
    match value {
        Value::Str(s) => {
            hand_out(s, out);
            STRING
        }
        Value::Num(n) => {
            write(num, n);
            NUMBER
        }
        Value::Bool(b) => {
            write(num, f64::from(u8::from(b)));
            BOOLEAN
        }
    }
}

/// The value Lua passes as (type, string, number); None for nil.
fn value_in<'a>(kind: c_int, s: &'a [u8], num: f64) -> Option<Value<'a>> {
    match kind {
        STRING => Some(Value::Str(s)),
        NUMBER => Some(Value::Num(num)),
        BOOLEAN => Some(Value::Bool(num != 0.0)),
        _ => None,
    }
}

/// `set`, `safe_set`, `add`, `safe_add`, `replace` (`op`: lua-resty-core's
/// bits) of a value of type `kind` (a string in `s`, a number or boolean
/// in `num`; `NIL` deletes). 0, or `FAILED`; `*forcible` either way.
///
/// # Safety
/// `dict` is live; `key` and `s` are readable for their lengths; the
/// out-pointers are NULL or writable.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn store(
    dict: *const SharedDict,
    op: c_int,
    key: *const c_char,
    key_len: usize,
    kind: c_int,
    s: *const c_char,
    s_len: usize,
    num: f64,
    exptime_ms: f64,
    flags: c_int,
    forcible: *mut c_int,
    err: *mut Buf,
) -> c_int {
    // SAFETY: the caller's contract.
    let (key, s) = unsafe { (bytes(key, key_len), bytes(s, s_len)) };
    let store_op = match op & (ADD | REPLACE) {
        ADD => StoreOp::Add,
        REPLACE => StoreOp::Replace,
        _ => StoreOp::Set,
    };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| {
            let stored =
                dict.store(store_op, op & SAFE != 0, key, value_in(kind, s, num), millis(exptime_ms), flags as u32);
            match stored {
                Ok(evicted) => {
                    write(forcible, c_int::from(evicted));
                    0
                }
                Err((e, evicted)) => {
                    write(forcible, c_int::from(evicted));
                    fail(e, err)
                }
            }
        })
    }
}

/// `incr`: `*value` is `by` in, the new value out; `has_init` says whether
/// `init` (and `init_ttl_ms`) apply. 0, or `FAILED`.
///
/// # Safety
/// `dict` is live; `key` is readable for `key_len` bytes; `value` is
/// writable; the other out-pointers are NULL or writable.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn incr(
    dict: *const SharedDict,
    key: *const c_char,
    key_len: usize,
    value: *mut f64,
    has_init: c_int,
    init: f64,
    init_ttl_ms: f64,
    forcible: *mut c_int,
    err: *mut Buf,
) -> c_int {
    // SAFETY: the caller's contract.
    let (key, by) = unsafe { (bytes(key, key_len), *value) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| match dict.incr(key, by, (has_init != 0).then_some(init), millis(init_ttl_ms)) {
            Ok((new, evicted)) => {
                write(value, new);
                write(forcible, c_int::from(evicted));
                0
            }
            Err(e) => fail(e, err),
        })
    }
}

/// `ttl`: 0 with the milliseconds left in `*ms` (0: none), 1 if absent.
///
/// # Safety
/// `dict` is live; `key` is readable for `key_len` bytes; `ms` is NULL or writable.
pub unsafe extern "C" fn ttl(dict: *const SharedDict, key: *const c_char, key_len: usize, ms: *mut f64) -> c_int {
    // SAFETY: the caller's contract.
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| match dict.ttl(key) {
            Some(left) => {
                write(ms, left as f64);
                0
            }
            None => 1,
        })
    }
}

/// `expire`: 0, or 1 if absent.
///
/// # Safety
/// `dict` is live; `key` is readable for `key_len` bytes.
pub unsafe extern "C" fn expire(dict: *const SharedDict, key: *const c_char, key_len: usize, exptime_ms: f64) -> c_int {
    // SAFETY: the caller's contract.
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the caller's contract.
    unsafe { with_dict(dict, |dict| c_int::from(!dict.expire(key, millis(exptime_ms)))) }
}

/// `flush_all`.
///
/// # Safety
/// `dict` is live.
pub unsafe extern "C" fn flush_all(dict: *const SharedDict) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| {
            dict.flush_all();
            0
        })
    }
}

/// `flush_expired(max)`: how many went (0: no limit).
///
/// # Safety
/// `dict` is live.
pub unsafe extern "C" fn flush_expired(dict: *const SharedDict, max: c_int) -> c_int {
    let max = usize::try_from(max).unwrap_or(0);
    // SAFETY: the caller's contract.
    unsafe { with_dict(dict, |dict| c_int::try_from(dict.flush_expired(max)).unwrap_or(c_int::MAX)) }
}

/// `get_keys(max)`: how many keys; `*out` holds them, each as a 2-byte
/// little-endian length and its bytes.
///
/// # Safety
/// `dict` is live; `out` is NULL or writable.
pub unsafe extern "C" fn get_keys(dict: *const SharedDict, max: c_int, out: *mut Buf) -> c_int {
    let max = usize::try_from(max).unwrap_or(0);
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| {
            let mut packed = Vec::new();
            let n = dict.keys(max, |key| {
                // Keys are at most 65535 bytes (MAX_KEY_LEN).
                packed.extend_from_slice(&(key.len() as u16).to_le_bytes());
                packed.extend_from_slice(key);
            });
            hand_out(&packed, out);
            c_int::try_from(n).unwrap_or(c_int::MAX)
        })
    }
}

/// `lpush` (`front`) / `rpush` of a string or number: the list's length,
/// or `FAILED`.
///
/// # Safety
/// `dict` is live; `key` and `s` are readable for their lengths; `err` is
/// NULL or writable.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn push(
    dict: *const SharedDict,
    front: c_int,
    key: *const c_char,
    key_len: usize,
    kind: c_int,
    s: *const c_char,
    s_len: usize,
    num: f64,
    err: *mut Buf,
) -> c_int {
    // SAFETY: the caller's contract.
    let (key, s) = unsafe { (bytes(key, key_len), bytes(s, s_len)) };
    let item = if kind == STRING { Value::Str(s) } else { Value::Num(num) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| match dict.push(key, item, front != 0) {
            Ok(len) => c_int::try_from(len).unwrap_or(c_int::MAX),
            Err(e) => fail(e, err),
        })
    }
}

/// `lpop` (`front`) / `rpop`: the item's type (`NIL` when none), a string
/// in `*out`, a number in `*num`; `FAILED` (message in `*out`).
///
/// # Safety
/// `dict` is live; `key` is readable for `key_len` bytes; the out-pointers
/// are NULL or writable.
pub unsafe extern "C" fn pop(
    dict: *const SharedDict,
    front: c_int,
    key: *const c_char,
    key_len: usize,
    out: *mut Buf,
    num: *mut f64,
) -> c_int {
    // SAFETY: the caller's contract.
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| match dict.pop(key, front != 0) {
            Ok(None) => NIL,
            Ok(Some(Item::Str(s))) => put_value(Value::Str(&s), out, num),
            Ok(Some(Item::Num(n))) => put_value(Value::Num(n), out, num),
            Err(e) => fail(e, out),
        })
    }
}

/// `llen`, or `FAILED` (message in `*err`).
///
/// # Safety
/// `dict` is live; `key` is readable for `key_len` bytes; `err` is NULL or writable.
pub unsafe extern "C" fn llen(dict: *const SharedDict, key: *const c_char, key_len: usize, err: *mut Buf) -> c_int {
    // SAFETY: the caller's contract.
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the caller's contract.
    unsafe {
        with_dict(dict, |dict| match dict.llen(key) {
            Ok(len) => c_int::try_from(len).unwrap_or(c_int::MAX),
            Err(e) => fail(e, err),
        })
    }
}

/// `capacity`, in bytes.
///
/// # Safety
/// `dict` is live.
pub unsafe extern "C" fn capacity(dict: *const SharedDict) -> usize {
    // SAFETY: the caller's contract.
    unsafe { &*dict }.capacity()
}

/// `free_space`, in bytes.
///
/// # Safety
/// `dict` is live.
pub unsafe extern "C" fn free_space(dict: *const SharedDict) -> usize {
    // SAFETY: the caller's contract.
    unsafe { &*dict }.free_space()
}

/// Makes `dicts` the script's `ngx.shared` (creating the global `ngx` if
/// absent); nothing when there are none, so that scripts without
/// `shared_dicts` see the globals of the stock filter.
pub fn install(lua: &Lua, dicts: &[Arc<SharedDict>]) -> mlua::Result<()> {
    if dicts.is_empty() {
        return Ok(());
    }
    let handles: Table = lua.create_table()?;
    for dict in dicts {
        // Released by the ffi.gc finalizer shdict.lua puts on it.
        let ptr = Arc::into_raw(Arc::clone(dict)) as *mut c_void;
        handles.set(dict.name(), LightUserData(ptr))?;
    }
    lua.load(include_str!("shdict.lua")).set_name("=resty_ffi.envoy.shdict").call(handles)
}
