//! What `handle:clearRouteCache()` and `handle:setUpstreamOverrideHost()` call.

use std::ffi::{c_char, c_int};

use crate::api::{bytes, with_stream, StreamCtx};

/// Makes Envoy select the stream's route again.
///
/// # Safety
/// `ctx` is live (see [`with_stream`]).
pub unsafe extern "C" fn clear_route_cache(ctx: *const StreamCtx) -> c_int {
    with_stream(ctx, |_, envoy| {
        envoy.clear_route_cache();
        1
    })
}

/// Asks the load balancer for `host` (`strict` ≠ 0: 503 if it is not
/// available); 0 if `host` is not an address.
///
/// # Safety
/// `ctx` is live (see [`with_stream`]); `host` is readable for `len` bytes.
pub unsafe extern "C" fn set_upstream_override_host(
    ctx: *const StreamCtx,
    host: *const c_char,
    len: usize,
    strict: c_int,
) -> c_int {
    with_stream(ctx, |_, envoy| c_int::from(envoy.set_upstream_override_host(bytes(host, len), strict != 0)))
}
