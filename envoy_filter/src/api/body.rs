//! What `body.lua` calls: the whole body of one direction, or the chunk of
//! the current body hook (`bodyChunks()`). Inside a body hook, that chunk is
//! still Envoy's "received" buffer; everything before it is "buffered".

use std::ffi::{c_char, c_int};

use crate::abi::{c_slice_mut, BodyKind, Direction, EnvoyBuffer, EnvoyFilter, HeaderKind};
use crate::api::{bytes, with_stream, StreamCtx, StreamId};

fn direction(raw: c_int) -> Direction {
    if raw == 0 {
        Direction::Request
    } else {
        Direction::Response
    }
}

/// `part` 0: the whole body; 1: the current body hook's chunk.
const WHOLE: c_int = 0;

/// The buffers that make up the body (or chunk) the script sees, in order.
fn parts(ctx: &StreamCtx, dir: Direction, part: c_int) -> &'static [BodyKind] {
    match (ctx.body(dir).is_in_body_hook(), part == WHOLE) {
        (true, true) => &[BodyKind::Buffered, BodyKind::Received],
        (true, false) => &[BodyKind::Received],
        (false, true) => &[BodyKind::Buffered],
        (false, false) => &[],
    }
}

fn chunk_count(ctx: &StreamCtx, envoy: EnvoyFilter, dir: Direction, part: c_int) -> usize {
    parts(ctx, dir, part).iter().map(|&kind| envoy.body_chunk_count(dir, kind)).sum()
}

/// 0: there is no body (the headers ended the stream), 1: it is complete,
/// 2: more is to come; plus [`DATA_SEEN`] once body data went by the script
/// (not while it waited for a runtime's answers).
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn body_state(ctx: StreamId, dir: c_int) -> c_int {
    with_stream(ctx, |ctx, _| {
        let body = ctx.body(direction(dir));
        let state = if body.is_headers_only() {
            0
        } else if body.is_complete() {
            1
        } else {
            2
        };
        if body.is_data_seen() {
            state | DATA_SEEN
        } else {
            state
        }
    })
}

/// The flag of [`body_state`] for body data that went by the script.
const DATA_SEEN: c_int = 4;

/// For `bodyChunks()`: 1 hands out the current body hook's chunk (once),
/// 0: the body ended (or there is none), 2: wait for the next chunk.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn next_chunk(ctx: StreamId, dir: c_int) -> c_int {
    with_stream(ctx, |ctx, _| {
        let body = ctx.body(direction(dir));
        if body.take_chunk() {
            1
        } else if body.is_complete() {
            0
        } else {
            2
        }
    })
}

/// For `trailers()`: 1 the trailers arrived, 0 the stream ended without
/// them, 2 wait.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn trailers_state(ctx: StreamId, dir: c_int) -> c_int {
    with_stream(ctx, |ctx, _| {
        let body = ctx.body(direction(dir));
        if body.has_trailers() {
            1
        } else if body.is_complete() {
            0
        } else {
            2
        }
    })
}

/// How many buffers the body (`part` 0) or the current chunk (`part` 1) is
/// made of; with `out`, writes them (at most `max`, else none and 0).
///
/// # Safety
/// `out` is NULL or writable for `max` buffers.
pub unsafe extern "C" fn body_chunks(
    ctx: StreamId,
    dir: c_int,
    part: c_int,
    out: *mut EnvoyBuffer,
    max: usize,
) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        let dir = direction(dir);
        let count = chunk_count(ctx, envoy, dir, part);
        if out.is_null() {
            return c_int::try_from(count).unwrap_or(0);
        }
        if count > max {
            return 0;
        }
        // SAFETY: `out` is writable for `max >= count` buffers (contract).
        let mut out = unsafe { c_slice_mut(out, count) };
        for &kind in parts(ctx, dir, part) {
            let (these, rest) = out.split_at_mut(envoy.body_chunk_count(dir, kind));
            if !these.is_empty() && !envoy.fill_body_chunks(dir, kind, these) {
                return 0;
            }
            out = rest;
        }
        c_int::try_from(count).unwrap_or(0)
    })
}

/// Replaces the body (`part` 0, and its content-length) or the current
/// chunk (`part` 1) with `data`.
///
/// # Safety
/// `data` is readable for `len` bytes.
pub unsafe extern "C" fn body_set(ctx: StreamId, dir: c_int, part: c_int, data: *const c_char, len: usize) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        let dir = direction(dir);
        let data = bytes(data, len);
        let in_hook = ctx.body(dir).is_in_body_hook();
        if part != WHOLE && !in_hook {
            return 0; // a chunk whose hook has returned: it went on already
        }
        for &kind in parts(ctx, dir, part) {
            envoy.drain_body(dir, kind, usize::MAX);
        }
        envoy.append_body(dir, if in_hook { BodyKind::Received } else { BodyKind::Buffered }, data);
        if part != WHOLE {
            return 1;
        }
        let headers = match dir {
            Direction::Request => HeaderKind::Request,
            Direction::Response => HeaderKind::Response,
        };
        envoy.set_header(headers, b"content-length", Some(data.len().to_string().as_bytes()));
        1
    })
}
