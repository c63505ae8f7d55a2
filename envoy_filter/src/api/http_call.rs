//! What `handle:httpCall()` calls: starts Envoy's HTTP callout. Its answer
//! comes to the stream (stream.rs), which resumes the waiting coroutine.

use std::ffi::{c_char, c_int};

use mlua::{Lua, Table, Value};

use crate::abi::{c_slice_mut, copy_envoy_buffer, CalloutStart, Direction, EnvoyBuffer, EnvoyHeader, ModuleHeader};
use crate::api::headers::Header;
use crate::api::{bytes, with_stream, Callout, StreamId};

/// Started; the caller waits (synchronous) or goes on (asynchronous).
const STARTED: c_int = 0;
const MISSING_HEADERS: c_int = 1;
const CLUSTER_NOT_FOUND: c_int = 2;
/// Envoy could not send it: the call failed at once.
const FAILED: c_int = 4;

/// Starts a request to `cluster`; `dir` 0/1 is the direction whose coroutine
/// waits for the answer, -1 an asynchronous call nobody waits for;
/// `duplicates` ≠ 0 returns repeated response headers as lists;
/// `timeout_ms` 0 is no timeout.
///
/// # Safety
/// `headers` is readable for `count`
/// headers whose pointers are readable for their lengths; the other pointers
/// are readable for the lengths that follow them.
pub unsafe extern "C" fn http_call(
    ctx: StreamId,
    dir: c_int,
    duplicates: c_int,
    cluster: *const c_char,
    cluster_len: usize,
    headers: *mut Header,
    count: usize,
    body: *const c_char,
    body_len: usize,
    timeout_ms: f64,
) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        // SAFETY: the caller's contract; Lua's header array has the layout
        // of Envoy's module headers ({key, key length, value, value length}).
        let headers = unsafe { c_slice_mut(headers as *mut ModuleHeader, count) };
        let timeout = if timeout_ms.is_finite() && timeout_ms > 0.0 { timeout_ms as u64 } else { 0 };
        match envoy.http_callout(bytes(cluster, cluster_len), headers, bytes(body, body_len), timeout) {
            CalloutStart::Started(id) => {
                let waiter = match dir {
                    0 => Some(Direction::Request),
                    1 => Some(Direction::Response),
                    _ => None,
                };
                if let Some(dir) = waiter {
                    ctx.await_callout(dir, Callout { id, duplicate_headers: duplicates != 0 });
                }
                STARTED
            }
            CalloutStart::MissingHeaders => MISSING_HEADERS,
            CalloutStart::ClusterNotFound => CLUSTER_NOT_FOUND,
            CalloutStart::Failed => FAILED,
        }
    })
}

/// The Lua values `httpCall()` returns: the response headers (a table; with
/// `duplicate_headers`, repeated ones as lists, else the last value wins) and
/// the body (nil when empty). A reset or an oversized answer reads as the
/// stock filter's "503, upstream failure".
pub fn answer(
    lua: &Lua,
    callout: Callout,
    succeeded: bool,
    headers: &[EnvoyHeader],
    body: &[EnvoyBuffer],
) -> mlua::Result<(Table, Value)> {
    let table = lua.create_table()?;
    if !succeeded {
        table.set(":status", "503")?;
        return Ok((table, Value::String(lua.create_string("upstream failure")?)));
    }
    for header in headers {
        let key = lua.create_string(copy_envoy_buffer(&EnvoyBuffer { ptr: header.key_ptr, length: header.key_length }))?;
        let value =
            lua.create_string(copy_envoy_buffer(&EnvoyBuffer { ptr: header.value_ptr, length: header.value_length }))?;
        match table.raw_get::<Value>(&key)? {
            Value::String(first) if callout.duplicate_headers => {
                table.raw_set(key, lua.create_sequence_from([first, value])?)?;
            }
            Value::Table(values) if callout.duplicate_headers => values.raw_push(value)?,
            _ => table.raw_set(key, value)?,
        }
    }
    let bytes: Vec<u8> = body.iter().flat_map(copy_envoy_buffer).collect();
    let body = if bytes.is_empty() { Value::Nil } else { Value::String(lua.create_string(bytes)?) };
    Ok((table, body))
}
