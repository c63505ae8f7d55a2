//! One HTTP stream: runs `envoy_on_request` / `envoy_on_response` in
//! coroutines and turns their yields into Envoy stop/continue decisions.
//!
//! Thread contract: a [`Filter`] and its [`Stream`] live on the stream's worker
//! thread. No `RefCell` borrow is held while Lua runs or while calling into
//! Envoy, because either may re-enter this filter (a local reply runs our own
//! response hooks synchronously).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use mlua::thread::ThreadStatus;
use mlua::{MultiValue, Thread};

use crate::config::FilterConfig;
use crate::envoy::{log, BodyKind, EnvoyFilter, HeaderList, LogLevel, Status};
use crate::handle::RawHandle;
use crate::sink::Sink;
use crate::vm::{self, WorkerVm, Yield};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    Ffi,
    Body,
}

/// Where a coroutine is resumed from; decides the status a stop maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    Headers,
    Body,
    Trailers,
    Scheduled,
}

enum Outcome {
    Finished,
    Waiting(Wait),
    Responded,
    Failed(String),
}

/// The state of one direction (decoding or encoding) of a stream.
#[derive(Default)]
pub struct Phase {
    coroutine: RefCell<Option<Thread>>,
    wait: Cell<Option<Wait>>,
    /// A hook returned a stop status: call continue_* once the script is done.
    stopped: Cell<bool>,
    /// The headers came with end_of_stream: there is no body.
    headers_only: Cell<bool>,
    /// The last body chunk (or the trailers) arrived.
    body_complete: Cell<bool>,
    /// Inside a body hook: part of the body is still in the "received" chunk.
    in_body_hook: Cell<bool>,
}

/// A local reply recorded by `handle:respond()`, sent once Lua has yielded.
/// Header names are lower-case.
#[derive(Clone)]
pub struct LocalReply {
    pub status: u32,
    pub headers: HeaderList,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// Adds what Envoy's local reply adds, so envoy_on_response sees it too.
    fn with_envoy_headers(mut self) -> LocalReply {
        if !self.body.is_empty() {
            self.headers
                .push((b"content-length".to_vec(), self.body.len().to_string().into_bytes()));
            if !self.headers.iter().any(|(k, _)| k == b"content-type") {
                self.headers.push((b"content-type".to_vec(), b"text/plain".to_vec()));
            }
        }
        self
    }

    pub fn values(&self, key: &[u8]) -> Vec<Vec<u8>> {
        if key == b":status" {
            return vec![self.status.to_string().into_bytes()];
        }
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn entries(&self) -> HeaderList {
        let mut entries = vec![(b":status".to_vec(), self.status.to_string().into_bytes())];
        entries.extend(self.headers.iter().cloned());
        entries
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        if key == b":status" {
            if let Some(status) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                self.status = status;
            }
        } else {
            self.headers.push((key.to_ascii_lowercase(), value.to_vec()));
        }
    }

    pub fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        if let Some(value) = value {
            self.add(key, value);
        }
    }
}

pub type SharedReply = Rc<RefCell<LocalReply>>;

/// The per-stream state shared with the Lua handle objects.
pub struct Stream {
    envoy: Cell<Option<EnvoyFilter>>,
    sink: RefCell<Option<Sink>>,
    request: Phase,
    response: Phase,
    local_reply: RefCell<Option<LocalReply>>,
    /// A local reply that envoy_on_response is still working on.
    pending_reply: RefCell<Option<SharedReply>>,
    pub metadata_namespace: String,
}

impl Stream {
    /// Envoy's filter, or a Lua error once the stream is gone.
    pub fn envoy(&self) -> mlua::Result<EnvoyFilter> {
        self.envoy
            .get()
            .ok_or_else(|| mlua::Error::runtime("resty_ffi: the stream is gone"))
    }

