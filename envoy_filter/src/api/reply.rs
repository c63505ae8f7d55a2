//! A local reply as `handle.lua` builds it (`{status, headers = {name,
//! value, name, value, …}, body}`), read back for sending.

use mlua::{LuaString, Table};

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
