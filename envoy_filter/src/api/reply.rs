//! A local reply as `handle.lua` builds it (`{status, headers = {name,
//! value, name, value, …}, body}`), staged by `respond()` through the FFI or
//! read back from the table once envoy_on_response may have changed it.

use std::ffi::{c_char, c_int};

use mlua::{LuaString, Table};

use crate::abi::c_slice;
use crate::api::headers::Header;
use crate::api::{bytes, with_stream, StreamId};

/// Header names and values, in order.
pub type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

pub struct LocalReply {
    pub status: u32,
    pub headers: HeaderList,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// A reply with no headers of its own.
    pub fn plain(status: u32, body: &[u8]) -> LocalReply {
        LocalReply { status, headers: Vec::new(), body: body.to_vec() }
    }

    pub fn from_lua(reply: &Table) -> mlua::Result<LocalReply> {
        let list: Table = reply.get("headers")?;
        let mut headers = Vec::with_capacity(list.raw_len() / 2);
        for name_at in (1..list.raw_len()).step_by(2) {
            let (name, value): (LuaString, LuaString) = (list.raw_get(name_at)?, list.raw_get(name_at + 1)?);
            headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        Ok(LocalReply {
            status: reply.get("status")?,
            headers,
            body: reply.get::<LuaString>("body")?.as_bytes().to_vec(),
        })
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
            .map(|h| unsafe { (bytes(h.key_ptr, h.key_length).to_vec(), bytes(h.value_ptr, h.value_length).to_vec()) })
            .collect();
        let status = u32::try_from(status).unwrap_or(0);
        // SAFETY: the caller's contract.
        let body = unsafe { bytes(body, body_len) }.to_vec();
        ctx.stage_reply(LocalReply { status, headers, body });
        1
    })
}
