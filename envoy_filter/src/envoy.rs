//! The Envoy boundary: the hooks Envoy calls and safe wrappers around the
//! callbacks we call. Every `unsafe` that touches Envoy lives in this file.
//!
//! Thread contract: the config hooks run on the main thread; every filter hook,
//! and every callback taking an [`EnvoyFilter`], runs on the stream's worker
//! thread. Only [`Scheduler::commit`] and dropping a [`Scheduler`] may happen on
//! any thread.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::config::FilterConfig;
use crate::filter::{Direction, Filter};

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/envoy_abi.rs"));
}
use sys::*;

/// The ABI version this module was written against (Envoy 1.40).
const ABI_VERSION: &[u8] = b"v0.2.0\0";

pub use sys::envoy_dynamic_module_type_metadata_source as MetadataSource;
pub const METADATA_DYNAMIC: MetadataSource = envoy_dynamic_module_type_metadata_source_Dynamic;
pub const METADATA_ROUTE: MetadataSource = envoy_dynamic_module_type_metadata_source_Route;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Request,
    Response,
}

impl HeaderKind {
    fn raw(self) -> envoy_dynamic_module_type_http_header_type {
        match self {
            HeaderKind::Request => envoy_dynamic_module_type_http_header_type_RequestHeader,
            HeaderKind::Response => envoy_dynamic_module_type_http_header_type_ResponseHeader,
        }
    }
}

/// Which body buffer: the chunk of the current body hook, or what was buffered.
#[derive(Clone, Copy, Debug)]
pub enum BodyKind {
    Received,
    Buffered,
}

fn body_type(dir: Direction, kind: BodyKind) -> envoy_dynamic_module_type_http_body_type {
    match (dir, kind) {
        (Direction::Request, BodyKind::Received) => envoy_dynamic_module_type_http_body_type_ReceivedRequestBody,
        (Direction::Request, BodyKind::Buffered) => envoy_dynamic_module_type_http_body_type_BufferedRequestBody,
        (Direction::Response, BodyKind::Received) => envoy_dynamic_module_type_http_body_type_ReceivedResponseBody,
        (Direction::Response, BodyKind::Buffered) => envoy_dynamic_module_type_http_body_type_BufferedResponseBody,
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Attribute {
    Protocol,
    SourceAddress,
    DestinationAddress,
}

#[derive(Clone, Copy, Debug)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// What a hook tells Envoy to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Continue,
    /// Stop; for body hooks: buffer the data (413 past the buffer limit).
    StopAndBuffer,
    /// Stop; for body hooks: buffer the data with watermark flow control.
    StopAndWatermark,
    /// Stop after a local reply: for body hooks, do not buffer.
    StopNoBuffer,
}

impl Status {
    fn headers(self) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_headers_status_Continue,
            _ => envoy_dynamic_module_type_on_http_filter_headers_status_StopIteration,
        }
    }

    fn body(self) -> envoy_dynamic_module_type_on_http_filter_body_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_body_status_Continue,
            Status::StopAndBuffer => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndBuffer,
            Status::StopAndWatermark => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndWatermark,
            Status::StopNoBuffer => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationNoBuffer,
        }
    }

    fn trailers(self) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_trailers_status_Continue,
            _ => envoy_dynamic_module_type_on_http_filter_trailers_status_StopIteration,
        }
    }
}

/// Header names and values, in order.
pub type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

/// A metadata value as read from Envoy.
pub enum MetaValue {
    Str(Vec<u8>),
    Number(f64),
    Bool(bool),
}

fn module_buffer(bytes: &[u8]) -> envoy_dynamic_module_type_module_buffer {
    envoy_dynamic_module_type_module_buffer {
        ptr: bytes.as_ptr() as *const c_char,
        length: bytes.len(),
    }
}

const NULL_MODULE_BUFFER: envoy_dynamic_module_type_module_buffer = envoy_dynamic_module_type_module_buffer {
    ptr: std::ptr::null(),
    length: 0,
};

