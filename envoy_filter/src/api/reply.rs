//! A local reply as `handle.lua` builds it (`{status, headers = {name,
//! value, name, value, …}, body}`), staged by `respond()` through the FFI or
//! read back from the table once envoy_on_response may have changed it.

use std::ffi::{c_char, c_int};

use mlua::{LuaString, Table};

use crate::abi::c_slice;
use crate::api::headers::Header;
use crate::api::{bytes, with_stream, StreamId};

/// A local reply. Its bytes live in one buffer: two allocations in all (the
/// buffer and the header ends), not one per header name, value and body.
pub struct LocalReply {
    pub status: u32,
    /// The header names and values in order, then the body, back to back.
    bytes: Vec<u8>,
    /// Where each header's name and its value end in `bytes`.
    header_ends: Vec<(usize, usize)>,
}

impl LocalReply {
    pub fn new<'a>(status: u32, headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone, body: &[u8]) -> LocalReply {
        let size = headers.clone().map(|(name, value)| name.len() + value.len()).sum::<usize>() + body.len();
        let mut bytes = Vec::with_capacity(size);
        let header_ends = headers
            .map(|(name, value)| {
                bytes.extend_from_slice(name);
                let name_end = bytes.len();
                bytes.extend_from_slice(value);
                (name_end, bytes.len())
            })
            .collect();
        bytes.extend_from_slice(body);
        LocalReply { status, bytes, header_ends }
    }

    /// A reply with no headers of its own.
    pub fn plain(status: u32, body: &[u8]) -> LocalReply {
        LocalReply::new(status, std::iter::empty(), body)
    }

    pub fn from_lua(reply: &Table) -> mlua::Result<LocalReply> {
        let list: Table = reply.get("headers")?;
        let mut strings = Vec::with_capacity(list.raw_len());
        for name_at in (1..list.raw_len()).step_by(2) {
            strings.push(list.raw_get::<LuaString>(name_at)?);
            strings.push(list.raw_get::<LuaString>(name_at + 1)?);
        }
        let bytes: Vec<_> = strings.iter().map(LuaString::as_bytes).collect();
        let headers = bytes.chunks_exact(2).map(|pair| (&pair[0][..], &pair[1][..]));
        Ok(LocalReply::new(reply.get("status")?, headers, &reply.get::<LuaString>("body")?.as_bytes()))
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.header_ends.iter().map(move |&(name_end, value_end)| {
            let header = (&self.bytes[start..name_end], &self.bytes[name_end..value_end]);
            start = value_end;
            header
        })
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[self.header_ends.last().map_or(0, |&(_, value_end)| value_end)..]
    }
}

/// `respond()` hands its reply over before it yields: the stream sends it
/// from here, unless envoy_on_response runs over the reply table first (then
/// nothing is copied here).
/// (Reading the table back through mlua cost ~9,000 instructions a request.)
///
/// # Safety
/// `headers` is readable for `count` headers whose pointers are readable for
/// their lengths; `body` is readable for `body_len` bytes.
pub unsafe extern "C" fn stage(
    ctx: StreamId,
    status: c_int,
    headers: *const Header,
    count: usize,
    body: *const c_char,
    body_len: usize,
) -> c_int {
    with_stream(ctx, |ctx, _| {
        if !ctx.stages_replies() {
            return 1;
        }
        // SAFETY: the caller's contract.
        let headers = unsafe { c_slice(headers, count) }
            .iter()
            // SAFETY: the caller's contract (Lua's strings, alive during the call).
            .map(|h| unsafe { (bytes(h.key_ptr, h.key_length), bytes(h.value_ptr, h.value_length)) });
        let status = u32::try_from(status).unwrap_or(0);
        // SAFETY: the caller's contract.
        ctx.stage_reply(LocalReply::new(status, headers, unsafe { bytes(body, body_len) }));
        1
    })
}
