//! What `stream_info.lua` calls: the stream's attributes.

use std::ffi::c_int;

use crate::abi::{Attribute, EnvoyBuffer};
use crate::api::{with_stream, StreamCtx};

/// Writes attribute `id` to `out` (0 protocol, 1 source address,
/// 2 destination address, 3 direct remote address); 1 if it exists, else 0.
///
/// # Safety
/// `ctx` is live (see [`with_stream`]); `out` is writable.
pub unsafe extern "C" fn attribute(ctx: *const StreamCtx, id: c_int, out: *mut EnvoyBuffer) -> c_int {
    with_stream(ctx, |_, envoy| {
        let value = match id {
            0 => envoy.attribute(Attribute::Protocol),
            1 => envoy.attribute(Attribute::SourceAddress),
            2 => envoy.attribute(Attribute::DestinationAddress),
            3 => envoy.direct_remote_address(),
            _ => None,
        };
        match value {
            Some(value) if !out.is_null() => {
                // SAFETY: `out` is writable (contract).
                unsafe { *out = value };
                1
            }
            _ => 0,
        }
    })
}
