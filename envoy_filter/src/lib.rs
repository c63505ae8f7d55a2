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
//! # Layers
//! Each module uses only those listed before it:
//! `abi` (Envoy's callbacks, safe) → `vm` (one LuaJIT VM, coroutines) →
//! `api` (the Lua objects of a stream) → `config` (filter config, one VM per
//! worker) → `stream` (the per-stream state machine) → `hooks` (what Envoy
//! calls; panics and re-entrancy handled once).
//!
//! # Implementation notes
//! * Scripts run on the LuaJIT that the Envoy binary exports (feature
//!   `envoy-luajit`, the default), so Lua C modules work as in the stock
//!   filter; `vendored-luajit` builds a private one for custom binaries.
//! * A call waits in a coroutine: `host.wait()` yields, the hook returns
//!   StopIteration, and the core's completion hook commits an event on the
//!   stream's scheduler; Envoy runs `on_http_filter_scheduled` on the worker
//!   thread, which resumes the coroutine. Envoy drops events for destroyed
//!   filters, and destroying the filter closes the sink, so late answers are
//!   freed by the core.

mod abi;
mod api;
mod config;
mod hooks;
mod stream;
mod vm;
