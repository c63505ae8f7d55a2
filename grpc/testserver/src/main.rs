//! The gRPC server the tests of `resty/ffi/grpc.lua` call, and the direct
//! tonic client that the benchmark measures as its floor.
//!
//! ```text
//! grpc_testserver serve [--port P] [--tls CERT KEY] [--client-ca CA]
//!     prints "listening PORT" once it accepts calls
//! grpc_testserver bench ADDR CALLS IN_FLIGHT
//!     helloworld.Greeter/SayHello from Rust; prints "calls_per_s p50_us p99_us"
//! ```
//!
//! Services (`grpc/tests/protos`): helloworld.Greeter, grpc.examples.echo.Echo,
//! routeguide.RouteGuide (one method of each kind) and test.Test (echo of
//! every field kind, metadata, failures with details, delays, endless
//! streams, counters of cancelled streams).

mod pb;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tower::service_fn;

use pb::*;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

#[derive(Default)]
struct Counters {
    started: AtomicI64,
    cancelled: AtomicI64,
    finished: AtomicI64,
    unary: AtomicI64,
}

/// Counts a streaming call: cancelled unless marked finished before drop.
struct Tracked {
    counters: Arc<Counters>,
    finished: bool,
}

impl Tracked {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.started.fetch_add(1, Ordering::SeqCst);
        Tracked { counters: counters.clone(), finished: false }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let c = if self.finished { &self.counters.finished } else { &self.counters.cancelled };
        c.fetch_add(1, Ordering::SeqCst);
    }
}

fn features() -> Vec<Feature> {
    (0..10)
        .map(|i| Feature {
            name: format!("feature-{i}"),
            location: Some(Point { latitude: 400_000_000 + i * 10_000_000, longitude: -750_000_000 + i * 10_000_000 }),
        })
        .collect()
}

fn in_rect(p: &Point, r: &Rectangle) -> bool {
    let (lo, hi) = (r.lo.unwrap_or_default(), r.hi.unwrap_or_default());
    let (left, right) = (lo.longitude.min(hi.longitude), lo.longitude.max(hi.longitude));
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    p.longitude >= left && p.longitude <= right && p.latitude >= bottom && p.latitude <= top
}

/// The request's `x-*` metadata, to send back as headers.
fn echo_headers(md: &MetadataMap) -> MetadataMap {
    let mut out = MetadataMap::new();
    for kv in md.iter() {
        match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                out.append(k.clone(), v.clone());
            }
            tonic::metadata::KeyAndValueRef::Binary(k, v) if k.as_str().starts_with("x-") => {
                out.append_bin(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    out
}

/// A failure with a google.rpc.Status in its details (one test.Point in it).
fn failure(code: i32, message: &str) -> Status {
    let point = XyPoint { x: 1, y: 2 };
    let details = RpcStatus {
        code,
        message: message.to_string(),
        details: vec![Any { type_url: "type.googleapis.com/test.Point".into(), value: point.encode_to_vec() }],
    };
    let mut md = MetadataMap::new();
    md.insert("x-failure", MetadataValue::from_static("yes"));
    Status::with_details_and_metadata(Code::from(code), message, details.encode_to_vec().into(), md)
}

async fn control(c: &Control) -> Result<(), Status> {
    if c.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(c.delay_ms as u64)).await;
    }
    if c.fail_code != 0 {
        return Err(failure(c.fail_code, &c.fail_message));
    }
    Ok(())
}

/// A gRPC service: routes `/{NAME}/{method}` to the handlers in `route`.
#[derive(Clone)]
struct Svc {
    name: &'static str,
    counters: Arc<Counters>,
}

macro_rules! named {
    ($ty:ident, $name:literal) => {
        #[derive(Clone)]
        struct $ty(Svc);
        impl NamedService for $ty {
            const NAME: &'static str = $name;
        }
        impl tower::Service<http::Request<Body>> for $ty {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxFuture<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, req: http::Request<Body>) -> Self::Future {
                let svc = self.0.clone();
                Box::pin(async move { Ok(svc.route(req).await) })
            }
        }
    };
}

