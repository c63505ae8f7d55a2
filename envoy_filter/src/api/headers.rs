//! What `headers.lua` calls: header maps (headers and trailers of both
//! directions). Values are handed out as Envoy's bytes, copied by Lua at once.

use std::ffi::{c_char, c_int};

use crate::abi::{c_slice_mut, Direction, EnvoyBuffer, EnvoyFilter, EnvoyHeader, HeaderKind};
use crate::api::{bytes, with_stream, StreamCtx, StreamId, CONTINUED};

/// A header as `resty_ffi_envoy_header` (Envoy's own layout).
pub type Header = EnvoyHeader;

/// `map` 4: the request headers as `requestHeaders()` gives them, which
/// stay modifiable after they went on (the stock filter's rule).
const REQUEST_HEADERS_ANYTIME: c_int = 4;

fn kind(raw: c_int) -> Option<HeaderKind> {
    match raw {
        0 | REQUEST_HEADERS_ANYTIME => Some(HeaderKind::Request),
        1 => Some(HeaderKind::RequestTrailers),
        2 => Some(HeaderKind::Response),
        3 => Some(HeaderKind::ResponseTrailers),
        _ => None,
    }
}

/// Whether the headers of `map` went on to the next filter (then they
/// cannot change; trailers can until they go on themselves).
fn passed(ctx: &StreamCtx, raw: c_int, map: HeaderKind) -> bool {
    match map {
        HeaderKind::Request => raw != REQUEST_HEADERS_ANYTIME && ctx.body(Direction::Request).are_headers_continued(),
        HeaderKind::Response => ctx.body(Direction::Response).are_headers_continued(),
        HeaderKind::RequestTrailers | HeaderKind::ResponseTrailers => false,
    }
}

/// 1 if the headers of direction `dir` (0 request, 1 response) went on.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn headers_continued(ctx: StreamId, dir: c_int) -> c_int {
    with_stream(ctx, |ctx, _| {
        let dir = if dir == 0 { Direction::Request } else { Direction::Response };
        c_int::from(ctx.body(dir).are_headers_continued())
    })
}

/// After a script changed a header map: with `clear_route_cache` (the stock
/// default), a change of the request headers re-selects the route.
fn changed(ctx: &StreamCtx, envoy: EnvoyFilter, map: HeaderKind) {
    if map == HeaderKind::Request && ctx.clear_route_cache {
        envoy.clear_route_cache();
    }
}

/// How many values header `key` has (0 when the map is missing); writes the
/// value at `index` to `out` (if `out` is not NULL and the value exists).
///
/// # Safety
/// `key` is readable for `key_len`
/// bytes; `out` is NULL or writable.
pub unsafe extern "C" fn header_get(
    ctx: StreamId,
    map: c_int,
    key: *const c_char,
    key_len: usize,
    index: usize,
    out: *mut EnvoyBuffer,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        let Some(map) = kind(map) else { return 0 };
        let (count, value) = envoy.header(map, bytes(key, key_len), index);
        if let (Some(value), false) = (value, out.is_null()) {
            // SAFETY: `out` is writable (contract).
            unsafe { *out = value };
        }
        c_int::try_from(count).unwrap_or(c_int::MAX)
    })
}

/// How many headers the map holds.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn headers_count(ctx: StreamId, map: c_int) -> c_int {
    with_stream(ctx, |_, envoy| {
        kind(map).map_or(0, |map| c_int::try_from(envoy.header_count(map)).unwrap_or(0))
    })
}

/// Writes every header (at most `max`) to `out`; returns how many, 0 when
/// `out` has no room for all of them.
///
/// # Safety
/// `out` is writable for `max` headers.
pub unsafe extern "C" fn headers_all(ctx: StreamId, map: c_int, out: *mut Header, max: usize) -> c_int {
    with_stream(ctx, |_, envoy| {
        let Some(map) = kind(map) else { return 0 };
        let count = envoy.header_count(map);
        if out.is_null() || count > max {
            return 0;
        }
        // SAFETY: `out` is writable for `max >= count` headers (contract).
        let out = unsafe { c_slice_mut(out, count) };
        if envoy.fill_headers(map, out) {
            c_int::try_from(count).unwrap_or(0)
        } else {
            0
        }
    })
}

/// Adds a value to header `key`.
///
/// # Safety
/// `key` and `value` are readable for
/// their lengths.
pub unsafe extern "C" fn header_add(
    ctx: StreamId,
    raw: c_int,
    key: *const c_char,
    key_len: usize,
    value: *const c_char,
    value_len: usize,
) -> c_int {
    with_stream(ctx, |ctx, envoy| match kind(raw) {
        Some(map) if passed(ctx, raw, map) => CONTINUED,
        Some(map) => {
            let added = envoy.add_header(map, bytes(key, key_len), bytes(value, value_len));
            changed(ctx, envoy, map);
            c_int::from(added)
        }
        None => 0,
    })
}

/// Replaces every value of header `key` with `value`; a NULL `value` removes it.
///
/// # Safety
/// As [`header_add`]; `value` may be NULL.
pub unsafe extern "C" fn header_set(
    ctx: StreamId,
    raw: c_int,
    key: *const c_char,
    key_len: usize,
    value: *const c_char,
    value_len: usize,
) -> c_int {
    with_stream(ctx, |ctx, envoy| match kind(raw) {
        Some(map) if passed(ctx, raw, map) => CONTINUED,
        Some(map) => {
            let value = (!value.is_null()).then(|| bytes(value, value_len));
            let set = envoy.set_header(map, bytes(key, key_len), value);
            changed(ctx, envoy, map);
            c_int::from(set)
        }
        None => 0,
    })
}