const fn empty_envoy_buffer() -> envoy_dynamic_module_type_envoy_buffer {
    envoy_dynamic_module_type_envoy_buffer {
        ptr: std::ptr::null(),
        length: 0,
    }
}

fn copy_envoy_buffer(buffer: &envoy_dynamic_module_type_envoy_buffer) -> Vec<u8> {
    copy_raw(buffer.ptr, buffer.length)
}

fn copy_raw(ptr: *const c_char, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy hands out buffers readable for `len` bytes until the current
    // hook returns; we copy them at once.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }.to_vec()
}

pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Trace => envoy_dynamic_module_type_log_level_Trace,
        LogLevel::Debug => envoy_dynamic_module_type_log_level_Debug,
        LogLevel::Info => envoy_dynamic_module_type_log_level_Info,
        LogLevel::Warn => envoy_dynamic_module_type_log_level_Warn,
        LogLevel::Error => envoy_dynamic_module_type_log_level_Error,
        LogLevel::Critical => envoy_dynamic_module_type_log_level_Critical,
    };
    // SAFETY: Envoy only reads the message during the call; logging is thread-safe.
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level) {
            envoy_dynamic_module_callback_log(level, module_buffer(message.as_bytes()));
        }
    }
}

/// Envoy's side of one stream's filter.
///
/// Valid from `on_http_filter_new` until `on_http_filter_destroy`, on the
/// stream's worker thread only; [`crate::filter::Stream`] stops handing it out
/// at destroy, so safe code never sees a dangling one.
#[derive(Clone, Copy)]
pub struct EnvoyFilter(envoy_dynamic_module_type_http_filter_envoy_ptr);

