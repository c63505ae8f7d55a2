//! `libresty_ffi_grpc.so`: the gRPC client behind `resty/ffi/grpc.lua`.
//!
//! A resty_ffi runtime on the SDK: tonic channels on a tokio runtime, one
//! per Lua VM (nginx worker, Envoy worker thread). `.proto` files are parsed
//! here at run time (protox), and messages convert between protobuf and the
//! Lua tables that `grpc.lua` writes as text (see [`text`]), so Lua needs no
//! C module.
//!
//! cfg: the number of tokio worker threads (default 1).
//!
//! Requests are arrays `[command, ...]` (see [`Cmd`]); answers are
//! `true, text` or `false, grpc_code, message` where the message may be
//! followed by a NUL byte and a table with the status's details and
//! metadata. Not for use without `grpc.lua`: the request format is private.

pub mod convert;
pub mod protos;
pub mod text;
mod client;

use std::sync::Arc;

use resty_ffi_sdk::{export_runtime, TaskQueue};

use client::State;

fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    let threads = match cfg.map(|s| s.trim().parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if (1..=64).contains(&n) => n,
        Some(_) => return Err(22),
    };
    let runtime = resty_ffi_sdk::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("resty_ffi_grpc")
        .build()
        .map_err(|_| 2)?;
    let state = Arc::new(State::new());
    std::thread::Builder::new()
        .name("resty_ffi_grpc_poll".into())
        .spawn(move || client::serve(queue, runtime, state))
        .map_err(|_| 2)?;
    Ok(())
}

export_runtime!(init);