    pub fn phase(&self, dir: Direction) -> &Phase {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// The stream's sink, created (with its scheduler) on first use.
    pub fn sink_ptr(&self) -> mlua::Result<*mut resty_ffi::host_abi::resty_ffi_sink> {
        let envoy = self.envoy()?;
        let mut sink = self.sink.borrow_mut();
        Ok(sink.get_or_insert_with(|| Sink::new(envoy.new_scheduler())).as_ptr())
    }

    pub fn set_local_reply(&self, reply: LocalReply) {
        *self.local_reply.borrow_mut() = Some(reply);
    }

    /// "none" (headers ended the stream), "ready" or "pending".
    pub fn body_state(&self, dir: Direction) -> &'static str {
        let phase = self.phase(dir);
        if phase.headers_only.get() {
            "none"
        } else if phase.body_complete.get() {
            "ready"
        } else {
            "pending"
        }
    }

    pub fn in_body_hook(&self, dir: Direction) -> bool {
        self.phase(dir).in_body_hook.get()
    }
}

/// What Envoy's filter pointer designates on our side.
pub struct Filter {
    vm: Rc<WorkerVm>,
    stream: Rc<Stream>,
    /// A panic happened: Lua is no longer run for this stream.
    failed: Cell<bool>,
    response_started: Cell<bool>,
}

impl Filter {
    pub fn new(config: &FilterConfig, envoy: EnvoyFilter) -> Filter {
        let vm = vm::for_config(config);
        let stream = Rc::new(Stream {
            envoy: Cell::new(Some(envoy)),
            sink: RefCell::new(None),
            request: Phase::default(),
            response: Phase::default(),
            local_reply: RefCell::new(None),
            pending_reply: RefCell::new(None),
            metadata_namespace: vm.metadata_namespace.clone(),
        });
        Filter {
            vm,
            stream,
            failed: Cell::new(false),
            response_started: Cell::new(false),
        }
    }

    fn envoy(&self) -> Option<EnvoyFilter> {
        self.stream.envoy.get()
    }

    pub fn on_headers(&self, dir: Direction, end_of_stream: bool) -> Status {
        if dir == Direction::Response {
            self.response_started.set(true);
        }
        let phase = self.stream.phase(dir);
        phase.headers_only.set(end_of_stream);
        phase.body_complete.set(end_of_stream);
        if self.failed.get() || phase.coroutine.borrow().is_some() {
            return Status::Continue;
        }
        if self.vm.broken {
            return self.fail(dir, Site::Headers, "the script failed to load".to_owned());
        }
        let entry = match dir {
            Direction::Request => self.vm.on_request.clone(),
            Direction::Response => self.vm.on_response.clone(),
        };
        match entry {
            Some(entry) => self.start(dir, entry, None, Site::Headers),
            None => Status::Continue,
        }
    }

    /// Runs `entry(handle)` in a new coroutine; `local` makes the handle work
    /// on a local reply instead of Envoy's response.
    fn start(&self, dir: Direction, entry: mlua::Function, local: Option<SharedReply>, site: Site) -> Status {
        let started = self.vm.lua.create_thread(entry).and_then(|thread| {
            let raw = self
                .vm
                .lua
                .create_userdata(RawHandle::new(Rc::clone(&self.stream), dir, local))?;
            let handle: mlua::Value = self.vm.make_handle.call(raw)?;
            Ok((thread, handle))
        });
        match started {
            Ok((thread, handle)) => {
                *self.stream.phase(dir).coroutine.borrow_mut() = Some(thread);
                let outcome = self.resume(dir, handle);
                self.settle(dir, site, outcome)
            }
            Err(e) => self.fail(dir, site, e.to_string()),
        }
    }

    pub fn on_body(&self, dir: Direction, end_of_stream: bool) -> Status {
        let phase = self.stream.phase(dir);
        if end_of_stream {
            phase.body_complete.set(true);
        }
        match phase.wait.get() {
            None | Some(Wait::Nothing) => Status::Continue,
            // Flow control, not a 413: Envoy pauses the sender at the buffer limit.
            Some(Wait::Ffi) => Status::StopAndWatermark,
            Some(Wait::Body) if !end_of_stream => Status::StopAndBuffer,
            Some(Wait::Body) => {
                phase.in_body_hook.set(true);
                let outcome = self.resume(dir, ());
                phase.in_body_hook.set(false);
                self.settle(dir, Site::Body, outcome)
            }
        }
    }

