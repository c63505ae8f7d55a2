//! What `body.lua` calls: the whole body of one direction. Inside a body
//! hook, the last chunk is still Envoy's "received" buffer; everything before
//! it is "buffered".

use std::ffi::{c_char, c_int};

use crate::abi::{BodyKind, Direction, EnvoyBuffer, EnvoyFilter, HeaderKind};
use crate::api::{bytes, with_stream, StreamCtx};

fn direction(raw: c_int) -> Direction {
    if raw == 0 {
        Direction::Request
    } else {
        Direction::Response
    }
}

/// The buffers that make up the body the script sees, in order.
fn parts(ctx: &StreamCtx, dir: Direction) -> &'static [BodyKind] {
    if ctx.body(dir).is_in_body_hook() {
        &[BodyKind::Buffered, BodyKind::Received]
    } else {
        &[BodyKind::Buffered]
    }
}

fn chunk_count(ctx: &StreamCtx, envoy: EnvoyFilter, dir: Direction) -> usize {
    parts(ctx, dir).iter().map(|&kind| envoy.body_chunk_count(dir, kind)).sum()
}

/// 0: there is no body (the headers ended the stream), 1: it is complete,
/// 2: more is to come.
///
/// # Safety
/// `ctx` is live (see [`with_stream`]).
pub unsafe extern "C" fn body_state(ctx: *const StreamCtx, dir: c_int) -> c_int {
    with_stream(ctx, |ctx, _| {
        let body = ctx.body(direction(dir));
        if body.is_headers_only() {
            0
        } else if body.is_complete() {
            1
        } else {
            2
        }
    })
}

/// How many chunks the body has; with `out`, writes them (at most `max`,
/// else none and 0).
///
/// # Safety
/// `ctx` is live (see [`with_stream`]); `out` is NULL or writable for `max` buffers.
pub unsafe extern "C" fn body_chunks(ctx: *const StreamCtx, dir: c_int, out: *mut EnvoyBuffer, max: usize) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        let dir = direction(dir);
        let count = chunk_count(ctx, envoy, dir);
        if out.is_null() {
            return c_int::try_from(count).unwrap_or(0);
        }
        if count > max {
            return 0;
        }
        // SAFETY: `out` is writable for `max >= count` buffers (contract).
        let mut out = unsafe { std::slice::from_raw_parts_mut(out, count) };
        for &kind in parts(ctx, dir) {
            let (these, rest) = out.split_at_mut(envoy.body_chunk_count(dir, kind));
            if !these.is_empty() && !envoy.fill_body_chunks(dir, kind, these) {
                return 0;
            }
            out = rest;
        }
        c_int::try_from(count).unwrap_or(0)
    })
}

/// Replaces the body with `data` (and its content-length).
///
/// # Safety
/// `ctx` is live (see [`with_stream`]); `data` is readable for `len` bytes.
pub unsafe extern "C" fn body_set(ctx: *const StreamCtx, dir: c_int, data: *const c_char, len: usize) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        let dir = direction(dir);
        let data = bytes(data, len);
        envoy.drain_body(dir, BodyKind::Buffered, usize::MAX);
        let target = if ctx.body(dir).is_in_body_hook() {
            envoy.drain_body(dir, BodyKind::Received, usize::MAX);
            BodyKind::Received
        } else {
            BodyKind::Buffered
        };
        envoy.append_body(dir, target, data);
        let headers = match dir {
            Direction::Request => HeaderKind::Request,
            Direction::Response => HeaderKind::Response,
        };
        envoy.set_header(headers, b"content-length", Some(data.len().to_string().as_bytes()));
        1
    })
}
