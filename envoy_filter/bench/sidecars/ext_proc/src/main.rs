//! Benchmark peer (not a test): an Envoy `ext_proc` gRPC sidecar that answers
//! every request itself, the ext_proc way of doing what an ffi echo does.
//!
//! For each request's headers it sends an `ImmediateResponse`: status 200 and,
//! as the body, the bytes of the request header `x-echo` (empty without one).
//!
//! Usage: `ext_proc_echo <unix socket path>` (the socket is replaced if it
//! exists). `SIDECAR_THREADS` sets tokio's worker threads (default: one per core).

use std::pin::Pin;

use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, processing_response, HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

const ECHO_HEADER: &str = "x-echo";
const HTTP_OK: i32 = 200;

struct Echo;

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

/// The `x-echo` header's bytes (Envoy sends `raw_value`; older ones `value`).
fn echo_body(headers: &HttpHeaders) -> Vec<u8> {
    let header = headers
        .headers
        .as_ref()
        .and_then(|map| map.headers.iter().find(|h| h.key.eq_ignore_ascii_case(ECHO_HEADER)));
    match header {
        Some(h) if !h.raw_value.is_empty() => h.raw_value.clone(),
        Some(h) => h.value.clone().into_bytes(),
        None => Vec::new(),
    }
}

fn answer(request: ProcessingRequest) -> Result<ProcessingResponse, Status> {
    let Some(processing_request::Request::RequestHeaders(headers)) = request.request else {
        return Err(Status::invalid_argument("ext_proc_echo: only request headers are processed"));
    };
    let immediate = ImmediateResponse {
        status: Some(HttpStatus { code: HTTP_OK }),
        body: echo_body(&headers),
        ..Default::default()
    };
    Ok(ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(immediate)),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl ExternalProcessor for Echo {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let answers = request.into_inner().map(|message| answer(message?));
        Ok(Response::new(Box::pin(answers)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: ext_proc_echo <unix socket path>")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::var("SIDECAR_THREADS").ok().and_then(|t| t.parse().ok()) {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(async {
        let _ = std::fs::remove_file(&path);
        let incoming = UnixListenerStream::new(UnixListener::bind(&path)?);
        tonic::transport::Server::builder()
            .add_service(ExternalProcessorServer::new(Echo))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