// Every method below relies on the type's contract: `self.0` is a live filter
// and we are on its worker thread, inside a hook.
impl EnvoyFilter {
    /// All values of header `key`.
    pub fn header_values(self, kind: HeaderKind, key: &[u8]) -> Vec<Vec<u8>> {
        let mut value = empty_envoy_buffer();
        let mut count = 0usize;
        // SAFETY: type contract; `value` and `count` are writable locals.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind.raw(),
                module_buffer(key),
                &mut value,
                0,
                &mut count,
            )
        };
        if !found || count == 0 {
            return Vec::new();
        }
        let mut values = Vec::with_capacity(count);
        values.push(copy_envoy_buffer(&value));
        for index in 1..count {
            let mut value = empty_envoy_buffer();
            // SAFETY: as above; `count` = NULL is allowed.
            unsafe {
                envoy_dynamic_module_callback_http_get_header(
                    self.0,
                    kind.raw(),
                    module_buffer(key),
                    &mut value,
                    index,
                    std::ptr::null_mut(),
                )
            };
            values.push(copy_envoy_buffer(&value));
        }
        values
    }

    /// Every header in order, pseudo-headers included.
    pub fn headers(self, kind: HeaderKind) -> HeaderList {
        // SAFETY: type contract.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, kind.raw()) };
        if n == 0 {
            return Vec::new();
        }
        let empty = envoy_dynamic_module_type_envoy_http_header {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut raw = vec![empty; n];
        // SAFETY: type contract; `raw` has room for the `n` headers Envoy reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_headers(self.0, kind.raw(), raw.as_mut_ptr()) } {
            return Vec::new();
        }
        raw.iter()
            .map(|h| (copy_raw(h.key_ptr, h.key_length), copy_raw(h.value_ptr, h.value_length)))
            .collect()
    }

    pub fn add_header(self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: type contract; Envoy copies key and value during the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(self.0, kind.raw(), module_buffer(key), module_buffer(value))
        }
    }

    /// Replaces every value of `key`; `None` removes the header.
    pub fn set_header(self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        let value = value.map_or(NULL_MODULE_BUFFER, module_buffer);
        // SAFETY: type contract; Envoy copies key and value during the call.
        unsafe { envoy_dynamic_module_callback_http_set_header(self.0, kind.raw(), module_buffer(key), value) }
    }

    pub fn send_response(self, status: u32, headers: &[(Vec<u8>, Vec<u8>)], body: &[u8], details: &str) {
        let mut raw: Vec<envoy_dynamic_module_type_module_http_header> = headers
            .iter()
            .map(|(k, v)| envoy_dynamic_module_type_module_http_header {
                key_ptr: k.as_ptr() as *const c_char,
                key_length: k.len(),
                value_ptr: v.as_ptr() as *const c_char,
                value_length: v.len(),
            })
            .collect();
        // SAFETY: type contract; `raw`, `body` and `details` outlive the call,
        // during which Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                raw.as_mut_ptr(),
                raw.len(),
                module_buffer(body),
                module_buffer(details.as_bytes()),
            )
        }
    }

    pub fn reset_stream(self, details: &str) {
        // SAFETY: type contract; reason 0 is a local reset.
        unsafe { envoy_dynamic_module_callback_http_filter_reset_stream(self.0, 0, module_buffer(details.as_bytes())) }
    }

    pub fn body(self, dir: Direction, kind: BodyKind) -> Vec<u8> {
        let body_type = body_type(dir, kind);
        // SAFETY: type contract.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type) };
        if n == 0 {
            return Vec::new();
        }
        let mut chunks = vec![empty_envoy_buffer(); n];
        // SAFETY: type contract; `chunks` has room for the `n` chunks reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_body_chunks(self.0, body_type, chunks.as_mut_ptr()) } {
            return Vec::new();
        }
        let mut body = Vec::with_capacity(chunks.iter().map(|c| c.length).sum());
        for chunk in &chunks {
            body.extend_from_slice(&copy_envoy_buffer(chunk));
        }
        body
    }

    pub fn body_size(self, dir: Direction, kind: BodyKind) -> usize {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.0, body_type(dir, kind)) }
    }

    pub fn buffer_limit(self) -> u64 {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_buffer_limit(self.0) }
    }

    pub fn append_body(self, dir: Direction, kind: BodyKind, data: &[u8]) -> bool {
        // SAFETY: type contract; Envoy copies `data` during the call.
        unsafe { envoy_dynamic_module_callback_http_append_body(self.0, body_type(dir, kind), module_buffer(data)) }
    }

    pub fn drain_body(self, dir: Direction, kind: BodyKind, bytes: usize) -> bool {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_drain_body(self.0, body_type(dir, kind), bytes) }
    }

    pub fn set_dynamic_metadata(self, ns: &[u8], key: &[u8], value: &MetaValue) {
        let (ns, key) = (module_buffer(ns), module_buffer(key));
        // SAFETY: type contract; Envoy copies the buffers during the call.
        unsafe {
            match value {
                MetaValue::Str(s) => {
                    envoy_dynamic_module_callback_http_set_dynamic_metadata_string(self.0, ns, key, module_buffer(s))
                }
                MetaValue::Number(n) => {
                    envoy_dynamic_module_callback_http_set_dynamic_metadata_number(self.0, ns, key, *n)
                }
                MetaValue::Bool(b) => envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(self.0, ns, key, *b),
            }
        }
    }

    /// A string, number or bool value of `source` metadata (other types: `None`).
    pub fn metadata(self, source: MetadataSource, ns: &[u8], key: &[u8]) -> Option<MetaValue> {
        let (ns, key) = (module_buffer(ns), module_buffer(key));
        let mut text = empty_envoy_buffer();
        let mut number = 0f64;
        let mut flag = false;
        // SAFETY: type contract; the out-parameters are writable locals.
        unsafe {
            if envoy_dynamic_module_callback_http_get_metadata_string(self.0, source, ns, key, &mut text) {
                return Some(MetaValue::Str(copy_envoy_buffer(&text)));
            }
            if envoy_dynamic_module_callback_http_get_metadata_number(self.0, source, ns, key, &mut number) {
                return Some(MetaValue::Number(number));
            }
            if envoy_dynamic_module_callback_http_get_metadata_bool(self.0, source, ns, key, &mut flag) {
                return Some(MetaValue::Bool(flag));
            }
        }
        None
    }

    pub fn metadata_keys(self, source: MetadataSource, ns: &[u8]) -> Vec<Vec<u8>> {
        // SAFETY: type contract.
        let n =
            unsafe { envoy_dynamic_module_callback_http_get_metadata_keys_count(self.0, source, module_buffer(ns)) };
        if n == 0 {
            return Vec::new();
        }
        let mut keys = vec![empty_envoy_buffer(); n];
        // SAFETY: type contract; `keys` has room for the `n` keys reported.
        if !unsafe {
            envoy_dynamic_module_callback_http_get_metadata_keys(self.0, source, module_buffer(ns), keys.as_mut_ptr())
        } {
            return Vec::new();
        }
        keys.iter().map(copy_envoy_buffer).collect()
    }

    pub fn attribute(self, attribute: Attribute) -> Option<Vec<u8>> {
        let id = match attribute {
            Attribute::Protocol => envoy_dynamic_module_type_attribute_id_RequestProtocol,
            Attribute::SourceAddress => envoy_dynamic_module_type_attribute_id_SourceAddress,
            Attribute::DestinationAddress => envoy_dynamic_module_type_attribute_id_DestinationAddress,
        };
        let mut value = empty_envoy_buffer();
        // SAFETY: type contract; `value` is a writable local.
        unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut value) }
            .then(|| copy_envoy_buffer(&value))
    }

    /// The downstream peer's address as `ip:port`, before any XFF rewriting.
    pub fn direct_remote_address(self) -> Option<Vec<u8>> {
        let mut address = empty_envoy_buffer();
        // SAFETY: type contract; `address` is a writable local.
        unsafe { envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(self.0, &mut address) }
            .then(|| copy_envoy_buffer(&address))
    }

    pub fn continue_stream(self, dir: Direction) {
        // SAFETY: type contract; called only after a hook of `dir` returned a stop status.
        unsafe {
            match dir {
                Direction::Request => envoy_dynamic_module_callback_http_filter_continue_decoding(self.0),
                Direction::Response => envoy_dynamic_module_callback_http_filter_continue_encoding(self.0),
            }
        }
    }

    pub fn new_scheduler(self) -> Scheduler {
        // SAFETY: type contract (worker thread, live filter).
        Scheduler(unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) })
    }
}

