//! Benchmark peer (not shipped): the floor under our filter. An Envoy dynamic
//! module HTTP filter with no Lua that answers every request `hello`, either
//!
//! * `respond`: at once, from the request-headers hook; or
//! * `handoff`: after a round trip to a thread of its own, the least any
//!   design pays that answers on another thread, as resty_ffi does: a
//!   channel send that wakes the thread (it blocks in `recv`), the thread's
//!   answer, a scheduler commit (Envoy's dispatcher post) and the scheduled
//!   hook that sends the reply;
//! * `hop`: the same round trip, then the request goes on to the next filter
//!   (the stock Lua filter answering after it: the least a Lua filter making
//!   one call answered on another thread could cost).
//!
//! The filter config is a `google.protobuf.StringValue`: `respond`, `handoff` or `hop`.
//! `envoy_filter/bench/bench.py` runs all three beside the stock Lua filter and ours.

// The hooks are Envoy's to call, with pointers the ABI vouches for.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_char;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/envoy_abi.rs"));
}
use sys::*;

const ABI_VERSION: &[u8] = b"v0.2.0\0";
const ANSWER: &[u8] = b"hello";

type FilterEnvoyPtr = envoy_dynamic_module_type_http_filter_envoy_ptr;
type FilterModulePtr = envoy_dynamic_module_type_http_filter_module_ptr;
type ConfigModulePtr = envoy_dynamic_module_type_http_filter_config_module_ptr;

/// Envoy's scheduler of one stream; deleted when the stream and the
/// answering thread are both done with it.
struct Scheduler(envoy_dynamic_module_type_http_filter_scheduler_module_ptr);

// SAFETY: Envoy documents commit and delete as callable from any thread.
unsafe impl Send for Scheduler {}
// SAFETY: commit takes the scheduler by pointer and is thread-safe.
unsafe impl Sync for Scheduler {}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted exactly once, here (the last Arc).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// A request handed to the answering thread, and where its answer goes.
struct Job {
    request: Vec<u8>,
    answer: Arc<Mutex<Option<Vec<u8>>>>,
    scheduler: Arc<Scheduler>,
}

enum Config {
    Respond,
    /// Round trips to the answering thread; `reply`: answer with what it
    /// sent back, else let the request go on.
    Handoff { jobs: Sender<Job>, reply: bool },
}

struct Filter {
    config: *const Config,
    answer: Arc<Mutex<Option<Vec<u8>>>>,
    /// Kept until the filter is destroyed, so that a committed event still
    /// has its scheduler.
    scheduler: Option<Arc<Scheduler>>,
}

fn send_response(envoy: FilterEnvoyPtr, status: u32, body: &[u8]) {
    let buffer = |bytes: &[u8]| envoy_dynamic_module_type_module_buffer { ptr: bytes.as_ptr() as *const c_char, length: bytes.len() };
    // SAFETY: called from a hook of the live filter `envoy`; Envoy copies body
    // and details during the call.
    unsafe { envoy_dynamic_module_callback_http_send_response(envoy, status, std::ptr::null_mut(), 0, buffer(body), buffer(b"")) }
}

