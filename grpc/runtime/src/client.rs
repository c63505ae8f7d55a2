//! Commands from Lua: loading protos, connections, unary calls and streams.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use resty_ffi_sdk::{Response, Task, TaskQueue};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

use crate::convert;
use crate::protos::{Method, Protos};
use crate::text::{self, Lv};

/// The commands, first element of each request array.
#[repr(i64)]
#[derive(Clone, Copy)]
enum Cmd {
    /// `[1, path, includes]`
    LoadFile = 1,
    /// `[2, name, source, includes]`
    LoadSource = 2,
    /// `[3, uri, opts]` -> connection id
    Connect = 3,
    /// `[4, conn]`
    CloseConn = 4,
    /// `[5, conn, path, timeout_ms, metadata, message]` -> message [metadata]
    Unary = 5,
    /// `[6, conn, path, timeout_ms, metadata]` -> stream id
    NewStream = 6,
    /// `[7, stream, message]`
    Send = 7,
    /// `[8, stream]` -> message, or `null [metadata]` at the end
    Recv = 8,
    /// `[9, stream]`
    CloseSend = 9,
    /// `[10, [stream, ...]]`
    Close = 10,
    /// `[11, message type, bytes]` -> message
    Decode = 11,
    /// `[12]` -> true, from a tokio task (`[0]` answers from the poll thread)
    Ping = 12,
}

const CMDS: [Cmd; 12] = [
    Cmd::LoadFile,
    Cmd::LoadSource,
    Cmd::Connect,
    Cmd::CloseConn,
    Cmd::Unary,
    Cmd::NewStream,
    Cmd::Send,
    Cmd::Recv,
    Cmd::CloseSend,
    Cmd::Close,
    Cmd::Decode,
    Cmd::Ping,
];

/// Messages queued by `send` ahead of the network, per stream.
const SEND_QUEUE: usize = 16;

/// One runtime's connections, streams and protos.
pub struct State {
    protos: Protos,
    conns: Mutex<HashMap<u64, Channel>>,
    streams: Mutex<HashMap<u64, Arc<Stream>>>,
    next_id: AtomicU64,
}

struct Stream {
    method: Arc<Method>,
    /// None after `close_send`.
    sender: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// One `recv` at a time, in order.
    recv: tokio::sync::Mutex<RecvState>,
    call: AbortHandle,
    deadline: Option<Instant>,
    /// Set by `close`: waits end with CANCELLED.
    closed: watch::Sender<bool>,
}

type CallResult = Result<tonic::Response<Streaming<Bytes>>, Status>;

enum RecvState {
    /// The call, waiting for the response headers.
    Starting(JoinHandle<CallResult>),
    Open(Box<Streaming<Bytes>>, MetadataMap),
    /// Finished: None at the end of the messages, or how it failed.
    Ended(Option<Failure>),
}

/// What Lua gets back: `true, body` or `false, code, message [NUL info]`.
type Answer = Result<Vec<u8>, Failure>;

#[derive(Clone)]
pub(crate) struct Failure {
    code: i32,
    message: String,
    /// A table: details, status, metadata.
    info: Option<Vec<u8>>,
}

impl Failure {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Failure { code: code as i32, message: message.into(), info: None }
    }

    fn from_status(status: &Status, headers: Option<&MetadataMap>) -> Self {
        let mut info = Vec::new();
        info.extend_from_slice(b"{\"details\":");
        text::write_str(&mut info, status.details());
        if let Some(h) = headers {
            info.extend_from_slice(b",\"headers\":");
            write_metadata(&mut info, h);
        }
        // A status's metadata: the trailers (or the headers of a
        // trailers-only answer, the usual failure).
        info.extend_from_slice(b",\"trailers\":");
        write_metadata(&mut info, status.metadata());
        info.push(b'}');
        Failure { code: status.code() as i32, message: status.message().to_string(), info: Some(info) }
    }

    fn into_response(self) -> Response {
        let mut body = self.message.into_bytes();
        if let Some(info) = self.info {
            body.push(0);
            body.extend_from_slice(&info);
        }
        Response::error(self.code, body)
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::from_status(&s, None)
    }
}

