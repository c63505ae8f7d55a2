//! The top layer: the `envoy_dynamic_module_on_*` functions Envoy calls. Thin:
//! each finds its stream and hands over to `stream.rs`.
//!
//! Two rules for every hook, kept here once:
//! * No unwinding into Envoy: a panic fails the stream closed (a 500 on the
//!   request path, a reset once the response started).
//! * A stream's memory outlives every hook of it on the stack. A local reply,
//!   a reset or a continue sent from inside a hook can make Envoy destroy the
//!   stream before that hook returns; destroy then only detaches the stream
//!   (nothing reaches Envoy through it any more) and the outermost hook frees
//!   it on its way out. Each slot carries a canary that every hook checks, so
//!   a hook reaching freed memory aborts loudly instead of going on.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::abi::sys::*;
use crate::abi::{c_slice, copy_envoy_buffer, log, Direction, EnvoyConfig, EnvoyFilter, LogLevel, Status, ABI_VERSION};
use crate::config::{FilterConfig, PerRouteConfig};
use crate::stream::Stream;

/// Defines an exported hook. The `static-module` feature prefixes the symbol
/// with `resty_ffi_envoy_`, the naming Envoy resolves for a module linked into
/// its binary under the name `resty_ffi_envoy`.
macro_rules! hook {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[cfg_attr(not(feature = "static-module"), export_name = stringify!($name))]
        #[cfg_attr(feature = "static-module", export_name = concat!("resty_ffi_envoy_", stringify!($name)))]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? $body
    };
}

type FilterEnvoyPtr = envoy_dynamic_module_type_http_filter_envoy_ptr;
type FilterModulePtr = envoy_dynamic_module_type_http_filter_module_ptr;

/// Runs `f`; a panic is logged and turned into `fallback`, never unwound into Envoy.
fn no_unwind<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic we only log and return `fallback`; the
    // per-stream state the closure touched is failed closed by the caller.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log(LogLevel::Error, &format!("resty_ffi: panic in {what}"));
        fallback
    })
}

/// Panics on purpose at `point` when the test build's environment asks for
/// it (`RESTY_FFI_TEST_PANIC_AT=point`), to test failing closed.
#[cfg(feature = "test-faults")]
fn fault_point(point: &str) {
    if std::env::var("RESTY_FFI_TEST_PANIC_AT").is_ok_and(|at| at == point) {
        panic!("resty_ffi: test fault at {point}");
    }
}

#[cfg(not(feature = "test-faults"))]
fn fault_point(_point: &str) {}

const ALIVE: u64 = 0x7265_7374_795f_6666; // "resty_ff"
const FREED: u64 = 0xdead_f1ee_dead_f1ee;

/// What Envoy's filter pointer designates.
struct Slot {
    canary: Cell<u64>,
    /// Hooks of this stream on the stack.
    depth: Cell<u32>,
    /// Envoy destroyed the filter while a hook ran: free it on the way out.
    destroyed: Cell<bool>,
    filter: Filter,
}

enum Filter {
    Live(Stream),
    /// Creating the stream panicked: each request is answered 500.
    Broken(Cell<Option<EnvoyFilter>>),
}

impl Filter {
    fn new(config: &Arc<FilterConfig>, envoy: EnvoyFilter) -> Filter {
        no_unwind("filter_new", Filter::Broken(Cell::new(Some(envoy))), || {
            fault_point("filter_new");
            Filter::Live(Stream::new(Arc::clone(config), envoy, route_config_of))
        })
    }

    fn run(&self, f: impl FnOnce(&Stream) -> Status) -> Status {
        match self {
            Filter::Live(stream) => f(stream),
            Filter::Broken(envoy) => match envoy.take() {
                Some(envoy) => {
                    envoy.send_response(500, [], b"", "resty_ffi_panic");
                    Status::StopNoBuffer
                }
                None => Status::StopNoBuffer,
            },
        }
    }

    fn fail_after_panic(&self) -> Status {
        match self {
            Filter::Live(stream) => stream.fail_after_panic(),
            Filter::Broken(_) => Status::StopNoBuffer,
        }
    }

    fn detach(&self) {
        match self {
            Filter::Live(stream) => stream.shut_down(),
            Filter::Broken(envoy) => envoy.set(None),
        }
    }
}

impl Slot {
    /// # Safety
    /// `ptr` came from [`Slot::into_raw`] and was not freed.
    unsafe fn from_ptr<'a>(ptr: FilterModulePtr) -> &'a Slot {
        // SAFETY: the caller's contract.
        let slot = unsafe { &*(ptr as *const Slot) };
        if slot.canary.get() != ALIVE {
            log(LogLevel::Critical, "resty_ffi: a hook reached a freed filter; aborting");
            std::process::abort();
        }
        slot
    }