/// Posts events to the worker thread of the stream it was made for; Envoy
/// drops events for a filter that is gone. Deleted on drop.
pub struct Scheduler(envoy_dynamic_module_type_http_filter_scheduler_module_ptr);

// SAFETY: Envoy documents commit and delete as callable from any thread.
unsafe impl Send for Scheduler {}
// SAFETY: commit takes the scheduler by pointer and is thread-safe.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `self.0` is live until drop; commit is thread-safe.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event_id) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

// ------------------------------------------------------------------ hooks --

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
    // per-stream state the closure touched is marked failed by the caller.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log(LogLevel::Error, &format!("resty_ffi: panic in {what}"));
        fallback
    })
}

/// Runs a filter hook. A panic fails the stream closed: a 500 on the request
/// path, a reset on the response path (see [`Filter::fail_after_panic`]).
fn filter_hook(filter: FilterModulePtr, what: &str, f: impl FnOnce(&Filter) -> Status) -> Status {
    // SAFETY: `filter` is the pointer `on_http_filter_new` returned (a leaked
    // Box<Filter>), freed only by `on_http_filter_destroy`, after every other hook.
    let filter = unsafe { &*(filter as *const Filter) };
    match catch_unwind(AssertUnwindSafe(|| f(filter))) {
        Ok(status) => status,
        Err(_) => {
            log(
                LogLevel::Error,
                &format!("resty_ffi: panic in {what}; failing the stream closed"),
            );
            no_unwind("panic handling", Status::StopNoBuffer, || filter.fail_after_panic())
        }
    }
}

hook! {
    fn envoy_dynamic_module_on_program_init() -> *const c_char {
        ABI_VERSION.as_ptr() as *const c_char
    }
}