/// tonic reports a broken connection (reset, a TLS handshake the server
/// refused) as UNKNOWN "transport error" or CANCELLED "operation was
/// canceled": UNAVAILABLE with the cause, as gRPC's own clients say. (A
/// status the server sent has no source error.)
fn transport(status: Status) -> Status {
    if matches!(status.code(), Code::Unknown | Code::Cancelled) {
        if let Some(source) = std::error::Error::source(&status) {
            let mut s = Status::unavailable(chain(source));
            *s.metadata_mut() = status.metadata().clone();
            return s;
        }
    }
    status
}

fn bad_request(what: impl std::fmt::Display) -> Failure {
    Failure::new(Code::Internal, format!("resty.ffi.grpc: malformed request from Lua: {what}"))
}

/// The error and its causes ("transport error: tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Polls `queue` until the runtime is unloaded; each request is a tokio task.
pub fn serve(queue: TaskQueue, runtime: tokio::runtime::Runtime, state: Arc<State>) {
    let (in_flight, mut all_done) = mpsc::channel::<()>(1);
    while let Some(task) = queue.poll() {
        // `[0]`: answered here, without tokio (the benchmark's breakdown).
        if task.request() == b"[0]" {
            task.respond(Response::ok(b"true"));
            continue;
        }
        let state = state.clone();
        let guard = in_flight.clone();
        runtime.spawn(async move {
            answer(task, state).await;
            drop(guard);
        });
    }
    drop(in_flight);
    // Unloaded: streams still open end (their waiting recvs answer CANCELLED),
    // connections close once their calls are done.
    state.close_all();
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), all_done.recv()).await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn answer(task: Task, state: Arc<State>) {
    let req = task.request().to_vec();
    let response = match state.handle(&req).await {
        Ok(body) => Response::ok(body),
        Err(f) => f.into_response(),
    };
    task.respond(response);
}

fn arg(args: &[Lv], i: usize) -> &Lv {
    args.get(i).unwrap_or(&Lv::Null)
}

fn arg_str(args: &[Lv], i: usize, what: &str) -> Result<String, Failure> {
    match arg(args, i) {
        Lv::Str(s) => String::from_utf8(s.clone()).map_err(|_| bad_request(format!("{what} is not UTF-8"))),
        other => Err(bad_request(format!("{what}: expected a string, got {}", other.kind()))),
    }
}

fn arg_id(args: &[Lv], i: usize) -> Result<u64, Failure> {
    arg(args, i)
        .as_int()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| bad_request("expected an id"))
}