    pub fn on_trailers(&self, dir: Direction) -> Status {
        let phase = self.stream.phase(dir);
        phase.body_complete.set(true);
        match phase.wait.get() {
            None | Some(Wait::Nothing) => Status::Continue,
            Some(Wait::Ffi) => Status::StopAndBuffer,
            Some(Wait::Body) => {
                let outcome = self.resume(dir, ());
                self.settle(dir, Site::Trailers, outcome)
            }
        }
    }

    /// The sink's scheduler event: resume the coroutines waiting for answers.
    pub fn on_scheduled(&self) {
        for dir in [Direction::Request, Direction::Response] {
            if self.stream.phase(dir).wait.get() == Some(Wait::Ffi) {
                let outcome = self.resume(dir, true);
                self.settle(dir, Site::Scheduled, outcome);
            }
        }
    }

    pub fn on_stream_complete(&self) {
        self.shut_down();
    }

    /// After a panic: 500 while the response has not started, else a reset.
    pub fn fail_after_panic(&self) -> Status {
        self.failed.set(true);
        self.end_coroutine(Direction::Request);
        self.end_coroutine(Direction::Response);
        self.stream.pending_reply.borrow_mut().take();
        if let Some(envoy) = self.envoy() {
            if self.response_started.get() {
                envoy.reset_stream("resty_ffi_panic");
            } else {
                envoy.send_response(500, &[], b"", "resty_ffi_panic");
            }
        }
        Status::StopNoBuffer
    }

    fn resume(&self, dir: Direction, args: impl mlua::IntoLuaMulti) -> Outcome {
        let phase = self.stream.phase(dir);
        phase.wait.set(Some(Wait::Nothing));
        let Some(thread) = phase.coroutine.borrow().clone() else {
            return Outcome::Finished;
        };
        let result = vm::with_current(&self.stream, || thread.resume::<MultiValue>(args));
        match result {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(_) if thread.status() != ThreadStatus::Resumable => Outcome::Finished,
            Ok(values) => match vm::classify_yield(values.front()) {
                Some(Yield::Ffi) => Outcome::Waiting(Wait::Ffi),
                Some(Yield::Body) => Outcome::Waiting(Wait::Body),
                Some(Yield::Responded) => Outcome::Responded,
                None => Outcome::Failed("the script yielded outside of a resty_ffi or handle call".to_owned()),
            },
        }
    }

    /// Applies what the coroutine did; returns the hook's status (ignored
    /// when resumed from a scheduler event).
    fn settle(&self, dir: Direction, site: Site, outcome: Outcome) -> Status {
        let phase = self.stream.phase(dir);
        match outcome {
            Outcome::Finished => self.finish(dir, site),
            Outcome::Waiting(Wait::Body) if site == Site::Scheduled && self.body_cannot_complete(dir) => {
                self.end_coroutine(dir);
                if let Some(envoy) = self.envoy() {
                    match dir {
                        Direction::Request => envoy.send_response(413, &[], b"Payload Too Large", "resty_ffi_body_too_large"),
                        Direction::Response => envoy.reset_stream("resty_ffi_body_too_large"),
                    }
                }
                Status::StopNoBuffer
            }
            Outcome::Waiting(wait) => {
                phase.wait.set(Some(wait));
                phase.stopped.set(true);
                match (site, wait) {
                    (Site::Body, Wait::Ffi) => Status::StopAndWatermark,
                    _ => Status::StopAndBuffer,
                }
            }
            Outcome::Responded => {
                self.end_coroutine(dir);
                if dir == Direction::Response {
                    return self.fail(
                        dir,
                        site,
                        "handle:respond() is not supported in envoy_on_response".to_owned(),
                    );
                }
                let reply = self.stream.local_reply.borrow_mut().take();
                if self.response_started.get() {
                    // E.g. Envoy timed the request out while the script waited.
                    log(
                        LogLevel::Warn,
                        "resty_ffi: respond() after the response started; ignored",
                    );
                } else if let Some(reply) = reply {
                    self.respond_locally(reply, site);
                }
                Status::StopNoBuffer
            }
            Outcome::Failed(message) => self.fail(dir, site, message),
        }
    }