named!(Greeter, "helloworld.Greeter");
named!(Echo, "grpc.examples.echo.Echo");
named!(RouteGuide, "routeguide.RouteGuide");
named!(TestSvc, "test.Test");

macro_rules! grpc {
    ($kind:ident, $req:expr, $f:expr) => {
        tonic::server::Grpc::new(ProstCodec::default()).$kind(service_fn($f), $req).await
    };
}

impl Svc {
    async fn route(self, req: http::Request<Body>) -> http::Response<Body> {
        let path = req.uri().path().to_string();
        let method = path.rsplit('/').next().unwrap_or_default().to_string();
        let c = self.counters.clone();
        match (self.name, method.as_str()) {
            ("helloworld.Greeter", "SayHello") => grpc!(unary, req, |r: Request<HelloRequest>| async move {
                Ok::<_, Status>(Response::new(HelloReply { message: format!("Hello {}!", r.get_ref().name) }))
            }),
            ("grpc.examples.echo.Echo", "UnaryEcho") => grpc!(unary, req, |r: Request<EchoRequest>| async move {
                Ok::<_, Status>(Response::new(EchoResponse { message: r.into_inner().message }))
            }),
            ("routeguide.RouteGuide", "GetFeature") => grpc!(unary, req, |r: Request<Point>| async move {
                let p = r.into_inner();
                let found = features().into_iter().find(|f| f.location == Some(p));
                Ok::<_, Status>(Response::new(found.unwrap_or(Feature { name: String::new(), location: Some(p) })))
            }),
            ("routeguide.RouteGuide", "ListFeatures") => grpc!(server_streaming, req, |r: Request<Rectangle>| async move {
                let rect = r.into_inner();
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    for f in features().into_iter().filter(|f| in_rect(&f.location.unwrap_or_default(), &rect)) {
                        if tx.send(Ok(f)).await.is_err() {
                            return;
                        }
                    }
                });
                Ok::<_, Status>(Response::new(ReceiverStream::new(rx)))
            }),
            ("routeguide.RouteGuide", "RecordRoute") => {
                grpc!(client_streaming, req, |r: Request<Streaming<Point>>| async move {
                    let start = Instant::now();
                    let mut stream = r.into_inner();
                    let all = features();
                    let mut summary = RouteSummary::default();
                    while let Some(p) = stream.next().await {
                        let p = p?;
                        summary.point_count += 1;
                        if all.iter().any(|f| f.location == Some(p)) {
                            summary.feature_count += 1;
                        }
                    }
                    summary.elapsed_time = start.elapsed().as_secs() as i32;
                    Ok::<_, Status>(Response::new(summary))
                })
            }
            ("routeguide.RouteGuide", "RouteChat") => grpc!(streaming, req, move |r: Request<Streaming<RouteNote>>| {
                let c = c.clone();
                async move {
                    // Each note comes back at once, its message prefixed.
                    let mut stream = r.into_inner();
                    let (tx, rx) = mpsc::channel::<Result<RouteNote, Status>>(4);
                    tokio::spawn(async move {
                        let mut tracked = Tracked::new(&c);
                        loop {
                            tokio::select! {
                                note = stream.next() => match note {
                                    Some(Ok(mut note)) => {
                                        note.message = format!("echo: {}", note.message);
                                        if tx.send(Ok(note)).await.is_err() {
                                            return;
                                        }
                                    }
                                    Some(Err(_)) => return,
                                    None => break,
                                },
                                _ = tx.closed() => return,
                            }
                        }
                        tracked.finished = true;
                    });
                    Ok::<_, Status>(Response::new(ReceiverStream::new(rx)))
                }
            }),
            ("test.Test", "Echo") => grpc!(unary, req, move |r: Request<Everything>| {
                let c = c.clone();
                async move {
                    c.unary.fetch_add(1, Ordering::SeqCst);
                    let headers = echo_headers(r.metadata());
                    let mut resp = Response::new(r.into_inner());
                    *resp.metadata_mut() = headers;
                    Ok::<_, Status>(resp)
                }
            }),
            ("test.Test", "Inspect") => grpc!(unary, req, |r: Request<Everything>| async move {
                Ok::<_, Status>(Response::new(Reply { text: format!("{:?}", r.into_inner()) }))
            }),
            ("test.Test", "Control") => grpc!(unary, req, |r: Request<Control>| async move {
                let headers = echo_headers(r.metadata());
                control(r.get_ref()).await?;
                let mut resp = Response::new(Reply { text: "done".into() });
                *resp.metadata_mut() = headers;
                Ok::<_, Status>(resp)
            }),
            ("test.Test", "Ticks") => grpc!(server_streaming, req, move |r: Request<Control>| {
                let c = c.clone();
                async move {
                    let ctl = r.into_inner();
                    let (tx, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        let mut tracked = Tracked::new(&c);
                        let mut i = 0;
                        while ctl.count == 0 || i < ctl.count {
                            i += 1;
                            if i > 1 && ctl.interval_ms > 0 {
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_millis(ctl.interval_ms as u64)) => {}
                                    _ = tx.closed() => return,
                                }
                            }
                            if tx.send(Ok(Reply { text: format!("tick {i}") })).await.is_err() {
                                return;
                            }
                        }
                        if ctl.fail_code != 0 {
                            let _ = tx.send(Err(failure(ctl.fail_code, &ctl.fail_message))).await;
                        }
                        tracked.finished = true;
                    });
                    Ok::<_, Status>(Response::new(ReceiverStream::new(rx)))
                }
            }),
            ("test.Test", "Stats") => grpc!(unary, req, move |_: Request<Empty>| {
                let c = c.clone();
                async move {
                    Ok::<_, Status>(Response::new(Stats {
                        started: c.started.load(Ordering::SeqCst),
                        cancelled: c.cancelled.load(Ordering::SeqCst),
                        finished: c.finished.load(Ordering::SeqCst),
                        unary: c.unary.load(Ordering::SeqCst),
                    }))
                }
            }),
            _ => Status::unimplemented(format!("no method {path}")).into_http(),
        }
    }
}