fn arg_strings(args: &[Lv], i: usize) -> Result<Vec<String>, Failure> {
    match arg(args, i) {
        Lv::Arr(items) => items
            .iter()
            .map(|v| match v {
                Lv::Str(s) => Ok(String::from_utf8_lossy(s).into_owned()),
                other => Err(bad_request(format!("expected strings, got {}", other.kind()))),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn arg_timeout(args: &[Lv], i: usize) -> Result<Option<Duration>, Failure> {
    match arg(args, i) {
        Lv::Null => Ok(None),
        Lv::Int(ms) if *ms > 0 => Ok(Some(Duration::from_millis(*ms as u64))),
        Lv::Float(ms) if *ms > 0.0 && ms.is_finite() => Ok(Some(Duration::from_secs_f64(ms / 1000.0))),
        _ => Err(Failure::new(Code::InvalidArgument, "resty.ffi.grpc: timeout must be a number of milliseconds > 0")),
    }
}

fn opt_str(opts: &Lv, key: &str) -> Result<Option<Vec<u8>>, Failure> {
    let Lv::Obj(items) = opts else { return Ok(None) };
    for (k, v) in items {
        if k.as_str() == Some(key.as_bytes()) {
            return match v {
                Lv::Str(s) => Ok(Some(s.clone())),
                Lv::Null => Ok(None),
                other => Err(Failure::new(
                    Code::InvalidArgument,
                    format!("resty.ffi.grpc: connect option {key} must be a string, got {}", other.kind()),
                )),
            };
        }
    }
    Ok(None)
}

/// Metadata from Lua: `{key = "value" or {"v1", "v2"}}`; `-bin` keys carry bytes.
fn metadata_from(v: &Lv) -> Result<MetadataMap, Failure> {
    let mut md = MetadataMap::new();
    let items = match v {
        Lv::Obj(items) => items.as_slice(),
        Lv::Null => return Ok(md),
        Lv::Arr(a) if a.is_empty() => return Ok(md),
        other => {
            return Err(Failure::new(
                Code::InvalidArgument,
                format!("resty.ffi.grpc: metadata must be a table of strings, got {}", other.kind()),
            ))
        }
    };
    for (k, v) in items {
        let key = k.as_str().unwrap_or_default().to_ascii_lowercase();
        let bad = |why: &str| {
            Failure::new(
                Code::InvalidArgument,
                format!("resty.ffi.grpc: metadata {:?}: {why}", String::from_utf8_lossy(&key)),
            )
        };
        let values: Vec<&[u8]> = match v {
            Lv::Str(s) => vec![s.as_slice()],
            Lv::Arr(items) => items.iter().map(|i| i.as_str().ok_or_else(|| bad("values must be strings"))).collect::<Result<_, _>>()?,
            Lv::Int(_) | Lv::Float(_) => return Err(bad("values must be strings")),
            _ => return Err(bad("values must be strings")),
        };
        if key.ends_with(b"-bin") {
            let name = MetadataKey::from_bytes(&key).map_err(|_| bad("not a valid header name"))?;
            for value in values {
                md.append_bin(name.clone(), MetadataValue::from_bytes(value));
            }
        } else {
            let name = MetadataKey::from_bytes(&key).map_err(|_| bad("not a valid header name"))?;
            for value in values {
                let value = MetadataValue::try_from(value).map_err(|_| bad("not a valid header value (binary values need a -bin key)"))?;
                md.append(name.clone(), value);
            }
        }
    }
    Ok(md)
}

/// Headers gRPC and HTTP/2 use themselves: not shown to Lua.
fn reserved(key: &str) -> bool {
    matches!(key, "content-type" | "date" | "te" | "grpc-status" | "grpc-message" | "grpc-status-details-bin" | "grpc-encoding" | "grpc-accept-encoding")
}

/// Appends metadata as `{key = "value" or {"v1", "v2"}}`; whether any was written.
fn write_metadata(out: &mut Vec<u8>, md: &MetadataMap) -> bool {
    let mut groups: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for kv in md.iter() {
        let (key, value) = match kv {
            KeyAndValueRef::Ascii(k, v) => (k.as_str(), v.as_bytes().to_vec()),
            KeyAndValueRef::Binary(k, v) => (k.as_str(), v.to_bytes().map(|b| b.to_vec()).unwrap_or_default()),
        };
        if reserved(key) {
            continue;
        }
        match groups.iter_mut().find(|(k, _)| k == key) {
            Some((_, vs)) => vs.push(value),
            None => groups.push((key.to_string(), vec![value])),
        }
    }
    out.push(b'{');
    for (i, (key, values)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text::write_str(out, key.as_bytes());
        out.push(b':');
        if values.len() == 1 {
            text::write_str(out, &values[0]);
        } else {
            out.push(b'[');
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                text::write_str(out, v);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
    !groups.is_empty()
}

/// Appends ` {headers = ..., trailers = ...}` when either has entries.
fn write_headers_trailers(out: &mut Vec<u8>, headers: &MetadataMap, trailers: Option<&MetadataMap>) {
    let mut md = Vec::new();
    md.extend_from_slice(b" {\"headers\":");
    let mut any = write_metadata(&mut md, headers);
    md.extend_from_slice(b",\"trailers\":");
    any |= write_metadata(&mut md, trailers.unwrap_or(&MetadataMap::new()));
    md.push(b'}');
    if any {
        out.extend_from_slice(&md);
    }
}

fn decode_reply(method: &Method, body: Bytes, out: &mut Vec<u8>) -> Result<(), Failure> {
    let msg = DynamicMessage::decode(method.output.clone(), body).map_err(|e| {
        Failure::new(Code::Internal, format!("resty.ffi.grpc: cannot decode the reply as {}: {e}", method.output.full_name()))
    })?;
    convert::write_message(out, &msg);
    Ok(())
}

fn encode_request(method: &Method, v: &Lv) -> Result<Bytes, Failure> {
    let msg = convert::to_message(v, &method.input)
        .map_err(|e| Failure::new(Code::InvalidArgument, format!("resty.ffi.grpc: {}", e.describe(method.input.full_name()))))?;
    Ok(msg.encode_to_vec().into())
}

fn deadline_failure(timeout: Duration) -> Failure {
    Failure::new(Code::DeadlineExceeded, format!("deadline exceeded ({} ms)", timeout.as_millis()))
}

/// Waits for `fut`, at most until `deadline`, and not after `closed` is set.
async fn bounded<F: Future>(
    fut: F,
    deadline: Option<Instant>,
    closed: &mut watch::Receiver<bool>,
) -> Result<F::Output, Failure> {
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        out = fut => Ok(out),
        _ = expired => Err(Failure::new(Code::DeadlineExceeded, "deadline exceeded")),
        _ = closed.wait_for(|c| *c) => Err(Failure::new(Code::Cancelled, "stream closed")),
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub fn new() -> Self {
        State {
            protos: Protos::default(),
            conns: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn close_all(&self) {
        self.conns.lock().unwrap().clear();
        for (_, s) in self.streams.lock().unwrap().drain() {
            s.close();
        }
    }

    /// Handles one request from Lua.
    pub(crate) async fn handle(&self, req: &[u8]) -> Answer {
        let Lv::Arr(args) = text::parse_all(req).map_err(bad_request)? else {
            return Err(bad_request("not an array"));
        };
        let cmd = arg(&args, 0).as_int().unwrap_or(0);
        let Some(cmd) = CMDS.into_iter().find(|c| (*c as i64 as i128) == cmd) else {
            return Err(bad_request(format!("unknown command {cmd}")));
        };
        match cmd {
            Cmd::LoadFile => {
                let path = arg_str(&args, 1, "path")?;
                let includes = arg_strings(&args, 2)?;
                self.protos.load_file(&path, &includes).map_err(|e| Failure::new(Code::InvalidArgument, e))?;
                Ok(b"true".to_vec())
            }
            Cmd::LoadSource => {
                let name = arg_str(&args, 1, "name")?;
                let source = arg_str(&args, 2, "source")?;
                let includes = arg_strings(&args, 3)?;
                self.protos
                    .load_source(&name, &source, &includes)
                    .map_err(|e| Failure::new(Code::InvalidArgument, e))?;
                Ok(b"true".to_vec())
            }
            Cmd::Connect => self.connect(&args).await,
            Cmd::CloseConn => {
                self.conns.lock().unwrap().remove(&arg_id(&args, 1)?);
                Ok(b"true".to_vec())
            }
            Cmd::Unary => self.unary(&args).await,
            Cmd::NewStream => self.new_stream(&args),
            Cmd::Send => self.send(&args).await,
            Cmd::Recv => self.recv(&args).await,
            Cmd::CloseSend => {
                let s = self.stream(arg_id(&args, 1)?)?;
                s.sender.lock().unwrap().take();
                Ok(b"true".to_vec())
            }
            Cmd::Close => {
                let Lv::Arr(ids) = arg(&args, 1) else { return Err(bad_request("expected ids")) };
                for id in ids {
                    let id = id.as_int().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| bad_request("bad id"))?;
                    if let Some(s) = self.streams.lock().unwrap().remove(&id) {
                        s.close();
                    }
                }
                Ok(b"true".to_vec())
            }
            Cmd::Ping => Ok(b"true".to_vec()),
            Cmd::Decode => {
                let name = arg_str(&args, 1, "type")?;
                let Some(bytes) = arg(&args, 2).as_str() else { return Err(bad_request("expected bytes")) };
                let desc = self.protos.message(&name).ok_or_else(|| {
                    Failure::new(Code::InvalidArgument, format!("resty.ffi.grpc: unknown message type {name:?}: no loaded .proto defines it"))
                })?;
                let msg = DynamicMessage::decode(desc, bytes).map_err(|e| {
                    Failure::new(Code::InvalidArgument, format!("resty.ffi.grpc: cannot decode {name}: {e}"))
                })?;
                let mut out = Vec::new();
                convert::write_message(&mut out, &msg);
                Ok(out)
            }
        }
    }

    fn channel(&self, id: u64) -> Result<Channel, Failure> {
        self.conns
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Failure::new(Code::FailedPrecondition, "resty.ffi.grpc: the connection is closed"))
    }

    fn stream(&self, id: u64) -> Result<Arc<Stream>, Failure> {
        self.streams
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Failure::new(Code::FailedPrecondition, "resty.ffi.grpc: the stream is closed"))
    }

    fn method(&self, path: &str) -> Result<Arc<Method>, Failure> {
        self.protos
            .method(path)
            .map_err(|e| Failure::new(Code::Unimplemented, format!("resty.ffi.grpc: {e}")))
    }

    async fn connect(&self, args: &[Lv]) -> Answer {
        let target = arg_str(args, 1, "uri")?;
        let opts = arg(args, 2);
        let ca = opt_str(opts, "ca")?;
        let host = opt_str(opts, "host")?;
        let cert = opt_str(opts, "cert")?;
        let key = opt_str(opts, "priv_key")?;
        let connect_timeout = arg_timeout(args, 3)?.unwrap_or(Duration::from_secs(5));
        let tls = ca.is_some() || cert.is_some() || target.starts_with("https://");
        let uri = match target.split_once("://") {
            Some(("http", rest)) if tls => format!("https://{rest}"),
            Some(_) => target.clone(),
            None if tls => format!("https://{target}"),
            None => format!("http://{target}"),
        };
        let invalid = |what: String| Failure::new(Code::InvalidArgument, format!("resty.ffi.grpc: connect {target}: {what}"));
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| invalid(chain(&e)))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if tls {
            let mut config = ClientTlsConfig::new();
            config = match ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_native_roots(),
            };
            if let Some(host) = host {
                config = config.domain_name(String::from_utf8_lossy(&host).into_owned());
            }
            match (cert, key) {
                (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
                (None, None) => {}
                _ => return Err(invalid("cert and priv_key go together".into())),
            }
            endpoint = endpoint.tls_config(config).map_err(|e| invalid(chain(&e)))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Failure::new(Code::Unavailable, format!("resty.ffi.grpc: connect {target}: {}", chain(&e))))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().unwrap().insert(id, channel);
        Ok(id.to_string().into_bytes())
    }

    async fn unary(&self, args: &[Lv]) -> Answer {
        let channel = self.channel(arg_id(args, 1)?)?;
        let path = arg_str(args, 2, "path")?;
        let method = self.method(&path)?;
        if method.client_streaming || method.server_streaming {
            return Err(Failure::new(
                Code::InvalidArgument,
                format!("resty.ffi.grpc: {path} is a streaming method: call it with conn:new_stream"),
            ));
        }
        let timeout = arg_timeout(args, 3)?;
        let mut request = tonic::Request::new(encode_request(&method, arg(args, 5))?);
        *request.metadata_mut() = metadata_from(arg(args, 4))?;
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        let call = async {
            grpc.ready().await.map_err(|e| Failure::new(Code::Unavailable, chain(&e)))?;
            let response = grpc.server_streaming(request, method.path.clone(), RawCodec).await.map_err(transport)?;
            let (headers, mut body, _) = response.into_parts();
            let fail = |s: Status| Failure::from_status(&transport(s), Some(&headers));
            let message = body
                .message()
                .await
                .map_err(fail)?
                .ok_or_else(|| Failure::new(Code::Internal, "the server answered no message"))?;
            let trailers = body.trailers().await.map_err(fail)?;
            let mut out = Vec::with_capacity(message.len() * 2 + 16);
            decode_reply(&method, message, &mut out)?;
            write_headers_trailers(&mut out, &headers, trailers.as_ref());
            Ok(out)
        };
        let start = Instant::now();
        match timeout {
            // Once the deadline passed, any failure is the deadline's (the
            // server may have given up first, as CANCELLED).
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(Err(_)) if start.elapsed() >= t => Err(deadline_failure(t)),
                Ok(result) => result,
                Err(_) => Err(deadline_failure(t)),
            },
            None => call.await,
        }
    }

    fn new_stream(&self, args: &[Lv]) -> Answer {
        let channel = self.channel(arg_id(args, 1)?)?;
        let path = arg_str(args, 2, "path")?;
        let method = self.method(&path)?;
        let timeout = arg_timeout(args, 3)?;
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        *request.metadata_mut() = metadata_from(arg(args, 4))?;
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        let rpc_path = method.path.clone();
        let call = tokio::spawn(async move {
            grpc.ready().await.map_err(|e| Status::unavailable(chain(&e)))?;
            grpc.streaming(request, rpc_path, RawCodec).await.map_err(transport)
        });
        let stream = Stream {
            method,
            sender: Mutex::new(Some(tx)),
            call: call.abort_handle(),
            recv: tokio::sync::Mutex::new(RecvState::Starting(call)),
            deadline: timeout.map(|t| Instant::now() + t),
            closed: watch::channel(false).0,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.streams.lock().unwrap().insert(id, Arc::new(stream));
        Ok(id.to_string().into_bytes())
    }

    async fn send(&self, args: &[Lv]) -> Answer {
        let s = self.stream(arg_id(args, 1)?)?;
        let body = encode_request(&s.method, arg(args, 2))?;
        let tx = {
            let mut sender = s.sender.lock().unwrap();
            let tx = sender.clone();
            // A method that takes one message: the server starts once the
            // client's side ended (tonic's servers wait for it), so it ends
            // with that message, close_send or not.
            if !s.method.client_streaming {
                sender.take();
            }
            tx
        };
        let Some(tx) = tx else {
            return Err(Failure::new(Code::FailedPrecondition, "resty.ffi.grpc: send after close_send (or a second message to a method that takes one)"));
        };
        let mut closed = s.closed.subscribe();
        bounded(tx.send(body), s.deadline, &mut closed)
            .await?
            .map_err(|_| Failure::new(Code::FailedPrecondition, "resty.ffi.grpc: the call has ended (recv gives its status)"))?;
        Ok(b"true".to_vec())
    }

    async fn recv(&self, args: &[Lv]) -> Answer {
        let s = self.stream(arg_id(args, 1)?)?;
        let mut closed = s.closed.subscribe();
        let mut state = bounded(s.recv.lock(), None, &mut closed).await?;
        loop {
            let step = match &mut *state {
                RecvState::Starting(call) => match bounded(call, s.deadline, &mut closed).await {
                    Ok(Ok(Ok(response))) => {
                        let (headers, body, _) = response.into_parts();
                        RecvState::Open(Box::new(body), headers)
                    }
                    Ok(Ok(Err(status))) => RecvState::Ended(Some(Failure::from(status))),
                    Ok(Err(join)) => RecvState::Ended(Some(Failure::new(Code::Cancelled, join.to_string()))),
                    Err(f) => {
                        s.call.abort();
                        RecvState::Ended(Some(f))
                    }
                },
                RecvState::Open(body, headers) => match bounded(body.message(), s.deadline, &mut closed).await {
                    Ok(Ok(Some(message))) => {
                        let mut out = Vec::with_capacity(message.len() * 2 + 16);
                        decode_reply(&s.method, message, &mut out)?;
                        return Ok(out);
                    }
                    Ok(Ok(None)) => match bounded(body.trailers(), s.deadline, &mut closed).await {
                        Ok(Ok(trailers)) => {
                            let mut out = b"null".to_vec();
                            write_headers_trailers(&mut out, headers, trailers.as_ref());
                            *state = RecvState::Ended(None);
                            return Ok(out);
                        }
                        Ok(Err(status)) => RecvState::Ended(Some(Failure::from_status(&transport(status), Some(headers)))),
                        Err(f) => RecvState::Ended(Some(f)),
                    },
                    Ok(Err(status)) => RecvState::Ended(Some(Failure::from_status(&transport(status), Some(headers)))),
                    Err(f) => RecvState::Ended(Some(f)),
                },
                RecvState::Ended(None) => return Ok(b"null".to_vec()),
                RecvState::Ended(Some(f)) => return Err(f.clone()),
            };
            // Once the deadline passed, any failure is the deadline's.
            let step = match (step, s.deadline) {
                (RecvState::Ended(Some(_)), Some(d)) if Instant::now() >= d => {
                    RecvState::Ended(Some(Failure::new(Code::DeadlineExceeded, "deadline exceeded")))
                }
                (step, _) => step,
            };
            // Leaving Open drops the response body: an unfinished call is
            // cancelled (RST_STREAM).
            *state = step;
        }
    }
}

impl Stream {
    fn close(&self) {
        self.sender.lock().unwrap().take();
        self.call.abort();
        self.closed.send_replace(true);
    }
}

/// Protobuf bytes in and out: messages are encoded and decoded around the
/// call, against the method's descriptors.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