    /// Sends `reply`, after envoy_on_response has seen it. Envoy skips a
    /// module's encode hooks for the module's own local replies, so we run
    /// envoy_on_response over the reply here, as the stock Lua filter would.
    fn respond_locally(&self, reply: LocalReply, site: Site) {
        let on_response = self.vm.on_response.clone().filter(|_| !self.failed.get());
        let Some(entry) = on_response else {
            self.send_local(&reply);
            return;
        };
        let shared = Rc::new(RefCell::new(reply.with_envoy_headers()));
        *self.stream.pending_reply.borrow_mut() = Some(Rc::clone(&shared));
        self.start(Direction::Response, entry, Some(shared), site);
    }

    fn send_local(&self, reply: &LocalReply) {
        // Envoy sets content-length itself.
        let headers: Vec<_> = reply
            .headers
            .iter()
            .filter(|(k, _)| k != b"content-length")
            .cloned()
            .collect();
        if let Some(envoy) = self.envoy() {
            envoy.send_response(reply.status, &headers, &reply.body, "resty_ffi_respond");
        }
    }

    /// The script wants the whole body after a call, but what arrived while
    /// it waited (flow-controlled) already fills the buffer: Envoy has stopped
    /// reading, so the rest would never come. Envoy's own buffering answers
    /// such bodies with 413; so do we.
    fn body_cannot_complete(&self, dir: Direction) -> bool {
        let Some(envoy) = self.envoy() else { return false };
        let limit = envoy.buffer_limit();
        !self.stream.phase(dir).body_complete.get()
            && limit > 0
            && envoy.body_size(dir, BodyKind::Buffered) as u64 >= limit
    }

    /// The script ended (or failed open): let the stream go on.
    fn finish(&self, dir: Direction, site: Site) -> Status {
        let was_stopped = self.stream.phase(dir).stopped.replace(false);
        self.end_coroutine(dir);
        let pending = if dir == Direction::Response {
            self.stream.pending_reply.borrow_mut().take()
        } else {
            None
        };
        if let Some(reply) = pending {
            if self.response_started.get() {
                log(LogLevel::Warn, "resty_ffi: local reply dropped: Envoy already answered the stream");
            } else {
                let reply = reply.borrow().clone();
                self.send_local(&reply);
            }
            return Status::StopNoBuffer;
        }
        // Once a response started (e.g. Envoy's own timeout reply), the
        // request side must not be continued.
        let request_over = dir == Direction::Request && self.response_started.get();
        if site == Site::Scheduled && was_stopped && !request_over {
            if let Some(envoy) = self.envoy() {
                envoy.continue_stream(dir);
            }
        }
        Status::Continue
    }

    /// A Lua error: logged; fail open (continue) unless `fail_closed`.
    fn fail(&self, dir: Direction, site: Site, message: String) -> Status {
        let side = match dir {
            Direction::Request => "envoy_on_request",
            Direction::Response => "envoy_on_response",
        };
        log(LogLevel::Error, &format!("resty_ffi: {side}: {message}"));
        if !self.vm.fail_closed {
            return self.finish(dir, site);
        }
        self.end_coroutine(dir);
        self.stream.pending_reply.borrow_mut().take();
        if let Some(envoy) = self.envoy() {
            match dir {
                Direction::Request => envoy.send_response(500, &[], b"", "resty_ffi_lua_error"),
                Direction::Response => envoy.reset_stream("resty_ffi_lua_error"),
            }
        }
        Status::StopNoBuffer
    }

    fn end_coroutine(&self, dir: Direction) {
        let phase = self.stream.phase(dir);
        phase.wait.set(None);
        phase.coroutine.borrow_mut().take();
    }

    /// Detaches the stream from Envoy: later answers are freed by the core,
    /// and handles kept by Lua raise errors instead of touching Envoy.
    fn shut_down(&self) {
        self.stream.envoy.set(None);
        self.end_coroutine(Direction::Request);
        self.end_coroutine(Direction::Response);
        self.stream.sink.borrow_mut().take();
        self.stream.pending_reply.borrow_mut().take();
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.shut_down();
    }
}
