//! What `stream_info.lua` calls: the stream's attributes, its downstream TLS
//! connection and its filter state.

use std::ffi::{c_char, c_int};

use crate::abi::{Attribute, EnvoyBuffer};
use crate::api::{bytes, with_stream, StreamId};

/// The attributes of `attribute`, by the ids `stream_info.lua` uses.
const ATTRIBUTES: [Option<Attribute>; 15] = [
    Some(Attribute::Protocol),
    Some(Attribute::SourceAddress),
    Some(Attribute::DestinationAddress),
    None, // 3: the direct remote address has its own callback
    Some(Attribute::RouteName),
    Some(Attribute::VirtualClusterName),
    Some(Attribute::RequestedServerName),
    Some(Attribute::TlsVersion),
    Some(Attribute::SubjectPeerCertificate),
    Some(Attribute::SubjectLocalCertificate),
    Some(Attribute::DnsSanPeerCertificate),
    Some(Attribute::DnsSanLocalCertificate),
    Some(Attribute::UriSanPeerCertificate),
    Some(Attribute::UriSanLocalCertificate),
    Some(Attribute::Sha256PeerCertificateDigest),
];

/// Writes attribute `id` to `out` (see `ATTRIBUTES`; 3 is the direct
/// remote address); 1 if it exists, else 0.
///
/// # Safety
/// `out` is writable.
pub unsafe extern "C" fn attribute(ctx: StreamId, id: c_int, out: *mut EnvoyBuffer) -> c_int {
    with_stream(ctx, |_, envoy| {
        let value = match usize::try_from(id).ok().and_then(|i| ATTRIBUTES.get(i)) {
            Some(Some(attribute)) => envoy.attribute(*attribute),
            Some(None) => envoy.direct_remote_address(),
            None => None,
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

/// 1 if the downstream peer presented a TLS certificate, 0 if not, -3 if the
/// connection is not TLS.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn peer_certificate_presented(ctx: StreamId) -> c_int {
    with_stream(ctx, |_, envoy| match envoy.peer_certificate_presented() {
        Some(presented) => c_int::from(presented),
        None => -3,
    })
}

/// Writes filter state object `key`, serialized, to `out`; 1 if it exists.
///
/// # Safety
/// `key` is readable for `len` bytes;
/// `out` is writable.
pub unsafe extern "C" fn filter_state_get(ctx: StreamId, key: *const c_char, len: usize, out: *mut EnvoyBuffer) -> c_int {
    with_stream(ctx, |_, envoy| match envoy.filter_state(bytes(key, len)) {
        Some(value) if !out.is_null() => {
            // SAFETY: `out` is writable (contract).
            unsafe { *out = value };
            1
        }
        _ => 0,
    })
}

/// Stores `value` as filter state `key`: a string object, or (`typed` 1)
/// what the factory registered for `key` makes of it; 0 if Envoy refused.
///
/// # Safety
/// `key` and `value` are readable for
/// their lengths.
pub unsafe extern "C" fn filter_state_set(
    ctx: StreamId,
    typed: c_int,
    key: *const c_char,
    key_len: usize,
    value: *const c_char,
    value_len: usize,
) -> c_int {
    with_stream(ctx, |_, envoy| {
        c_int::from(envoy.set_filter_state(bytes(key, key_len), bytes(value, value_len), typed != 0))
    })
}
