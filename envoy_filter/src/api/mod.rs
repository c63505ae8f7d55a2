//! The Lua objects a script sees, one pair of files per object: the object in
//! Lua (`headers.lua`, …) and the functions it calls in Rust (`headers.rs`, …),
//! reached through LuaJIT's FFI, like lua-resty-core over lua-nginx-module.
//!
//! Why FFI and not Lua C functions: on the Envoy binary's LuaJIT, a Lua error
//! unwinding through a Rust frame aborts the process. FFI functions never
//! raise: they return a status and the Lua side raises. (LuaJIT also compiles
//! FFI calls, which it cannot do for Lua C functions.)
//!
//! Uses the `abi` and `vm` layers below; knows nothing of the stream state
//! machine above, which owns a [`StreamCtx`] and decides when Lua runs.

pub mod body;
pub mod crypto;
pub mod ffi;
pub mod headers;
pub mod http_call;
pub mod log;
pub mod metadata;
pub mod reply;
pub mod routing;
pub mod shdict;
pub mod stats;
pub mod stream_info;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

use mlua::{Function, LightUserData, Lua, Table};
use resty_ffi::host_abi::resty_ffi_sink;
use resty_ffi::shdict::SharedDict;

use crate::abi::{c_slice, Direction, EnvoyFilter};
use ffi::Sink;
use stats::Metrics;

/// How far the body of one direction has arrived.
#[derive(Default)]
pub struct BodyState {
    /// The headers came with end_of_stream: there is no body.
    headers_only: Cell<bool>,
    /// The last body chunk (or the trailers) arrived.
    complete: Cell<bool>,
    /// The trailers arrived.
    trailers: Cell<bool>,
    /// Inside a body hook: part of the body is still in the "received" chunk.
    in_body_hook: Cell<bool>,
    /// Inside a body hook whose chunk `bodyChunks()` has not handed out yet.
    fresh_chunk: Cell<bool>,
    /// The headers went on to the next filter.
    headers_continued: Cell<bool>,
    /// Body data arrived while the script was not waiting for an answer of
    /// a runtime (the stock filter's "saw body": `body()` after that finds
    /// the body streamed, `bodyChunks()` finds its processing begun).
    seen: Cell<bool>,
}

impl BodyState {
    pub fn headers_arrived(&self, end_of_stream: bool) {
        self.headers_only.set(end_of_stream);
        self.complete.set(end_of_stream);
    }

    pub fn set_complete(&self) {
        self.complete.set(true);
    }

    pub fn is_complete(&self) -> bool {
        self.complete.get()
    }

    pub fn is_headers_only(&self) -> bool {
        self.headers_only.get()
    }

    /// Whether a body hook runs (its chunk is not in the buffered body yet).
    pub fn is_in_body_hook(&self) -> bool {
        self.in_body_hook.get()
    }

    pub fn data_seen(&self) {
        self.seen.set(true);
    }

    pub fn is_data_seen(&self) -> bool {
        self.seen.get()
    }

    pub fn headers_continued(&self) {
        self.headers_continued.set(true);
    }

    pub fn are_headers_continued(&self) -> bool {
        self.headers_continued.get()
    }

    pub fn trailers_arrived(&self) {
        self.trailers.set(true);
        self.complete.set(true);
    }

    pub fn has_trailers(&self) -> bool {
        self.trailers.get()
    }

    /// Runs `f` inside a body hook (its chunk is not in the buffered body yet).
    pub fn in_body_hook<T>(&self, f: impl FnOnce() -> T) -> T {
        self.in_body_hook.set(true);
        self.fresh_chunk.set(true);
        let result = f();
        self.in_body_hook.set(false);
        self.fresh_chunk.set(false);
        result
    }

    /// Hands out the body hook's chunk once: true if it was not handed out yet.
    pub fn take_chunk(&self) -> bool {
        self.fresh_chunk.replace(false)
    }
}

