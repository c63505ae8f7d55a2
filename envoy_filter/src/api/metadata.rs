//! What `metadata.lua` calls: route and dynamic metadata.

use std::ffi::{c_char, c_int};

use crate::abi::{c_slice_mut, EnvoyBuffer, MetaValue, MetadataSource, NewMetaValue};
use crate::api::{bytes, with_stream, StreamId};

const NONE: c_int = 0;
const STRING: c_int = 1;
const NUMBER: c_int = 2;
const BOOL: c_int = 3;

/// Not a list (`metadata_list_len`).
const NOT_A_LIST: c_int = -3;

fn source(raw: c_int) -> MetadataSource {
    if raw == 0 {
        MetadataSource::Dynamic
    } else {
        MetadataSource::Route
    }
}

/// Writes a metadata value to `text`/`number`; returns its type.
///
/// # Safety
/// `text` and `number` are writable.
unsafe fn put(value: Option<MetaValue>, text: *mut EnvoyBuffer, number: *mut f64) -> c_int {
    // SAFETY (each write): the caller's contract.
    match value {
        Some(MetaValue::Str(value)) => {
            unsafe { *text = value };
            STRING
        }
        Some(MetaValue::Number(value)) => {
            unsafe { *number = value };
            NUMBER
        }
        Some(MetaValue::Bool(value)) => {
            unsafe { *number = f64::from(u8::from(value)) };
            BOOL
        }
        None => NONE,
    }
}

/// How many keys namespace `ns` has; with `out`, writes them (at most `max`,
/// else none and 0).
///
/// # Safety
/// `ns` is readable for `ns_len` bytes;
/// `out` is NULL or writable for `max` buffers.
pub unsafe extern "C" fn metadata_keys(
    ctx: StreamId,
    src: c_int,
    ns: *const c_char,
    ns_len: usize,
    out: *mut EnvoyBuffer,
    max: usize,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        let (src, ns) = (source(src), bytes(ns, ns_len));
        let count = envoy.metadata_key_count(src, ns);
        if out.is_null() {
            return c_int::try_from(count).unwrap_or(0);
        }
        if count > max {
            return 0;
        }
        // SAFETY: `out` is writable for `max >= count` buffers (contract).
        let out = unsafe { c_slice_mut(out, count) };
        if envoy.fill_metadata_keys(src, ns, out) {
            c_int::try_from(count).unwrap_or(0)
        } else {
            0
        }
    })
}

/// The type of value `key` in namespace `ns` (0 none, 1 string in `text`,
/// 2 number in `number`, 3 bool as 0/1 in `number`).
///
/// # Safety
/// `ns` and `key` are readable for their
/// lengths; `text` and `number` are writable.
pub unsafe extern "C" fn metadata_get(
    ctx: StreamId,
    src: c_int,
    ns: *const c_char,
    ns_len: usize,
    key: *const c_char,
    key_len: usize,
    text: *mut EnvoyBuffer,
    number: *mut f64,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        // SAFETY: `text` and `number` are writable (contract).
        unsafe { put(envoy.metadata(source(src), bytes(ns, ns_len), bytes(key, key_len)), text, number) }
    })
}

/// Sets dynamic metadata `key` in namespace `ns` to a value of type `kind`
/// (1 string from `text`, 2 number, 3 bool: `number` ≠ 0).
///
/// # Safety
/// `ns`, `key` and `text` are readable
/// for their lengths.
pub unsafe extern "C" fn metadata_set(
    ctx: StreamId,
    ns: *const c_char,
    ns_len: usize,
    key: *const c_char,
    key_len: usize,
    kind: c_int,
    text: *const c_char,
    text_len: usize,
    number: f64,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        let value = match kind {
            STRING => NewMetaValue::Str(bytes(text, text_len)),
            NUMBER => NewMetaValue::Number(number),
            BOOL => NewMetaValue::Bool(number != 0.0),
            _ => return 0,
        };
        envoy.set_dynamic_metadata(bytes(ns, ns_len), bytes(key, key_len), &value);
        1
    })
}

/// How many namespaces `src` has; with `out`, writes their names (at most
/// `max`, else none and 0).
///
/// # Safety
/// `out` is NULL or writable for `max` buffers.
pub unsafe extern "C" fn metadata_namespaces(ctx: StreamId, src: c_int, out: *mut EnvoyBuffer, max: usize) -> c_int {
    with_stream(ctx, |_, envoy| {
        let src = source(src);
        let count = envoy.metadata_namespace_count(src);
        if out.is_null() {
            return c_int::try_from(count).unwrap_or(0);
        }
        if count > max {
            return 0;
        }
        // SAFETY: `out` is writable for `max >= count` buffers (contract).
        let out = unsafe { c_slice_mut(out, count) };
        if envoy.fill_metadata_namespaces(src, out) {
            c_int::try_from(count).unwrap_or(0)
        } else {
            0
        }
    })
}

/// How many elements the list at `ns`/`key` has; -3 if it is not a list.
///
/// # Safety
/// `ns` and `key` are readable for their lengths.
pub unsafe extern "C" fn metadata_list_len(
    ctx: StreamId,
    src: c_int,
    ns: *const c_char,
    ns_len: usize,
    key: *const c_char,
    key_len: usize,
) -> c_int {
    with_stream(ctx, |_, envoy| match envoy.metadata_list_len(source(src), bytes(ns, ns_len), bytes(key, key_len)) {
        Some(len) => c_int::try_from(len).unwrap_or(c_int::MAX),
        None => NOT_A_LIST,
    })
}

/// The type of element `index` of the list at `ns`/`key` (as `metadata_get`).
///
/// # Safety
/// As [`metadata_get`].
pub unsafe extern "C" fn metadata_list_item(
    ctx: StreamId,
    src: c_int,
    ns: *const c_char,
    ns_len: usize,
    key: *const c_char,
    key_len: usize,
    index: usize,
    text: *mut EnvoyBuffer,
    number: *mut f64,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        let item = envoy.metadata_list_item(source(src), bytes(ns, ns_len), bytes(key, key_len), index);
        // SAFETY: `text` and `number` are writable (contract).
        unsafe { put(item, text, number) }
    })
}

/// Merges `serialized` (a google.protobuf.Struct in protobuf's wire format,
/// which `metadata.lua` encodes) into dynamic metadata namespace `ns`.
///
/// # Safety
/// `ns` and `serialized` are readable for their lengths.
pub unsafe extern "C" fn metadata_merge(
    ctx: StreamId,
    ns: *const c_char,
    ns_len: usize,
    serialized: *const c_char,
    len: usize,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        envoy.merge_dynamic_metadata(bytes(ns, ns_len), bytes(serialized, len));
        1
    })
}
