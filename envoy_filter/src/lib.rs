//! resty_ffi's Envoy host: an HTTP filter, loaded by the stock Envoy as a
//! dynamic module, that runs Lua like `envoy.filters.http.lua` and lets it
//! call resty_ffi runtimes without blocking the worker.
//!
//! The module links the resty_ffi core, so the runtime C ABI
//! (`ngx_http_lua_ffi_task_poll` & co.) and the host API (`resty_ffi_*`, used
//! by `resty_ffi.lua` through LuaJIT's FFI) are exported from this library.
//! Envoy must load it with `load_globally: true` so that runtime libraries and
//! `ffi.C` resolve those symbols (see README.md).
//!
//! What it is not: a general Envoy SDK. It exports the hooks Envoy requires and
//! calls only the callbacks listed in `abi/envoy_abi.h`.
//!
//! # Implementation notes
//! * LuaJIT is built into this library with hidden symbols, so it never binds
//!   to the copy of LuaJIT that the Envoy binary exports.
//! * A call waits in a coroutine: `host.wait()` yields, the hook returns
//!   StopIteration, and the core's completion hook commits an event on the
//!   stream's scheduler; Envoy runs `on_http_filter_scheduled` on the worker
//!   thread, which resumes the coroutine. Envoy drops events for destroyed
//!   filters, and destroying the filter closes the sink, so late answers are
//!   freed by the core.

mod config;
mod envoy;
mod filter;
mod handle;
mod sink;
mod vm;