    fn into_raw(filter: Filter) -> FilterModulePtr {
        let slot = Slot { canary: Cell::new(ALIVE), depth: Cell::new(0), destroyed: Cell::new(false), filter };
        Box::into_raw(Box::new(slot)) as *const c_void
    }

    /// # Safety
    /// `ptr` came from [`Slot::into_raw`], no hook of it is on the stack and
    /// Envoy destroyed it; nothing uses it afterwards.
    unsafe fn free(ptr: FilterModulePtr) {
        // SAFETY: the caller's contract.
        let slot = unsafe { Box::from_raw(ptr as *mut Slot) };
        slot.canary.set(FREED);
        no_unwind("filter_destroy", (), || drop(slot));
    }
}

/// Runs a stream hook: see the module docs for the two rules.
fn filter_hook(ptr: FilterModulePtr, what: &str, f: impl FnOnce(&Stream) -> Status) -> Status {
    // SAFETY: `ptr` is the pointer `on_http_filter_new` returned; it is freed
    // only when Envoy destroyed it and no hook of it runs (below and in
    // `on_http_filter_destroy`).
    let slot = unsafe { Slot::from_ptr(ptr) };
    slot.depth.set(slot.depth.get() + 1);
    let status = catch_unwind(AssertUnwindSafe(|| {
        fault_point(what);
        slot.filter.run(f)
    }))
    .unwrap_or_else(|_| {
        log(LogLevel::Error, &format!("resty_ffi: panic in {what}; failing the stream closed"));
        no_unwind("panic handling", Status::StopNoBuffer, || slot.filter.fail_after_panic())
    });
    slot.depth.set(slot.depth.get() - 1);
    if slot.depth.get() == 0 && slot.destroyed.get() {
        // SAFETY: Envoy destroyed the filter and this was its outermost hook;
        // `slot` is not used below.
        unsafe { Slot::free(ptr) };
    }
    status
}

/// Our per-route config of the stream's route, if it has one.
fn route_config_of(envoy: EnvoyFilter) -> Option<Arc<PerRouteConfig>> {
    let ptr = envoy.route_config();
    // SAFETY: a non-NULL pointer is one `per_route_config_new` returned (a
    // leaked Box<Arc<PerRouteConfig>>); the route holds it until
    // `per_route_config_destroy`, and the stream's route outlives this call.
    (!ptr.is_null()).then(|| Arc::clone(unsafe { &*(ptr as *const Arc<PerRouteConfig>) }))
}

hook! {
    fn envoy_dynamic_module_on_program_init() -> *const c_char {
        crate::api::log::take_runtime_logs();
        ABI_VERSION.as_ptr() as *const c_char
    }
}

hook! {
    /// Parses the filter config (JSON of a google.protobuf.Struct); NULL rejects it.
    fn envoy_dynamic_module_on_http_filter_config_new(
        config_envoy_ptr: envoy_dynamic_module_type_http_filter_config_envoy_ptr,
        name: envoy_dynamic_module_type_envoy_buffer,
        config: envoy_dynamic_module_type_envoy_buffer,
    ) -> envoy_dynamic_module_type_http_filter_config_module_ptr {
        let name = String::from_utf8_lossy(&copy_envoy_buffer(&name)).into_owned();
        let config = copy_envoy_buffer(&config);
        let envoy = EnvoyConfig::new(config_envoy_ptr);
        no_unwind("config_new", std::ptr::null(), || match FilterConfig::parse(&name, &config, envoy) {
            Ok(config) => Box::into_raw(Box::new(Arc::new(config))) as *const c_void,
            Err(e) => {
                log(LogLevel::Error, &e);
                std::ptr::null()
            }
        })
    }
}

hook! {
    /// Envoy destroys a config after every filter made from it; its Lua VMs
    /// (and the runtimes they loaded) go with it.
    fn envoy_dynamic_module_on_http_filter_config_destroy(config: envoy_dynamic_module_type_http_filter_config_module_ptr) {
        // SAFETY: `config` came from Box::into_raw in config_new; Envoy destroys it once.
        let config = unsafe { Box::from_raw(config as *mut Arc<FilterConfig>) };
        no_unwind("config_destroy", (), || drop(config));
    }
}

