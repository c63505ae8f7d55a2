//! The bottom layer: safe wrappers around the callbacks of Envoy's
//! dynamic-module ABI (bindgen over `abi/envoy_abi.h`). It knows nothing of
//! filters, streams or Lua. Every `unsafe` call into Envoy lives here; the
//! hooks Envoy calls live in `hooks.rs`.
//!
//! Thread contract: the config callbacks run on the main thread; every callback
//! taking an [`EnvoyFilter`] runs on the stream's worker thread, inside one of
//! the stream's hooks. Only [`Scheduler::commit`] and dropping a [`Scheduler`]
//! may happen on any thread.

use std::ffi::c_char;

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
pub(crate) mod sys {
    include!(concat!(env!("OUT_DIR"), "/envoy_abi.rs"));
}
use sys::*;

/// The ABI version this module was written against (Envoy 1.40).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Which direction of a stream: decoding (request) or encoding (response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Where metadata is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    Dynamic,
    Route,
}

impl MetadataSource {
    fn raw(self) -> envoy_dynamic_module_type_metadata_source {
        match self {
            MetadataSource::Dynamic => envoy_dynamic_module_type_metadata_source_Dynamic,
            MetadataSource::Route => envoy_dynamic_module_type_metadata_source_Route,
        }
    }
}

/// Envoy's header maps of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Request,
    RequestTrailers,
    Response,
    ResponseTrailers,
}

impl HeaderKind {
    fn raw(self) -> envoy_dynamic_module_type_http_header_type {
        match self {
            HeaderKind::Request => envoy_dynamic_module_type_http_header_type_RequestHeader,
            HeaderKind::RequestTrailers => envoy_dynamic_module_type_http_header_type_RequestTrailer,
            HeaderKind::Response => envoy_dynamic_module_type_http_header_type_ResponseHeader,
            HeaderKind::ResponseTrailers => envoy_dynamic_module_type_http_header_type_ResponseTrailer,
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
    RouteName,
    VirtualClusterName,
    RequestedServerName,
    TlsVersion,
    SubjectPeerCertificate,
    SubjectLocalCertificate,
    DnsSanPeerCertificate,
    DnsSanLocalCertificate,
    UriSanPeerCertificate,
    UriSanLocalCertificate,
    Sha256PeerCertificateDigest,
}

impl Attribute {
    fn raw(self) -> envoy_dynamic_module_type_attribute_id {
        match self {
            Attribute::Protocol => envoy_dynamic_module_type_attribute_id_RequestProtocol,
            Attribute::SourceAddress => envoy_dynamic_module_type_attribute_id_SourceAddress,
            Attribute::DestinationAddress => envoy_dynamic_module_type_attribute_id_DestinationAddress,
            Attribute::RouteName => envoy_dynamic_module_type_attribute_id_XdsRouteName,
            Attribute::VirtualClusterName => envoy_dynamic_module_type_attribute_id_XdsVirtualClusterName,
            Attribute::RequestedServerName => envoy_dynamic_module_type_attribute_id_ConnectionRequestedServerName,
            Attribute::TlsVersion => envoy_dynamic_module_type_attribute_id_ConnectionTlsVersion,
            Attribute::SubjectPeerCertificate => envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate,
            Attribute::SubjectLocalCertificate => envoy_dynamic_module_type_attribute_id_ConnectionSubjectLocalCertificate,
            Attribute::DnsSanPeerCertificate => envoy_dynamic_module_type_attribute_id_ConnectionDnsSanPeerCertificate,
            Attribute::DnsSanLocalCertificate => envoy_dynamic_module_type_attribute_id_ConnectionDnsSanLocalCertificate,
            Attribute::UriSanPeerCertificate => envoy_dynamic_module_type_attribute_id_ConnectionUriSanPeerCertificate,
            Attribute::UriSanLocalCertificate => envoy_dynamic_module_type_attribute_id_ConnectionUriSanLocalCertificate,
            Attribute::Sha256PeerCertificateDigest => {
                envoy_dynamic_module_type_attribute_id_ConnectionSha256PeerCertificateDigest
            }
        }
    }
}

/// The signature the metric update callbacks share.
type Update = unsafe extern "C" fn(
    envoy_dynamic_module_type_http_filter_envoy_ptr,
    usize,
    *mut envoy_dynamic_module_type_module_buffer,
    usize,
    u64,
) -> envoy_dynamic_module_type_metrics_result;

/// A header we hand to Envoy (`{key_ptr, key_length, value_ptr, value_length}`).
pub type ModuleHeader = envoy_dynamic_module_type_module_http_header;

/// How starting an HTTP callout went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutStart {
    /// Started; its answer comes to `on_http_filter_http_callout_done` with this id.
    Started(u64),
    /// `:method`, `:path` or `:authority` is missing.
    MissingHeaders,
    ClusterNotFound,
    /// Envoy could not send it (no healthy host, say): it failed at once.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    fn raw(self) -> envoy_dynamic_module_type_log_level {
        match self {
            LogLevel::Trace => envoy_dynamic_module_type_log_level_Trace,
            LogLevel::Debug => envoy_dynamic_module_type_log_level_Debug,
            LogLevel::Info => envoy_dynamic_module_type_log_level_Info,
            LogLevel::Warn => envoy_dynamic_module_type_log_level_Warn,
            LogLevel::Error => envoy_dynamic_module_type_log_level_Error,
            LogLevel::Critical => envoy_dynamic_module_type_log_level_Critical,
        }
    }
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
    pub(crate) fn headers(self) -> envoy_dynamic_module_type_on_http_filter_headers_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_headers_status_Continue,
            _ => envoy_dynamic_module_type_on_http_filter_headers_status_StopIteration,
        }
    }

    pub(crate) fn body(self) -> envoy_dynamic_module_type_on_http_filter_body_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_body_status_Continue,
            Status::StopAndBuffer => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndBuffer,
            Status::StopAndWatermark => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndWatermark,
            Status::StopNoBuffer => envoy_dynamic_module_type_on_http_filter_body_status_StopIterationNoBuffer,
        }
    }

    pub(crate) fn trailers(self) -> envoy_dynamic_module_type_on_http_filter_trailers_status {
        match self {
            Status::Continue => envoy_dynamic_module_type_on_http_filter_trailers_status_Continue,
            _ => envoy_dynamic_module_type_on_http_filter_trailers_status_StopIteration,
        }
    }
}