/// The per-stream state the Lua objects of one stream work on. Lua holds its
/// id ([`StreamCtx::to_lua`]), not a reference: once the stream is gone the
/// id finds nothing, and every call on a handle Lua kept fails (Lua raises
/// "object used outside of proper scope").
///
/// Thread contract: lives on the stream's worker thread. No `RefCell` borrow
/// is held while calling into Envoy or Lua (either may re-enter the stream).
pub struct StreamCtx {
    /// What Lua calls it by; unique on its worker thread.
    id: StreamId,
    /// Envoy's filter; `None` once the stream is gone (detached).
    envoy: Cell<Option<EnvoyFilter>>,
    sink: RefCell<Option<Sink>>,
    request: BodyState,
    response: BodyState,
    /// A function of ours panicked while Lua called it: fail the stream closed.
    panicked: Cell<bool>,
    /// Changing request headers re-selects the route (`clear_route_cache`).
    pub clear_route_cache: bool,
    /// The filter config's metrics.
    pub metrics: Arc<Metrics>,
    /// The HTTP callout each direction's coroutine waits for.
    callouts: [Cell<Option<Callout>>; 2],
    /// The reply `respond()` staged (reply::stage), until it is sent.
    staged_reply: RefCell<Option<reply::LocalReply>>,
    /// Whether `respond()` stages its reply: not when envoy_on_response runs
    /// over the reply table, which is read back from Lua then.
    stages_replies: Cell<bool>,
    /// Lua made the stream's store (`api.lua`), which it forgets when the
    /// stream ends.
    made_store: Cell<bool>,
}

/// An HTTP callout a coroutine waits for.
#[derive(Clone, Copy)]
pub struct Callout {
    pub id: u64,
    /// `return_duplicate_headers`: repeated headers come back as lists.
    pub duplicate_headers: bool,
}

