//! One HTTP stream's state machine: runs `envoy_on_request` and
//! `envoy_on_response` in coroutines and turns what they do (wait for an
//! answer or the body, respond, fail) into Envoy stop/continue decisions.
//!
//! Rules kept here, once for every path:
//! * Re-entrancy: a local reply, a reset or a continue may run other hooks of
//!   this stream, or end it, before it returns. After each such call the
//!   machine checks [`StreamCtx::is_detached`] and stops touching the stream
//!   (hooks.rs keeps the memory alive until the outermost hook returns).
//! * A local reply is final: once one is decided, the request never
//!   continues, whatever arrives next.
//! * Every scheduler event drains the sink, so no wake-up is lost.
//!
//! Thread contract: lives on the stream's worker thread. No `RefCell` borrow
//! is held while Lua runs or while calling into Envoy.

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;

use mlua::{LightUserData, Table, Value};

use crate::abi::{log, BodyKind, Direction, EnvoyBuffer, EnvoyFilter, EnvoyHeader, LogLevel, Status};
use crate::api::ffi::with_current;
use crate::api::http_call;
use crate::api::reply::LocalReply;
use crate::api::StreamCtx;
use crate::config::{FilterConfig, PerRouteConfig, RouteScript};
use crate::vm::{Coroutine, Resumed, Vm, Yield};

/// Finds the most specific per-route config of a stream's route (hooks.rs
/// knows how Envoy hands it over).
pub type RouteConfigOf = fn(EnvoyFilter) -> Option<Arc<PerRouteConfig>>;

/// The script a stream runs, picked from its route at its first headers.
struct Selected {
    vm: Arc<Vm>,
    route: Option<Arc<PerRouteConfig>>,
}

/// What a direction's coroutine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Running, or never started.
    Nothing,
    /// Answers of resty_ffi calls (a scheduler event).
    Ffi,
    /// The whole body, buffered (`body()`).
    Body,
    /// The next body chunk, not buffered (`bodyChunks()`).
    Chunk,
    /// The stream's end, the body not buffered (`trailers()`).
    Trailers,
    /// The answer of an HTTP callout (`httpCall()`).
    Callout,
}

/// Where a coroutine is resumed from; decides the status a stop maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    Headers,
    Body,
    Trailers,
    Scheduled,
}

/// The state of one direction (decoding or encoding) of a stream.
struct Phase {
    coroutine: RefCell<Option<Coroutine>>,
    wait: Cell<Wait>,
    /// A hook returned a stop status: call continue_* once the script is done.
    stopped: Cell<bool>,
}

impl Phase {
    fn new() -> Phase {
        Phase { coroutine: RefCell::new(None), wait: Cell::new(Wait::Nothing), stopped: Cell::new(false) }
    }
}

/// Whether this filter decided the stream's answer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    None,
    /// `respond()` or a failure decided a local reply (it may still be
    /// going through envoy_on_response): the request must never continue.
    Decided,
}

pub struct Stream {
    config: Arc<FilterConfig>,
    route_config_of: RouteConfigOf,
    /// `None` inside: the filter does nothing for this stream's route.
    selected: OnceCell<Option<Selected>>,
    ctx: Rc<StreamCtx>,
    request: Phase,
    response: Phase,
    reply: Cell<Reply>,
    /// A local reply (the Lua table `respond()` made) that envoy_on_response
    /// is still working on.
    pending_reply: RefCell<Option<Table>>,
    response_started: Cell<bool>,
    /// A panic happened: Lua is no longer run for this stream.
    failed: Cell<bool>,
}

impl Stream {
    pub fn new(config: Arc<FilterConfig>, envoy: EnvoyFilter, route_config_of: RouteConfigOf) -> Stream {
        let ctx = StreamCtx::new(envoy, config.clear_route_cache, Arc::clone(&config.metrics));
        Stream {
            config,
            route_config_of,
            selected: OnceCell::new(),
            ctx,
            request: Phase::new(),
            response: Phase::new(),
            reply: Cell::new(Reply::None),
            pending_reply: RefCell::new(None),
            response_started: Cell::new(false),
            failed: Cell::new(false),
        }
    }