/// Bytes owned by Envoy (`{ptr, length}`), valid until Envoy changes what
/// they belong to or the hook returns: copy them at once.
pub type EnvoyBuffer = envoy_dynamic_module_type_envoy_buffer;

/// A header as Envoy hands it out (`{key_ptr, key_length, value_ptr,
/// value_length}`), valid like an [`EnvoyBuffer`].
pub type EnvoyHeader = envoy_dynamic_module_type_envoy_http_header;

pub const EMPTY_BUFFER: EnvoyBuffer = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };

/// A metadata value: strings are Envoy's bytes (an [`EnvoyBuffer`]).
pub enum MetaValue {
    Str(EnvoyBuffer),
    Number(f64),
    Bool(bool),
}

/// A metadata value to store.
pub enum NewMetaValue<'a> {
    Str(&'a [u8]),
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

pub(crate) fn copy_envoy_buffer(buffer: &EnvoyBuffer) -> Vec<u8> {
    // SAFETY: Envoy hands out buffers readable for `length` bytes until the
    // current hook returns; we copy them at once.
    unsafe { c_slice(buffer.ptr as *const u8, buffer.length) }.to_vec()
}

/// A C array (from Envoy or from Lua) as a slice; empty for NULL or length 0.
///
/// # Safety
/// A non-NULL `ptr` points to `len` initialized elements that stay alive and
/// unchanged for `'a`.
pub unsafe fn c_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// [`c_slice`], writable.
///
/// # Safety
/// A non-NULL `ptr` points to `len` initialized elements that nothing else
/// reads or writes for `'a`.
pub unsafe fn c_slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if ptr.is_null() || len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: no arguments but the level; thread-safe.
    unsafe { envoy_dynamic_module_callback_log_enabled(level.raw()) }
}

