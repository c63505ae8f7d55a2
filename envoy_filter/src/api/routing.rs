//! What `handle:clearRouteCache()` and `handle:setUpstreamOverrideHost()` call.

use std::ffi::{c_char, c_int};

use crate::api::{bytes, with_stream, StreamId};

/// Makes Envoy select the stream's route again.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn clear_route_cache(ctx: StreamId) -> c_int {
    with_stream(ctx, |_, envoy| {
        envoy.clear_route_cache();
        1
    })
}

/// Asks the load balancer for `host` (`strict` ≠ 0: 503 if it is not
/// available); 0 if `host` is not an address.
///
/// # Safety
/// `host` is readable for `len` bytes.
pub unsafe extern "C" fn set_upstream_override_host(
    ctx: StreamId,
    host: *const c_char,
    len: usize,
    strict: c_int,
) -> c_int {
    with_stream(ctx, |_, envoy| c_int::from(envoy.set_upstream_override_host(bytes(host, len), strict != 0)))
}
