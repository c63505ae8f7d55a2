//! An HTTP client runtime on resty_ffi_sdk: each request is a URL, fetched
//! with hyper on tokio. Requests run concurrently, so a hundred slow fetches
//! take about as long as one.
//!
//! - cfg: the number of tokio worker threads (default 2).
//! - request: `http://host:port/path` (plain HTTP, GET).
//! - answer: `true, body` for a 2xx status; `false, status, body` otherwise;
//!   `false, 1, message` when the URL is bad or the fetch fails.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use resty_ffi_sdk::{export_runtime, Error, Response, TaskQueue};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let threads = match cfg.map(|s| s.trim().parse::<usize>()) {
        None => 2,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return Err(22),
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    queue
        .serve_async(threads, move |url| fetch(client.clone(), url))
        .map_err(|_| 2)
}

async fn fetch(client: HttpClient, url: Vec<u8>) -> Result<Response, Error> {
    let uri: Uri = std::str::from_utf8(&url)?.trim().parse()?;
    let resp = client.get(uri).await.map_err(|e| Error::new(1, describe(&e)))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(if status.is_success() {
        Response::ok(body)
    } else {
        Response::error(i32::from(status.as_u16()), body)
    })
}

/// The error and its causes ("client error (Connect): tcp connect error: ...").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

export_runtime!(init);