pub fn log(level: LogLevel, message: &str) {
    log_bytes(level, message.as_bytes())
}

pub fn log_bytes(level: LogLevel, message: &[u8]) {
    if log_enabled(level) {
        // SAFETY: Envoy only reads the message during the call; logging is thread-safe.
        unsafe { envoy_dynamic_module_callback_log(level.raw(), module_buffer(message)) }
    }
}

/// A kind of metric a filter config defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What to do to a metric.
#[derive(Clone, Copy, Debug)]
pub enum MetricUpdate {
    /// A counter or gauge goes up.
    Add(u64),
    /// A gauge goes down.
    Sub(u64),
    /// A gauge is set.
    Set(u64),
    /// A histogram records a value.
    Record(u64),
}

/// Envoy's side of a filter config, during `on_http_filter_config_new` only
/// (metrics can be defined then, not later).
#[derive(Clone, Copy)]
pub struct EnvoyConfig(envoy_dynamic_module_type_http_filter_config_envoy_ptr);

impl EnvoyConfig {
    /// Wraps the pointer Envoy passed to `on_http_filter_config_new`.
    pub fn new(ptr: envoy_dynamic_module_type_http_filter_config_envoy_ptr) -> EnvoyConfig {
        EnvoyConfig(ptr)
    }

    /// Defines metric `name` with tags `labels`; its id, or `None` if Envoy refused.
    pub fn define_metric(self, kind: MetricKind, name: &[u8], labels: &[&[u8]]) -> Option<usize> {
        let mut labels: Vec<_> = labels.iter().map(|label| module_buffer(label)).collect();
        let (labels_ptr, labels_len) = (labels.as_mut_ptr(), labels.len());
        let define = match kind {
            MetricKind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
            MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
            MetricKind::Histogram => envoy_dynamic_module_callback_http_filter_config_define_histogram,
        };
        let mut id = 0usize;
        // SAFETY: the pointer is the live config being created (type contract);
        // `name` and `labels` are read during the call; `id` is a writable local.
        let result = unsafe { define(self.0, module_buffer(name), labels_ptr, labels_len, &mut id) };
        (result == envoy_dynamic_module_type_metrics_result_Success).then_some(id)
    }
}

/// Envoy's side of one stream's filter.
///
/// Valid from `on_http_filter_new` until `on_http_filter_destroy`, on the
/// stream's worker thread only. Whoever keeps one must stop handing it out
/// at destroy (the stream does), so safe code never sees a dangling one.
#[derive(Clone, Copy)]
pub struct EnvoyFilter(envoy_dynamic_module_type_http_filter_envoy_ptr);

// Every method below relies on the type's contract: `self.0` is a live filter
// and we are on its worker thread, inside a hook.
impl EnvoyFilter {
    /// Wraps the pointer Envoy passed to `on_http_filter_new`.
    pub fn new(ptr: envoy_dynamic_module_type_http_filter_envoy_ptr) -> EnvoyFilter {
        EnvoyFilter(ptr)
    }