    /// The script for this stream's route (LuaPerRoute semantics): a
    /// per-route config's own script or named one, else the default; none
    /// when the route disables the filter or names no script we have.
    fn selected(&self) -> Option<&Selected> {
        self.selected
            .get_or_init(|| {
                let route = self.ctx.envoy().and_then(self.route_config_of);
                let scripts = match route.as_ref().map(|r| &r.script) {
                    Some(RouteScript::Disabled) => return None,
                    Some(RouteScript::Named(name)) => match self.config.named.get(name) {
                        Some(script) => script,
                        None => {
                            log(LogLevel::Debug, &format!("resty_ffi: no source code named \"{name}\"; the filter passes"));
                            return None;
                        }
                    },
                    Some(RouteScript::Inline(script)) => script,
                    None => self.config.default.as_ref()?,
                };
                let vm = scripts.worker_vm(&self.config);
                if vm.on_response.is_some() {
                    self.ctx.stop_staging_replies();
                }
                Some(Selected { vm, route })
            })
            .as_ref()
    }

    fn vm(&self) -> Option<&Arc<Vm>> {
        self.selected().map(|s| &s.vm)
    }

    fn phase(&self, dir: Direction) -> &Phase {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// The request must not go on: a local reply was decided, or Envoy
    /// already answered (its own timeout reply, for example).
    fn request_is_over(&self) -> bool {
        self.reply.get() == Reply::Decided || self.response_started.get()
    }

    pub fn on_headers(&self, dir: Direction, end_of_stream: bool) -> Status {
        let status = self.headers(dir, end_of_stream);
        self.passed_on(dir, status)
    }

    pub fn on_body(&self, dir: Direction, end_of_stream: bool) -> Status {
        let status = self.body(dir, end_of_stream);
        self.passed_on(dir, status)
    }

    pub fn on_trailers(&self, dir: Direction) -> Status {
        let status = self.trailers(dir);
        self.passed_on(dir, status)
    }

    /// Notes that the headers of `dir` went on to the next filter when a
    /// hook lets the stream continue: from then on they cannot change, and a
    /// local reply is too late (the stock filter's rules).
    fn passed_on(&self, dir: Direction, status: Status) -> Status {
        if status == Status::Continue {
            self.ctx.body(dir).headers_continued();
        }
        status
    }

    /// Lets a stopped direction go on (from outside its hooks).
    fn continue_stream(&self, dir: Direction) {
        if let Some(envoy) = self.ctx.envoy() {
            self.ctx.body(dir).headers_continued();
            envoy.continue_stream(dir);
        }
    }

    fn headers(&self, dir: Direction, end_of_stream: bool) -> Status {
        if dir == Direction::Response {
            self.response_started.set(true);
        }
        self.ctx.body(dir).headers_arrived(end_of_stream);
        if self.failed.get() || self.phase(dir).coroutine.borrow().is_some() {
            return Status::Continue;
        }
        let Some(vm) = self.vm() else { return Status::Continue };
        if let Some(why) = &vm.broken {
            return self.fail(dir, Site::Headers, format!("resty_ffi: the script failed to load: {why}"));
        }
        let entry = match dir {
            Direction::Request => vm.on_request.clone(),
            Direction::Response => vm.on_response.clone(),
        };
        match entry {
            Some(entry) => self.start(dir, entry, None, Site::Headers),
            None => Status::Continue,
        }
    }

    /// Runs `entry(handle)` in a new coroutine; `local` makes the handle work
    /// on a local reply instead of Envoy's response.
    fn start(&self, dir: Direction, entry: mlua::Function, local: Option<Table>, site: Site) -> Status {
        let Some(selected) = self.selected() else { return Status::Continue };
        let vm = &selected.vm;
        let started = vm.coroutine(entry).and_then(|coroutine| {
            let dir_id = match dir {
                Direction::Request => 0,
                Direction::Response => 1,
            };
            let local = local.map_or(Value::Nil, Value::Table);
            let context = match &selected.route {
                Some(route) if !route.filter_context.is_empty() => &route.filter_context,
                _ => &self.config.filter_context,
            };
            let context = if context.is_empty() { Value::Nil } else { Value::Table(vm.table_of(context)?) };
            let namespace = self.config.metadata_namespace.as_str();
            // What the coroutine makes its handle of (vm::Vm::coroutine).
            let handle_args = (self.ctx.to_lua(), dir_id, local, namespace, context);
            Ok((coroutine, handle_args))
        });
        if let Some(envoy) = self.ctx.envoy() {
            self.config.metrics.count_execution(envoy);
        }
        match started {
            Ok((coroutine, handle_args)) => {
                *self.phase(dir).coroutine.borrow_mut() = Some(coroutine);
                let resumed = self.resume(dir, handle_args);
                self.settle(dir, site, resumed)
            }
            Err(e) => self.fail_lua(dir, site, &crate::vm::error_message(&e)),
        }
    }

    fn body(&self, dir: Direction, end_of_stream: bool) -> Status {
        if dir == Direction::Request && self.request_is_over() {
            return Status::StopNoBuffer;
        }
        let body = self.ctx.body(dir);
        if end_of_stream {
            body.set_complete();
        }
        let wait = self.phase(dir).wait.get();
        if wait != Wait::Ffi {
            body.data_seen();
        }
        match wait {
            Wait::Nothing => Status::Continue,
            // Flow control, not a 413: Envoy pauses the sender at the buffer limit.
            Wait::Ffi | Wait::Callout => Status::StopAndWatermark,
            Wait::Body if !end_of_stream => Status::StopAndBuffer,
            Wait::Trailers if !end_of_stream => Status::Continue,
            Wait::Body | Wait::Chunk | Wait::Trailers => {
                let resumed = body.in_body_hook(|| self.resume(dir, ()));
                self.settle(dir, Site::Body, resumed)
            }
        }
    }

    fn trailers(&self, dir: Direction) -> Status {
        if dir == Direction::Request && self.request_is_over() {
            return Status::StopNoBuffer;
        }
        self.ctx.body(dir).trailers_arrived();
        match self.phase(dir).wait.get() {
            Wait::Nothing => Status::Continue,
            Wait::Ffi | Wait::Callout => Status::StopAndBuffer,
            Wait::Body | Wait::Chunk | Wait::Trailers => {
                let resumed = self.resume(dir, ());
                self.settle(dir, Site::Trailers, resumed)
            }
        }
    }

    /// The sink's scheduler event: answers arrived or a call's deadline is
    /// up. Resumes the coroutines waiting for answers; with none waiting, the
    /// answers (late ones of calls that gave up) are drained all the same, or
    /// the sink would never wake this stream again.
    pub fn on_scheduled(&self) {
        let mut resumed_any = false;
        for dir in [Direction::Request, Direction::Response] {
            if self.ctx.is_detached() {
                return;
            }
            if self.phase(dir).wait.get() == Wait::Ffi {
                resumed_any = true;
                let resumed = self.resume(dir, true);
                self.settle(dir, Site::Scheduled, resumed);
            }
        }
        if resumed_any || self.ctx.is_detached() {
            return;
        }
        if let Some(sink) = self.ctx.existing_sink() {
            let sink = LightUserData(sink as *mut c_void);
            let drained = self.vm().map_or(Ok(()), |vm| vm.call_loaded("resty_ffi.envoy", "drain", sink));
            if let Err(e) = drained {
                log(LogLevel::Error, &format!("resty_ffi: draining late answers: {e}"));
            }
        }
    }

    /// An HTTP callout answered: resumes the coroutine that waits for it with
    /// what `httpCall()` returns (asynchronous calls have no waiter).
    pub fn on_callout_done(&self, id: u64, succeeded: bool, headers: &[EnvoyHeader], body: &[EnvoyBuffer]) {
        let Some((dir, callout)) = self.ctx.take_callout(id) else { return };
        if self.phase(dir).wait.get() != Wait::Callout {
            return;
        }
        let Some(vm) = self.vm() else { return };
        let resumed = match http_call::answer(&vm.lua, callout, succeeded, headers, body) {
            Ok(answer) => self.resume(dir, answer),
            Err(e) => Resumed::Failed(crate::vm::error_message(&e)),
        };
        self.settle(dir, Site::Scheduled, resumed);
    }

    /// Envoy is done with the stream (its destroy hook follows).
    pub fn on_stream_complete(&self) {
        self.shut_down();
    }

    /// After a panic: 500 while the response has not started, else a reset.
    pub fn fail_after_panic(&self) -> Status {
        self.failed.set(true);
        self.end_coroutine(Direction::Request);
        self.end_coroutine(Direction::Response);
        self.pending_reply.borrow_mut().take();
        self.fail_closed_now(if self.response_started.get() { Direction::Response } else { Direction::Request }, "resty_ffi_panic")
    }

    fn resume(&self, dir: Direction, args: impl mlua::IntoLuaMulti) -> Resumed {
        let phase = self.phase(dir);
        phase.wait.set(Wait::Nothing);
        let Some(coroutine) = phase.coroutine.borrow().clone() else {
            return Resumed::Finished;
        };
        let resumed = with_current(&self.ctx, || coroutine.resume(args));
        if self.ctx.take_panicked() {
            return Resumed::Failed("a function of the filter panicked".to_owned());
        }
        resumed
    }

    /// Applies what the coroutine did; returns the hook's status (ignored
    /// when resumed from a scheduler event).
    fn settle(&self, dir: Direction, site: Site, resumed: Resumed) -> Status {
        if self.ctx.is_detached() {
            // The script's own call (a respond, say) ended the stream.
            self.end_coroutine(dir);
            return Status::StopNoBuffer;
        }
        match resumed {
            Resumed::Finished => self.finish(dir, site),
            Resumed::Yielded(Yield::Body) if site == Site::Scheduled && self.body_cannot_complete(dir) => {
                self.end_coroutine(dir);
                match dir {
                    Direction::Request => self.send_local(&LocalReply::plain(413, b"Payload Too Large"), "resty_ffi_body_too_large"),
                    Direction::Response => self.reset("resty_ffi_body_too_large"),
                }
                Status::StopNoBuffer
            }
            Resumed::Yielded(Yield::Ffi) => self.stop(dir, site, Wait::Ffi),
            Resumed::Yielded(Yield::Body) => self.stop(dir, site, Wait::Body),
            Resumed::Yielded(Yield::Chunk) => self.stream_by(dir, site, Wait::Chunk),
            Resumed::Yielded(Yield::Trailers) => self.stream_by(dir, site, Wait::Trailers),
            Resumed::Yielded(Yield::Callout) => self.stop(dir, site, Wait::Callout),
            Resumed::Yielded(Yield::Responded) => self.fail(dir, site, "resty_ffi: respond() without a reply".to_owned()),
            Resumed::Responded(reply) => self.responded(dir, site, reply),
            Resumed::Failed(message) => self.fail_lua(dir, site, &message),
        }
    }

    fn stop(&self, dir: Direction, site: Site, wait: Wait) -> Status {
        let phase = self.phase(dir);
        phase.wait.set(wait);
        phase.stopped.set(true);
        match (site, wait) {
            (Site::Body, Wait::Ffi) => Status::StopAndWatermark,
            _ => Status::StopAndBuffer,
        }
    }

    /// `bodyChunks()` waits for the next chunk, `trailers()` for the end: as
    /// in the stock filter, the headers go on at once and the body streams
    /// by, unbuffered.
    fn stream_by(&self, dir: Direction, site: Site, wait: Wait) -> Status {
        let phase = self.phase(dir);
        phase.wait.set(wait);
        if phase.stopped.replace(false) && site == Site::Scheduled {
            self.continue_stream(dir);
        }
        Status::Continue
    }

    /// `handle:respond()`: the request is over; the reply goes through
    /// envoy_on_response, then to the client.
    fn responded(&self, dir: Direction, site: Site, reply: Table) -> Status {
        self.end_coroutine(dir);
        self.reply.set(Reply::Decided);
        if self.response_started.get() {
            // E.g. Envoy timed the request out while the script waited.
            log(LogLevel::Warn, "resty_ffi: respond() after the response started; ignored");
        } else {
            self.respond_locally(reply, site);
        }
        Status::StopNoBuffer
    }

    /// Sends `reply`, after envoy_on_response has seen it. Envoy skips a
    /// module's encode hooks for the module's own local replies, so we run
    /// envoy_on_response over the reply here, as the stock Lua filter would.
    fn respond_locally(&self, reply: Table, site: Site) {
        let on_response = self.vm().and_then(|vm| vm.on_response.clone()).filter(|_| !self.failed.get());
        let staged = self.ctx.take_staged_reply();
        let Some(entry) = on_response else {
            match staged {
                Some(staged) => self.send_local(&staged, "resty_ffi_respond"),
                None => self.send_lua_reply(&reply),
            }
            return;
        };
        *self.pending_reply.borrow_mut() = Some(reply.clone());
        self.start(Direction::Response, entry, Some(reply), site);
    }

    fn send_lua_reply(&self, reply: &Table) {
        match LocalReply::from_lua(reply) {
            Ok(reply) => self.send_local(&reply, "resty_ffi_respond"),
            Err(e) => {
                log(LogLevel::Error, &format!("resty_ffi: bad local reply: {e}"));
                self.send_local(&LocalReply::plain(500, b""), "resty_ffi_lua_error");
            }
        }
    }

    /// Sends a local reply (may end the stream before it returns).
    fn send_local(&self, reply: &LocalReply, details: &str) {
        self.reply.set(Reply::Decided);
        if let Some(envoy) = self.ctx.envoy() {
            // Envoy sets content-length itself.
            let headers = reply.headers().filter(|(name, _)| *name != b"content-length");
            envoy.send_response(reply.status, headers, reply.body(), details);
        }
    }

    /// Resets the stream (ends it before returning).
    fn reset(&self, details: &str) {
        if let Some(envoy) = self.ctx.envoy() {
            envoy.reset_stream(details);
        }
    }

    /// The script wants the whole body after a call, but what arrived while
    /// it waited (flow-controlled) already fills the buffer: Envoy has stopped
    /// reading, so the rest would never come. Envoy's own buffering answers
    /// such bodies with 413; so do we.
    fn body_cannot_complete(&self, dir: Direction) -> bool {
        let Some(envoy) = self.ctx.envoy() else { return false };
        let limit = envoy.buffer_limit();
        !self.ctx.body(dir).is_complete() && limit > 0 && envoy.body_size(dir, BodyKind::Buffered) as u64 >= limit
    }

    /// The script ended (or failed open): let the stream go on.
    fn finish(&self, dir: Direction, site: Site) -> Status {
        let was_stopped = self.phase(dir).stopped.replace(false);
        self.end_coroutine(dir);
        if dir == Direction::Response {
            // Taken first: the borrow must not last while the reply is sent
            // (Envoy may end the stream, and call our hooks, inside).
            let pending = self.pending_reply.borrow_mut().take();
            if let Some(reply) = pending {
                if self.response_started.get() {
                    log(LogLevel::Warn, "resty_ffi: local reply dropped: Envoy already answered the stream");
                } else {
                    self.send_lua_reply(&reply);
                }
                return Status::StopNoBuffer;
            }
        }
        if dir == Direction::Request && self.request_is_over() {
            return Status::StopNoBuffer;
        }
        if site == Site::Scheduled && was_stopped {
            self.continue_stream(dir);
        }
        Status::Continue
    }

    /// A Lua error, logged as the stock filter logs it.
    fn fail_lua(&self, dir: Direction, site: Site, message: &str) -> Status {
        self.fail(dir, site, format!("script log: {message}"))
    }

    /// The script failed: `message` logged; fail open (continue) unless
    /// `fail_closed`.
    fn fail(&self, dir: Direction, site: Site, message: String) -> Status {
        log(LogLevel::Error, &message);
        if let Some(envoy) = self.ctx.envoy() {
            self.config.metrics.count_error(envoy);
        }
        if !self.config.fail_closed {
            return self.finish(dir, site);
        }
        self.end_coroutine(dir);
        self.pending_reply.borrow_mut().take();
        self.fail_closed_now(dir, "resty_ffi_lua_error")
    }

    /// A 500 on the request path, a reset on the response path.
    fn fail_closed_now(&self, dir: Direction, details: &str) -> Status {
        match dir {
            Direction::Request => self.send_local(&LocalReply::plain(500, b""), details),
            Direction::Response => self.reset(details),
        }
        Status::StopNoBuffer
    }

    fn end_coroutine(&self, dir: Direction) {
        let phase = self.phase(dir);
        phase.wait.set(Wait::Nothing);
        let coroutine = phase.coroutine.borrow_mut().take();
        drop(coroutine);
    }

    /// Detaches the stream from Envoy: later answers are freed by the core,
    /// and handles kept by Lua raise errors instead of touching Envoy.
    pub fn shut_down(&self) {
        self.ctx.detach();
        if self.ctx.take_made_store() {
            if let Some(Err(e)) = self.vm().map(|vm| vm.call_loaded("resty_ffi.envoy.api", "forget_store", self.ctx.to_lua())) {
                log(LogLevel::Error, &format!("resty_ffi: {}", crate::vm::error_message(&e)));
            }
        }
        self.end_coroutine(Direction::Request);
        self.end_coroutine(Direction::Response);
        let reply = self.pending_reply.borrow_mut().take();
        drop(reply);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shut_down();
    }
}