hook! {
    /// Parses the filter config (JSON of a google.protobuf.Struct); NULL rejects it.
    fn envoy_dynamic_module_on_http_filter_config_new(
        _config_envoy_ptr: envoy_dynamic_module_type_http_filter_config_envoy_ptr,
        name: envoy_dynamic_module_type_envoy_buffer,
        config: envoy_dynamic_module_type_envoy_buffer,
    ) -> envoy_dynamic_module_type_http_filter_config_module_ptr {
        let name = String::from_utf8_lossy(&copy_envoy_buffer(&name)).into_owned();
        let config = copy_envoy_buffer(&config);
        no_unwind("config_new", std::ptr::null(), || match FilterConfig::parse(&name, &config) {
            Ok(config) => Box::into_raw(Box::new(config)) as *const c_void,
            Err(e) => {
                log(LogLevel::Error, &e);
                std::ptr::null()
            }
        })
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_config_destroy(config: envoy_dynamic_module_type_http_filter_config_module_ptr) {
        // SAFETY: `config` came from Box::into_raw in config_new; Envoy destroys it once.
        let config = unsafe { Box::from_raw(config as *mut FilterConfig) };
        no_unwind("config_destroy", (), || drop(config));
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_new(
        config: envoy_dynamic_module_type_http_filter_config_module_ptr,
        filter_envoy_ptr: FilterEnvoyPtr,
    ) -> FilterModulePtr {
        // SAFETY: `config` lives until config_destroy, which Envoy calls only
        // after every filter made from it is gone.
        let config = unsafe { &*(config as *const FilterConfig) };
        let envoy = EnvoyFilter(filter_envoy_ptr);
        no_unwind("filter_new", std::ptr::null(), || Box::into_raw(Box::new(Filter::new(config, envoy))) as *const c_void)
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_headers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        filter_hook(filter, "request_headers", |f| f.on_headers(Direction::Request, end_of_stream)).headers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_body(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_body_status {
        filter_hook(filter, "request_body", |f| f.on_body(Direction::Request, end_of_stream)).body()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_request_trailers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
    ) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        filter_hook(filter, "request_trailers", |f| f.on_trailers(Direction::Request)).trailers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_headers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        filter_hook(filter, "response_headers", |f| f.on_headers(Direction::Response, end_of_stream)).headers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_body(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
        end_of_stream: bool,
    ) -> envoy_dynamic_module_type_on_http_filter_body_status {
        filter_hook(filter, "response_body", |f| f.on_body(Direction::Response, end_of_stream)).body()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_response_trailers(
        _envoy: FilterEnvoyPtr,
        filter: FilterModulePtr,
    ) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        filter_hook(filter, "response_trailers", |f| f.on_trailers(Direction::Response)).trailers()
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_scheduled(_envoy: FilterEnvoyPtr, filter: FilterModulePtr, _event_id: u64) {
        filter_hook(filter, "scheduled", |f| {
            f.on_scheduled();
            Status::Continue
        });
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_stream_complete(_envoy: FilterEnvoyPtr, filter: FilterModulePtr) {
        // SAFETY: see `filter_hook`.
        let filter = unsafe { &*(filter as *const Filter) };
        no_unwind("stream_complete", (), || filter.on_stream_complete());
    }
}

hook! {
    fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
        // SAFETY: `filter` came from Box::into_raw in filter_new; Envoy destroys it
        // once and calls no hook for it afterwards.
        let filter = unsafe { Box::from_raw(filter as *mut Filter) };
        no_unwind("filter_destroy", (), || drop(filter));
    }
}

// Hooks Envoy requires but this filter never triggers.

hook! {
    fn envoy_dynamic_module_on_http_filter_http_callout_done(
        _envoy: FilterEnvoyPtr,
        _filter: FilterModulePtr,
        _callout_id: u64,
        _result: envoy_dynamic_module_type_http_callout_result,
        _headers: *mut envoy_dynamic_module_type_envoy_http_header,
        _headers_size: usize,
        _body_chunks: *mut envoy_dynamic_module_type_envoy_buffer,
        _body_chunks_size: usize,
    ) {}
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