async fn serve(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 0u16;
    let mut tls: Option<ServerTlsConfig> = None;
    let mut client_ca = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--port" => {
                port = args[i + 1].parse()?;
                i += 2;
            }
            "--tls" => {
                let cert = std::fs::read(&args[i + 1])?;
                let key = std::fs::read(&args[i + 2])?;
                tls = Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)));
                i += 3;
            }
            "--client-ca" => {
                client_ca = Some(Certificate::from_pem(std::fs::read(&args[i + 1])?));
                i += 2;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    let counters = Arc::new(Counters::default());
    let svc = |name| Svc { name, counters: counters.clone() };
    let mut builder = Server::builder();
    if let Some(mut tls) = tls {
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(ca);
        }
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .add_service(Greeter(svc("helloworld.Greeter")))
        .add_service(Echo(svc("grpc.examples.echo.Echo")))
        .add_service(RouteGuide(svc("routeguide.RouteGuide")))
        .add_service(TestSvc(svc("test.Test")));
    println!("listening {port}");
    use std::io::Write;
    std::io::stdout().flush()?;
    router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await?;
    Ok(())
}

/// SayHello from Rust, `in_flight` at a time: the floor the Lua client is
/// measured against.
async fn bench(addr: &str, calls: usize, in_flight: usize) -> Result<(), Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())?.tcp_nodelay(true).connect().await?;
    let path: http::uri::PathAndQuery = "/helloworld.Greeter/SayHello".parse()?;
    let per_task = calls / in_flight.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let channel = channel.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
                let resp: Response<HelloReply> = grpc
                    .unary(Request::new(HelloRequest { name: "foobar".into() }), path.clone(), ProstCodec::default())
                    .await?;
                assert_eq!(resp.get_ref().message, "Hello foobar!");
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, Status>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("{:.0} {:.1} {:.1}", lat.len() as f64 / secs, pct(0.5), pct(0.99));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(serve(&args[1..]))
        }
        Some("bench") if args.len() == 4 => {
            // One tokio worker: the Lua side has one too (cfg of grpc.lua).
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            rt.block_on(bench(&args[1], args[2].parse()?, args[3].parse()?))
        }
        _ => Err("usage: grpc_testserver serve [--port P] [--tls CERT KEY] [--client-ca CA] | bench ADDR CALLS IN_FLIGHT".into()),
    }
}