/// The answering thread: an echo, like the runtime ours calls.
fn answer_jobs(jobs: std::sync::mpsc::Receiver<Job>) {
    for job in jobs {
        *job.answer.lock().unwrap() = Some(job.request);
        // SAFETY: the scheduler lives while `job` holds its Arc; commit is thread-safe.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(job.scheduler.0, 0) }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr() as *const c_char
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _envoy: envoy_dynamic_module_type_http_filter_config_envoy_ptr,
    _name: envoy_dynamic_module_type_envoy_buffer,
    config: envoy_dynamic_module_type_envoy_buffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy's buffer is valid during the call.
    let text = unsafe { std::slice::from_raw_parts(config.ptr as *const u8, config.length) };
    let config = match text {
        b"respond" => Config::Respond,
        b"handoff" | b"hop" => {
            let (jobs, queue) = channel();
            std::thread::Builder::new().name("floor_answer".into()).spawn(move || answer_jobs(queue)).unwrap();
            Config::Handoff { jobs, reply: text == b"handoff" }
        }
        _ => return std::ptr::null(),
    };
    Box::into_raw(Box::new(config)) as ConfigModulePtr
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    // SAFETY: made by config_new; Envoy destroys it once, after its filters.
    // Dropping the sender ends the answering thread.
    drop(unsafe { Box::from_raw(config as *mut Config) });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: envoy_dynamic_module_type_envoy_buffer,
    _config: envoy_dynamic_module_type_envoy_buffer,
) -> envoy_dynamic_module_type_http_filter_per_route_config_module_ptr {
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: envoy_dynamic_module_type_http_filter_per_route_config_module_ptr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: ConfigModulePtr, _envoy: FilterEnvoyPtr) -> FilterModulePtr {
    let filter = Filter { config: config as *const Config, answer: Arc::default(), scheduler: None };
    Box::into_raw(Box::new(filter)) as FilterModulePtr
}

/// # Safety
/// `ptr` came from `on_http_filter_new` and was not destroyed.
unsafe fn filter<'a>(ptr: FilterModulePtr) -> &'a mut Filter {
    // SAFETY: the caller's contract; Envoy calls a filter's hooks on one thread.
    unsafe { &mut *(ptr as *mut Filter) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> envoy_dynamic_module_type_on_http_filter_headers_status {
    // SAFETY: Envoy passes a live filter of ours.
    let filter = unsafe { filter(ptr) };
    // SAFETY: the config outlives its filters.
    match unsafe { &*filter.config } {
        Config::Respond => send_response(envoy, 200, ANSWER),
        Config::Handoff { jobs, .. } => {
            // SAFETY: made on the worker thread during a hook of the live filter.
            let scheduler = Arc::new(Scheduler(unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(envoy) }));
            filter.scheduler = Some(Arc::clone(&scheduler));
            let job = Job { request: ANSWER.to_vec(), answer: Arc::clone(&filter.answer), scheduler };
            if jobs.send(job).is_err() {
                send_response(envoy, 500, b"the answering thread is gone");
            }
        }
    }
    envoy_dynamic_module_type_on_http_filter_headers_status_StopIteration
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(envoy: FilterEnvoyPtr, ptr: FilterModulePtr, _event_id: u64) {
    // SAFETY: Envoy passes a live filter of ours.
    let filter = unsafe { filter(ptr) };
    let answer = filter.answer.lock().unwrap().take();
    // SAFETY: the config outlives its filters.
    let reply = matches!(unsafe { &*filter.config }, Config::Handoff { reply: true, .. });
    match answer {
        Some(answer) if reply => send_response(envoy, 200, &answer),
        // SAFETY: the request-headers hook returned StopIteration.
        Some(_) => unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(envoy) },
        None => {}
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(ptr: FilterModulePtr) {
    // SAFETY: made by filter_new; Envoy destroys it once, after its last hook.
    drop(unsafe { Box::from_raw(ptr as *mut Filter) });
}

// The hooks Envoy requires and this filter has no use for: each takes the
// stream's two pointers, then `args`, and returns `value`.
macro_rules! unused_hooks {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty = $value:expr)?;)*) => {$(
        #[no_mangle]
        #[allow(unused_variables)]
        pub extern "C" fn $name(_envoy: FilterEnvoyPtr, _filter: FilterModulePtr $(, $arg: $ty)*) $(-> $ret)? {
            $($value)?
        }
    )*};
}

type BodyStatus = envoy_dynamic_module_type_on_http_filter_body_status;
type HeadersStatus = envoy_dynamic_module_type_on_http_filter_headers_status;
type TrailersStatus = envoy_dynamic_module_type_on_http_filter_trailers_status;
type Headers = *mut envoy_dynamic_module_type_envoy_http_header;

unused_hooks! {
    fn envoy_dynamic_module_on_http_filter_request_body(end_of_stream: bool)
        -> BodyStatus = envoy_dynamic_module_type_on_http_filter_body_status_Continue;
    fn envoy_dynamic_module_on_http_filter_request_trailers()
        -> TrailersStatus = envoy_dynamic_module_type_on_http_filter_trailers_status_Continue;
    fn envoy_dynamic_module_on_http_filter_response_headers(end_of_stream: bool)
        -> HeadersStatus = envoy_dynamic_module_type_on_http_filter_headers_status_Continue;
    fn envoy_dynamic_module_on_http_filter_response_body(end_of_stream: bool)
        -> BodyStatus = envoy_dynamic_module_type_on_http_filter_body_status_Continue;
    fn envoy_dynamic_module_on_http_filter_response_trailers()
        -> TrailersStatus = envoy_dynamic_module_type_on_http_filter_trailers_status_Continue;
    fn envoy_dynamic_module_on_http_filter_stream_complete();
    fn envoy_dynamic_module_on_http_filter_http_callout_done(
        callout_id: u64, result: envoy_dynamic_module_type_http_callout_result, headers: Headers,
        headers_size: usize, body_chunks: *mut envoy_dynamic_module_type_envoy_buffer, body_chunks_size: usize);
    fn envoy_dynamic_module_on_http_filter_http_stream_headers(
        stream_id: u64, headers: Headers, headers_size: usize, end_stream: bool);
    fn envoy_dynamic_module_on_http_filter_http_stream_data(
        stream_id: u64, data: *const envoy_dynamic_module_type_envoy_buffer, data_count: usize, end_stream: bool);
    fn envoy_dynamic_module_on_http_filter_http_stream_trailers(stream_id: u64, trailers: Headers, trailers_size: usize);
    fn envoy_dynamic_module_on_http_filter_http_stream_complete(stream_id: u64);
    fn envoy_dynamic_module_on_http_filter_http_stream_reset(
        stream_id: u64, reason: envoy_dynamic_module_type_http_stream_reset_reason);
    fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark();
    fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark();
}