hook! {
    /// A route's LuaPerRoute equivalent (JSON of a google.protobuf.Struct); NULL rejects it.
    fn envoy_dynamic_module_on_http_filter_per_route_config_new(
        _name: envoy_dynamic_module_type_envoy_buffer,
        config: envoy_dynamic_module_type_envoy_buffer,
    ) -> envoy_dynamic_module_type_http_filter_per_route_config_module_ptr {
        let config = copy_envoy_buffer(&config);
        no_unwind("per_route_config_new", std::ptr::null(), || match PerRouteConfig::parse(&config) {
            Ok(config) => Box::into_raw(Box::new(Arc::new(config))) as *const c_void,
            Err(e) => {
                log(LogLevel::Error, &e);
                std::ptr::null()
            }
        })
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
        config: envoy_dynamic_module_type_http_filter_per_route_config_module_ptr,
    ) {
        // SAFETY: `config` came from Box::into_raw in per_route_config_new; Envoy
        // destroys it once. Streams that picked it hold their own Arc.
        let config = unsafe { Box::from_raw(config as *mut Arc<PerRouteConfig>) };
        no_unwind("per_route_config_destroy", (), || drop(config));
    }
}

hook! {
    /// Never NULL: if the stream cannot be set up, the filter fails it closed.
    fn envoy_dynamic_module_on_http_filter_new(
        config: envoy_dynamic_module_type_http_filter_config_module_ptr,
        filter_envoy_ptr: FilterEnvoyPtr,
    ) -> FilterModulePtr {
        // SAFETY: `config` lives until config_destroy, which Envoy calls only
        // after every filter made from it is gone.
        let config = unsafe { &*(config as *const Arc<FilterConfig>) };
        Slot::into_raw(Filter::new(config, EnvoyFilter::new(filter_envoy_ptr)))
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_headers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        filter_hook(filter, "request_headers", |s| s.on_headers(Direction::Request, end_of_stream)).headers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_body(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_body_status {
        filter_hook(filter, "request_body", |s| s.on_body(Direction::Request, end_of_stream)).body()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_trailers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
    ) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        filter_hook(filter, "request_trailers", |s| s.on_trailers(Direction::Request)).trailers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_headers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        filter_hook(filter, "response_headers", |s| s.on_headers(Direction::Response, end_of_stream)).headers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_body(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_body_status {
        filter_hook(filter, "response_body", |s| s.on_body(Direction::Response, end_of_stream)).body()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_trailers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
    ) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        filter_hook(filter, "response_trailers", |s| s.on_trailers(Direction::Response)).trailers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_scheduled(_envoy: FilterEnvoyPtr, filter: FilterModulePtr, _event_id: u64) {
        filter_hook(filter, "scheduled", |s| {
            s.on_scheduled();
            Status::Continue
        });
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_stream_complete(_envoy: FilterEnvoyPtr, filter: FilterModulePtr) {
        filter_hook(filter, "stream_complete", |s| {
            s.on_stream_complete();
            Status::Continue
        });
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
        // SAFETY: see `filter_hook`; Envoy destroys a filter once.
        let slot = unsafe { Slot::from_ptr(filter) };
        no_unwind("filter_destroy", (), || slot.filter.detach());
        if slot.depth.get() > 0 {
            log(LogLevel::Debug, "resty_ffi: filter destroyed inside its own hook; freed when the hook returns");
            slot.destroyed.set(true);
        } else {
            // SAFETY: no hook of the filter runs, and Envoy calls none after destroy.
            unsafe { Slot::free(filter) };
        }
    }
}

// Hooks Envoy requires but this filter never triggers.

hook! {
    fn envoy_dynamic_module_on_http_filter_http_callout_done(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        callout_id: u64,
        result: envoy_dynamic_module_type_http_callout_result,
        headers: *mut envoy_dynamic_module_type_envoy_http_header,
        headers_size: usize,
        body_chunks: *mut envoy_dynamic_module_type_envoy_buffer,
        body_chunks_size: usize,
    ) {
        // SAFETY: Envoy passes arrays of `*_size` entries (or NULL), valid
        // until this hook returns; `answer` copies them before.
        let (headers, body) = unsafe { (c_slice(headers, headers_size), c_slice(body_chunks, body_chunks_size)) };
        // 0 = success; a reset or an oversized answer is a failure.
        let succeeded = result == 0;
        filter_hook(filter, "http_callout_done", |s| {
            s.on_callout_done(callout_id, succeeded, headers, body);
            Status::Continue
        });
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_http_stream_headers(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
        _stream_id: u64,
        _headers: *mut envoy_dynamic_module_type_envoy_http_header,
        _headers_size: usize,
        _end_stream: bool,
    ) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_http_stream_data(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
        _stream_id: u64,
        _data: *const envoy_dynamic_module_type_envoy_buffer,
        _data_count: usize,
        _end_stream: bool,
    ) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
        _stream_id: u64,
        _trailers: *mut envoy_dynamic_module_type_envoy_http_header,
        _trailers_size: usize,
    ) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_http_stream_complete(_envoy: FilterEnvoyPtr, _filter: FilterModulePtr, _stream_id: u64) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_http_stream_reset(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
        _stream_id: u64,
        _reason: envoy_dynamic_module_type_http_stream_reset_reason,
    ) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
    ) {}
}

hook! {
    fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
    ) {}
}