    /// How many values header `key` has, and the one at `index` if any.
    pub fn header(self, kind: HeaderKind, key: &[u8], index: usize) -> (usize, Option<EnvoyBuffer>) {
        let mut value = EMPTY_BUFFER;
        let mut count = 0usize;
        // SAFETY: type contract; `value` and `count` are writable locals.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind.raw(),
                module_buffer(key),
                &mut value,
                index,
                &mut count,
            )
        };
        (count, found.then_some(value))
    }

    /// How many headers (pseudo-headers included) the map holds.
    pub fn header_count(self, kind: HeaderKind) -> usize {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, kind.raw()) }
    }

    /// Fills `out` with every header in order; false if the map is missing
    /// or `out` has no room for all of them ([`Self::header_count`]).
    pub fn fill_headers(self, kind: HeaderKind, out: &mut [EnvoyHeader]) -> bool {
        if out.len() < self.header_count(kind) {
            return false;
        }
        // SAFETY: type contract; `out` has room for every header Envoy writes.
        unsafe { envoy_dynamic_module_callback_http_get_headers(self.0, kind.raw(), out.as_mut_ptr()) }
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

    pub fn send_response<'h>(
        self,
        status: u32,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
        body: &[u8],
        details: &str,
    ) {
        let mut raw: Vec<envoy_dynamic_module_type_module_http_header> = headers
            .into_iter()
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

    /// How many chunks the body buffer holds.
    pub fn body_chunk_count(self, dir: Direction, kind: BodyKind) -> usize {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type(dir, kind)) }
    }

    /// Fills `out` with the body's chunks; false if `out` has no room for
    /// all of them ([`Self::body_chunk_count`]) or there is no body.
    pub fn fill_body_chunks(self, dir: Direction, kind: BodyKind, out: &mut [EnvoyBuffer]) -> bool {
        if out.len() < self.body_chunk_count(dir, kind) {
            return false;
        }
        // SAFETY: type contract; `out` has room for every chunk Envoy writes.
        unsafe { envoy_dynamic_module_callback_http_get_body_chunks(self.0, body_type(dir, kind), out.as_mut_ptr()) }
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

    pub fn set_dynamic_metadata(self, ns: &[u8], key: &[u8], value: &NewMetaValue) {
        let (ns, key) = (module_buffer(ns), module_buffer(key));
        // SAFETY: type contract; Envoy copies the buffers during the call.
        unsafe {
            match value {
                NewMetaValue::Str(s) => {
                    envoy_dynamic_module_callback_http_set_dynamic_metadata_string(self.0, ns, key, module_buffer(s))
                }
                NewMetaValue::Number(n) => {
                    envoy_dynamic_module_callback_http_set_dynamic_metadata_number(self.0, ns, key, *n)
                }
                NewMetaValue::Bool(b) => {
                    envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(self.0, ns, key, *b)
                }
            }
        }
    }

    /// A string, number or bool value of `source` metadata (other types: `None`).
    pub fn metadata(self, source: MetadataSource, ns: &[u8], key: &[u8]) -> Option<MetaValue> {
        let (source, ns, key) = (source.raw(), module_buffer(ns), module_buffer(key));
        let mut text = EMPTY_BUFFER;
        let mut number = 0f64;
        let mut flag = false;
        // SAFETY: type contract; the out-parameters are writable locals.
        unsafe {
            if envoy_dynamic_module_callback_http_get_metadata_string(self.0, source, ns, key, &mut text) {
                return Some(MetaValue::Str(text));
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

    /// How many keys namespace `ns` of `source` has.
    pub fn metadata_key_count(self, source: MetadataSource, ns: &[u8]) -> usize {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_metadata_keys_count(self.0, source.raw(), module_buffer(ns)) }
    }

    /// Fills `out` with the namespace's keys; false if `out` has no room for
    /// all of them ([`Self::metadata_key_count`]).
    pub fn fill_metadata_keys(self, source: MetadataSource, ns: &[u8], out: &mut [EnvoyBuffer]) -> bool {
        if out.len() < self.metadata_key_count(source, ns) {
            return false;
        }
        // SAFETY: type contract; `out` has room for every key Envoy writes.
        unsafe {
            envoy_dynamic_module_callback_http_get_metadata_keys(self.0, source.raw(), module_buffer(ns), out.as_mut_ptr())
        }
    }

    pub fn attribute(self, attribute: Attribute) -> Option<EnvoyBuffer> {
        let mut value = EMPTY_BUFFER;
        // SAFETY: type contract; `value` is a writable local.
        unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, attribute.raw(), &mut value) }
            .then_some(value)
    }

    /// Whether the downstream peer presented a TLS certificate (`None`: not TLS).
    pub fn peer_certificate_presented(self) -> Option<bool> {
        let mut value = false;
        // SAFETY: type contract; `value` is a writable local.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_bool(
                self.0,
                envoy_dynamic_module_type_attribute_id_ConnectionMtls,
                &mut value,
            )
        }
        .then_some(value)
    }

    /// How many elements the list at `ns`/`key` of `source` has (`None`: not a list).
    pub fn metadata_list_len(self, source: MetadataSource, ns: &[u8], key: &[u8]) -> Option<usize> {
        let mut len = 0usize;
        // SAFETY: type contract; `len` is a writable local.
        unsafe {
            envoy_dynamic_module_callback_http_get_metadata_list_size(
                self.0,
                source.raw(),
                module_buffer(ns),
                module_buffer(key),
                &mut len,
            )
        }
        .then_some(len)
    }

    /// Element `index` of the list at `ns`/`key` of `source`, if it is a
    /// string, number or bool.
    pub fn metadata_list_item(self, source: MetadataSource, ns: &[u8], key: &[u8], index: usize) -> Option<MetaValue> {
        let (source, ns, key) = (source.raw(), module_buffer(ns), module_buffer(key));
        let mut text = EMPTY_BUFFER;
        let mut number = 0f64;
        let mut flag = false;
        // SAFETY: type contract; the out-parameters are writable locals.
        unsafe {
            if envoy_dynamic_module_callback_http_get_metadata_list_string(self.0, source, ns, key, index, &mut text) {
                return Some(MetaValue::Str(text));
            }
            if envoy_dynamic_module_callback_http_get_metadata_list_number(self.0, source, ns, key, index, &mut number)
            {
                return Some(MetaValue::Number(number));
            }
            if envoy_dynamic_module_callback_http_get_metadata_list_bool(self.0, source, ns, key, index, &mut flag) {
                return Some(MetaValue::Bool(flag));
            }
        }
        None
    }

    /// How many namespaces `source` metadata has.
    pub fn metadata_namespace_count(self, source: MetadataSource) -> usize {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_get_metadata_namespaces_count(self.0, source.raw()) }
    }

    /// Fills `out` with the namespaces' names; false if `out` has no room for
    /// all of them ([`Self::metadata_namespace_count`]).
    pub fn fill_metadata_namespaces(self, source: MetadataSource, out: &mut [EnvoyBuffer]) -> bool {
        if out.len() < self.metadata_namespace_count(source) {
            return false;
        }
        // SAFETY: type contract; `out` has room for every name Envoy writes.
        unsafe { envoy_dynamic_module_callback_http_get_metadata_namespaces(self.0, source.raw(), out.as_mut_ptr()) }
    }

    /// Merges `serialized`, a google.protobuf.Struct in protobuf's wire
    /// format, into dynamic metadata namespace `ns`.
    pub fn merge_dynamic_metadata(self, ns: &[u8], serialized: &[u8]) {
        // SAFETY: type contract; Envoy copies the buffers during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
                self.0,
                module_buffer(ns),
                module_buffer(serialized),
            )
        }
    }

    /// Stores `value` as filter state `key`: a string object, or (`typed`)
    /// the object the factory registered for `key` makes of it; false if
    /// Envoy refused (no such factory, a read-only object of that name).
    pub fn set_filter_state(self, key: &[u8], value: &[u8], typed: bool) -> bool {
        let (key, value) = (module_buffer(key), module_buffer(value));
        // SAFETY: type contract; Envoy copies the buffers during the call.
        unsafe {
            if typed {
                envoy_dynamic_module_callback_http_set_filter_state_typed(self.0, key, value)
            } else {
                envoy_dynamic_module_callback_http_set_filter_state_bytes(self.0, key, value)
            }
        }
    }

    /// Filter state object `key`, serialized as a string.
    pub fn filter_state(self, key: &[u8]) -> Option<EnvoyBuffer> {
        let mut value = EMPTY_BUFFER;
        // SAFETY: type contract; `value` is a writable local.
        unsafe { envoy_dynamic_module_callback_http_get_filter_state_typed(self.0, module_buffer(key), &mut value) }
            .then_some(value)
    }

    /// Updates metric `id` (of `kind`, with tag values `labels`); false if
    /// Envoy refused.
    pub fn update_metric(self, kind: MetricKind, id: usize, labels: &[&[u8]], update: MetricUpdate) -> bool {
        let mut labels: Vec<_> = labels.iter().map(|label| module_buffer(label)).collect();
        let (labels_ptr, labels_len) = (labels.as_mut_ptr(), labels.len());
        let (update, value) = match (kind, update) {
            (MetricKind::Counter, MetricUpdate::Add(v)) => (envoy_dynamic_module_callback_http_filter_increment_counter as Update, v),
            (MetricKind::Gauge, MetricUpdate::Add(v)) => (envoy_dynamic_module_callback_http_filter_increment_gauge as Update, v),
            (MetricKind::Gauge, MetricUpdate::Sub(v)) => (envoy_dynamic_module_callback_http_filter_decrement_gauge as Update, v),
            (MetricKind::Gauge, MetricUpdate::Set(v)) => (envoy_dynamic_module_callback_http_filter_set_gauge as Update, v),
            (MetricKind::Histogram, MetricUpdate::Record(v)) => {
                (envoy_dynamic_module_callback_http_filter_record_histogram_value as Update, v)
            }
            _ => return false,
        };
        // SAFETY: type contract; `labels` is read during the call.
        let result = unsafe { update(self.0, id, labels_ptr, labels_len, value) };
        result == envoy_dynamic_module_type_metrics_result_Success
    }

    /// Makes Envoy select the route again (next time it is needed).
    pub fn clear_route_cache(self) {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.0) }
    }

    /// Asks the load balancer for `host` ("ip" or "ip:port"); false if it is not an address.
    pub fn set_upstream_override_host(self, host: &[u8], strict: bool) -> bool {
        // SAFETY: type contract; Envoy copies `host` during the call.
        unsafe { envoy_dynamic_module_callback_http_set_upstream_override_host(self.0, module_buffer(host), strict) }
    }

    /// Starts an HTTP request to `cluster` (0 ms: no timeout).
    pub fn http_callout(self, cluster: &[u8], headers: &mut [ModuleHeader], body: &[u8], timeout_ms: u64) -> CalloutStart {
        let mut id = 0u64;
        // SAFETY: type contract; `headers` and the buffers are read during the
        // call only; `id` is a writable local.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.0,
                &mut id,
                module_buffer(cluster),
                headers.as_mut_ptr(),
                headers.len(),
                module_buffer(body),
                timeout_ms,
            )
        };
        if result == envoy_dynamic_module_type_http_callout_init_result_Success {
            CalloutStart::Started(id)
        } else if result == envoy_dynamic_module_type_http_callout_init_result_MissingRequiredHeaders {
            CalloutStart::MissingHeaders
        } else if result == envoy_dynamic_module_type_http_callout_init_result_ClusterNotFound {
            CalloutStart::ClusterNotFound
        } else {
            CalloutStart::Failed
        }
    }

    /// The downstream peer's address as `ip:port`, before any XFF rewriting.
    pub fn direct_remote_address(self) -> Option<EnvoyBuffer> {
        let mut address = EMPTY_BUFFER;
        // SAFETY: type contract; `address` is a writable local.
        unsafe { envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(self.0, &mut address) }
            .then_some(address)
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

    /// The module's own most specific per-route config of the stream's
    /// route (what `on_http_filter_per_route_config_new` returned), or NULL.
    pub fn route_config(self) -> *const std::ffi::c_void {
        // SAFETY: type contract.
        unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.0) }
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