fn index(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl StreamCtx {
    /// A stream's state, found by its id until it is detached.
    pub fn new(envoy: EnvoyFilter, clear_route_cache: bool, metrics: Arc<Metrics>) -> Rc<StreamCtx> {
        let id = NEXT_STREAM_ID.with(|next| next.replace(next.get() + 1));
        let ctx = Rc::new(StreamCtx {
            id,
            envoy: Cell::new(Some(envoy)),
            sink: RefCell::new(None),
            request: BodyState::default(),
            response: BodyState::default(),
            panicked: Cell::new(false),
            clear_route_cache,
            metrics,
            callouts: [Cell::new(None), Cell::new(None)],
            staged_reply: RefCell::new(None),
            stages_replies: Cell::new(true),
            made_store: Cell::new(false),
        });
        STREAMS.with(|streams| streams.borrow_mut().insert(id, Rc::clone(&ctx)));
        ctx
    }

    /// `dir`'s coroutine will wait for `callout`.
    pub fn await_callout(&self, dir: Direction, callout: Callout) {
        self.callouts[index(dir)].set(Some(callout));
    }

    /// The direction waiting for callout `id`, and how (none: an
    /// asynchronous call nobody waits for).
    pub fn take_callout(&self, id: u64) -> Option<(Direction, Callout)> {
        [Direction::Request, Direction::Response].into_iter().find_map(|dir| {
            let slot = &self.callouts[index(dir)];
            match slot.get() {
                Some(callout) if callout.id == id => slot.take().map(|c| (dir, c)),
                _ => None,
            }
        })
    }

    pub fn stage_reply(&self, reply: reply::LocalReply) {
        *self.staged_reply.borrow_mut() = Some(reply);
    }

    /// The reply `respond()` staged, if any (taken).
    pub fn take_staged_reply(&self) -> Option<reply::LocalReply> {
        self.staged_reply.borrow_mut().take()
    }

    /// Local replies go through envoy_on_response, which reads them from Lua.
    pub fn stop_staging_replies(&self) {
        self.stages_replies.set(false);
    }

    pub fn stages_replies(&self) -> bool {
        self.stages_replies.get()
    }

    /// Whether Lua made the stream's store and it is still to be forgotten
    /// (true once).
    pub fn take_made_store(&self) -> bool {
        self.made_store.replace(false)
    }

    /// Envoy's filter while the stream lives.
    pub fn envoy(&self) -> Option<EnvoyFilter> {
        self.envoy.get()
    }

    pub fn is_detached(&self) -> bool {
        self.envoy.get().is_none()
    }

    /// The stream is gone: nothing may reach Envoy through it any more, and
    /// answers arriving later are freed by the core.
    pub fn detach(&self) {
        self.envoy.set(None);
        let registered = STREAMS.with(|streams| streams.borrow_mut().remove(&self.id));
        drop(registered);
        let sink = self.sink.borrow_mut().take();
        drop(sink);
    }

    pub fn body(&self, dir: Direction) -> &BodyState {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// The stream's sink, created (with its scheduler) on first use.
    pub fn sink_ptr(&self) -> Option<*mut resty_ffi_sink> {
        let envoy = self.envoy()?;
        let mut sink = self.sink.borrow_mut();
        Some(sink.get_or_insert_with(|| Sink::new(envoy.new_scheduler())).as_ptr())
    }

    /// The sink, if a call created one.
    pub fn existing_sink(&self) -> Option<*mut resty_ffi_sink> {
        self.sink.borrow().as_ref().map(Sink::as_ptr)
    }

    /// Whether one of our functions panicked under Lua (and clears it).
    pub fn take_panicked(&self) -> bool {
        self.panicked.replace(false)
    }

    /// The id Lua passes to the FFI functions, as a Lua number (exact:
    /// ids stay below 2^53).
    pub fn to_lua(&self) -> f64 {
        self.id as f64
    }
}

// ------------------------------------------------------------ FFI helpers --

/// What the FFI functions return besides their results.
pub const GONE: c_int = -1;
/// A function panicked (the stream fails closed after Lua yields).
pub const PANICKED: c_int = -2;
/// The headers went on already: they cannot change any more.
pub const CONTINUED: c_int = -4;

/// A `{pointer, length}` pair as Lua sees it (`resty_ffi_envoy_buf`): the
/// layout of Envoy's own buffers, which are handed to Lua as they are.
pub type Buf = crate::abi::EnvoyBuffer;

/// The bytes of a `(pointer, length)` argument from Lua.
///
/// # Safety
/// `ptr` is NULL (then `len` is ignored) or readable for `len` bytes during the call.
pub unsafe fn bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    // SAFETY: the caller's contract (Lua passes strings it holds).
    unsafe { c_slice(ptr as *const u8, len) }
}

/// What Lua holds for a stream: an id, never reused on its worker thread.
/// Lua keeps no reference (no `ffi.gc` finalizer per stream, which cost
/// LuaJIT's collector several µs per request).
pub type StreamId = u64;

/// Hashes stream ids, which are distinct integers already.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Required by `Hasher`; the map's keys are `u64`s, hashed by `write_u64`.
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("IdHasher hashes u64 stream ids only")
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

thread_local! {
    /// The streams of this worker thread that are not detached, by id.
    static STREAMS: RefCell<HashMap<StreamId, Rc<StreamCtx>, BuildHasherDefault<IdHasher>>> =
        RefCell::new(HashMap::default());
    static NEXT_STREAM_ID: Cell<StreamId> = const { Cell::new(1) };
}

/// Runs an FFI function on stream `id`: `GONE` once the stream ended (or
/// for an id that is no stream's), `PANICKED` (and the stream marked) if `f`
/// panics; never unwinds.
pub fn with_stream(id: StreamId, f: impl FnOnce(&StreamCtx, EnvoyFilter) -> c_int) -> c_int {
    let Some(ctx) = STREAMS.with(|streams| streams.borrow().get(&id).cloned()) else { return GONE };
    let Some(envoy) = ctx.envoy() else { return GONE };
    catch_unwind(AssertUnwindSafe(|| f(&ctx, envoy))).unwrap_or_else(|_| {
        ctx.panicked.set(true);
        PANICKED
    })
}

/// Lua made the store of stream `ctx` (`api.lua`): forget it at the stream's end.
///
/// # Safety
/// None: `unsafe` only for the function table.
pub unsafe extern "C" fn store_made(ctx: StreamId) -> c_int {
    with_stream(ctx, |ctx, _| {
        ctx.made_store.set(true);
        1
    })
}

/// The C type of a Rust type in the generated `ffi.cdef`.
pub trait CType {
    const C: &'static str;
}

macro_rules! c_types {
    ($($rust:ty => $c:literal),* $(,)?) => { $(impl CType for $rust { const C: &'static str = $c; })* };
}

c_types! {
    c_int => "int",
    usize => "size_t",
    u32 => "uint32_t",
    f64 => "double",
    *const c_char => "const char *",
    *const headers::Header => "const resty_ffi_envoy_header *",
    *mut Buf => "resty_ffi_envoy_buf *",
    *mut headers::Header => "resty_ffi_envoy_header *",
    *mut f64 => "double *",
    *mut c_int => "int *",
    StreamId => "uint64_t",
    *mut c_void => "void *",
}

/// Declares the function table Lua calls (`resty_ffi_envoy_api`) from the
/// functions' Rust signatures, and its `ffi.cdef` from the same list.
macro_rules! api_table {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty = $path:path;)*) => {
        #[repr(C)]
        pub struct Api {
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        static API: Api = Api { $($name: $path,)* };

        /// The C declarations of the table, for `ffi.cdef`.
        fn cdef() -> String {
            let mut cdef = String::from(
                "typedef struct { const char *ptr; size_t len; } resty_ffi_envoy_buf;\n\
                 typedef struct { const char *key; size_t key_len; const char *value; size_t value_len; } resty_ffi_envoy_header;\n\
                 typedef struct {\n",
            );
            $(
                let args: &[&str] = &[$(<$arg as CType>::C),*];
                let args = if args.is_empty() { "void".to_owned() } else { args.join(", ") };
                cdef.push_str(&format!("  {} (*{})({});\n", <$ret as CType>::C, stringify!($name), args));
            )*
            cdef.push_str("} resty_ffi_envoy_api;\n");
            cdef
        }
    };
}

api_table! {
    current_sink: fn() -> *mut c_void = ffi::current_sink;
    publish_stats: fn(*mut c_void, *const c_char, usize) -> c_int = ffi::publish_stats;
    log_enabled: fn(c_int) -> c_int = log::log_enabled;
    log: fn(c_int, *const c_char, usize) -> c_int = log::log;
    header_get: fn(StreamId, c_int, *const c_char, usize, usize, *mut Buf) -> c_int = headers::header_get;
    headers_count: fn(StreamId, c_int) -> c_int = headers::headers_count;
    headers_all: fn(StreamId, c_int, *mut headers::Header, usize) -> c_int = headers::headers_all;
    header_add: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize) -> c_int = headers::header_add;
    header_set: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize) -> c_int = headers::header_set;
    body_state: fn(StreamId, c_int) -> c_int = body::body_state;
    headers_continued: fn(StreamId, c_int) -> c_int = headers::headers_continued;
    store_made: fn(StreamId) -> c_int = store_made;
    reply_stage: fn(StreamId, c_int, *const headers::Header, usize, *const c_char, usize) -> c_int = reply::stage;
    next_chunk: fn(StreamId, c_int) -> c_int = body::next_chunk;
    trailers_state: fn(StreamId, c_int) -> c_int = body::trailers_state;
    body_chunks: fn(StreamId, c_int, c_int, *mut Buf, usize) -> c_int = body::body_chunks;
    body_set: fn(StreamId, c_int, c_int, *const c_char, usize) -> c_int = body::body_set;
    attribute: fn(StreamId, c_int, *mut Buf) -> c_int = stream_info::attribute;
    peer_certificate_presented: fn(StreamId) -> c_int = stream_info::peer_certificate_presented;
    filter_state_get: fn(StreamId, *const c_char, usize, *mut Buf) -> c_int = stream_info::filter_state_get;
    filter_state_set: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize) -> c_int = stream_info::filter_state_set;
    clear_route_cache: fn(StreamId) -> c_int = routing::clear_route_cache;
    set_upstream_override_host: fn(StreamId, *const c_char, usize, c_int) -> c_int = routing::set_upstream_override_host;
    http_call: fn(StreamId, c_int, c_int, *const c_char, usize, *mut headers::Header, usize, *const c_char, usize, f64) -> c_int = http_call::http_call;
    metadata_namespaces: fn(StreamId, c_int, *mut Buf, usize) -> c_int = metadata::metadata_namespaces;
    metadata_list_len: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize) -> c_int = metadata::metadata_list_len;
    metadata_list_item: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize, usize, *mut Buf, *mut f64) -> c_int = metadata::metadata_list_item;
    stat: fn(StreamId, c_int, *const c_char, usize, c_int, f64, *mut f64) -> c_int = stats::stat;
    metadata_merge: fn(StreamId, *const c_char, usize, *const c_char, usize) -> c_int = metadata::metadata_merge;
    metadata_keys: fn(StreamId, c_int, *const c_char, usize, *mut Buf, usize) -> c_int = metadata::metadata_keys;
    metadata_get: fn(StreamId, c_int, *const c_char, usize, *const c_char, usize, *mut Buf, *mut f64) -> c_int = metadata::metadata_get;
    public_key_valid: fn(*const c_char, usize) -> c_int = crypto::public_key_valid;
    verify_signature: fn(*const c_char, usize, *const c_char, usize, *const c_char, usize, *const c_char, usize) -> c_int = crypto::verify_signature;
    metadata_set: fn(StreamId, *const c_char, usize, *const c_char, usize, c_int, *const c_char, usize, f64) -> c_int = metadata::metadata_set;
    shdict_release: fn(*const SharedDict) -> c_int = shdict::release;
    shdict_get: fn(*const SharedDict, *const c_char, usize, c_int, *mut Buf, *mut f64, *mut c_int) -> c_int = shdict::get;
    shdict_store: fn(*const SharedDict, c_int, *const c_char, usize, c_int, *const c_char, usize, f64, f64, c_int, *mut c_int, *mut Buf) -> c_int = shdict::store;
    shdict_incr: fn(*const SharedDict, *const c_char, usize, *mut f64, c_int, f64, f64, *mut c_int, *mut Buf) -> c_int = shdict::incr;
    shdict_ttl: fn(*const SharedDict, *const c_char, usize, *mut f64) -> c_int = shdict::ttl;
    shdict_expire: fn(*const SharedDict, *const c_char, usize, f64) -> c_int = shdict::expire;
    shdict_flush_all: fn(*const SharedDict) -> c_int = shdict::flush_all;
    shdict_flush_expired: fn(*const SharedDict, c_int) -> c_int = shdict::flush_expired;
    shdict_get_keys: fn(*const SharedDict, c_int, *mut Buf) -> c_int = shdict::get_keys;
    shdict_push: fn(*const SharedDict, c_int, *const c_char, usize, c_int, *const c_char, usize, f64, *mut Buf) -> c_int = shdict::push;
    shdict_pop: fn(*const SharedDict, c_int, *const c_char, usize, *mut Buf, *mut f64) -> c_int = shdict::pop;
    shdict_llen: fn(*const SharedDict, *const c_char, usize, *mut Buf) -> c_int = shdict::llen;
    shdict_capacity: fn(*const SharedDict) -> usize = shdict::capacity;
    shdict_free_space: fn(*const SharedDict) -> usize = shdict::free_space;
}

/// The Lua modules of this layer, found by `require` (`package.preload`).
const LUA_MODULES: &[(&str, &str)] = &[
    ("resty_ffi.envoy.headers", include_str!("headers.lua")),
    ("resty_ffi.envoy.body", include_str!("body.lua")),
    ("resty_ffi.envoy.stream_info", include_str!("stream_info.lua")),
    ("resty_ffi.envoy.metadata", include_str!("metadata.lua")),
    ("resty_ffi.envoy.http_call", include_str!("http_call.lua")),
    ("resty_ffi.envoy.stats", include_str!("stats.lua")),
    ("resty_ffi.envoy.handle", include_str!("handle.lua")),
    ("resty_ffi.envoy", include_str!("ffi.lua")),
];

/// Makes this layer's Lua modules loadable in `lua` (the function table and
/// its cdef go to `resty_ffi.envoy.api`); returns the handle constructor,
/// `make_handle(ctx, dir, reply, namespace)` (handle.lua).
pub fn install(lua: &Lua) -> mlua::Result<Function> {
    let package: Table = lua.globals().get("package")?;
    let preload: Table = package.get("preload")?;
    for (name, source) in LUA_MODULES {
        let chunk = lua.load(*source).set_name(format!("={name}")).into_function()?;
        preload.set(*name, chunk)?;
    }
    let api = LightUserData(&API as *const Api as *mut c_void);
    let base: Table = lua.load(include_str!("api.lua")).set_name("=resty_ffi.envoy.api").call((api, cdef()))?;
    package.get::<Table>("loaded")?.set("resty_ffi.envoy.api", base)?;
    let require: Function = lua.globals().get("require")?;
    // Loaded now: resty_ffi.lua tells the host by package.loaded["resty_ffi.envoy"].
    require.call::<()>("resty_ffi.envoy")?;
    require.call("resty_ffi.envoy.handle")
}

/// As [`install`], for the VM in which a config's check runs the script's
/// top level once: `ngx.load_ffi` loads no runtime there.
pub fn install_for_check(lua: &Lua) -> mlua::Result<Function> {
    let make_handle = install(lua)?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.get::<Table>("resty_ffi.envoy")?.set("config_check", true)?;
    Ok(make_handle)
}
