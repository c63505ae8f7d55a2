//! Round-trip cost (post → poll → respond → drain) through the core, against a
//! baseline of `std::sync::mpsc` channels plus an eventfd wake-up, same run.
//!
//! `cargo bench -p resty_ffi --bench roundtrip` (env ROUNDS overrides the count).

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use resty_ffi::{CompletionQueue, EventFdHook, TaskQueue};

const PAYLOAD: &[u8] = &[b'x'; 512];
const BATCH: usize = 1000;

fn wait_readable(fd: i32) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Ours: a runtime thread polls the task queue and answers through the C ABI.
fn core_roundtrips(rounds: usize, batch: usize) -> f64 {
    let hook = Arc::new(EventFdHook::new().expect("eventfd"));
    let sink = Arc::new(CompletionQueue::new(Arc::clone(&hook)));
    let queue = TaskQueue::new(batch.max(1) * 2);
    let runtime_queue = Arc::clone(&queue);
    let runtime = thread::spawn(move || {
        let tq = Arc::as_ptr(&runtime_queue) as *mut std::ffi::c_void;
        loop {
            let task = resty_ffi::abi::ngx_http_lua_ffi_task_poll(tq);
            if task.is_null() {
                break;
            }
            let mut len = 0;
            let req = resty_ffi::abi::ngx_http_lua_ffi_get_req(task, &mut len);
            // SAFETY: malloc + copy of the `len` request bytes, handed to respond.
            let rsp = unsafe {
                let rsp = libc::malloc(len as usize) as *mut std::ffi::c_char;
                std::ptr::copy_nonoverlapping(req, rsp, len as usize);
                rsp
            };
            resty_ffi::abi::ngx_http_lua_ffi_respond(task, 0, rsp, len);
        }
    });
    let start = Instant::now();
    let mut token = 0u64;
    for _ in 0..rounds / batch {
        for _ in 0..batch {
            queue.post(PAYLOAD, token, &sink).expect("post");
            token += 1;
        }
        let mut answered = 0;
        while answered < batch {
            wait_readable(hook.fd());
            hook.acknowledge();
            answered += sink.drain(usize::MAX, |c| assert_eq!(c.response.len(), PAYLOAD.len()));
        }
    }
    let elapsed = start.elapsed();
    queue.unload();
    runtime.join().unwrap();
    elapsed.as_nanos() as f64 / (rounds / batch * batch) as f64
}

/// Baseline: mpsc there, mpsc back, an eventfd to wake the host.
fn mpsc_roundtrips(rounds: usize, batch: usize) -> f64 {
    let hook = Arc::new(EventFdHook::new().expect("eventfd"));
    let (req_tx, req_rx) = mpsc::channel::<Vec<u8>>();
    let (rsp_tx, rsp_rx) = mpsc::channel::<Vec<u8>>();
    let runtime_hook = Arc::clone(&hook);
    let runtime = thread::spawn(move || {
        use resty_ffi::CompletionHook;
        for req in req_rx {
            rsp_tx.send(req.clone()).unwrap();
            runtime_hook.wake();
        }
    });
    let start = Instant::now();
    for _ in 0..rounds / batch {
        for _ in 0..batch {
            req_tx.send(PAYLOAD.to_vec()).unwrap();
        }
        let mut answered = 0;
        while answered < batch {
            wait_readable(hook.fd());
            hook.acknowledge();
            for rsp in rsp_rx.try_iter() {
                assert_eq!(rsp.len(), PAYLOAD.len());
                answered += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    drop(req_tx);
    runtime.join().unwrap();
    elapsed.as_nanos() as f64 / (rounds / batch * batch) as f64
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    println!("resty_ffi core round trips, 512 B payload, {rounds} calls per case");
    println!("{:<22} {:>12} {:>14} {:>8}", "case", "core ns/call", "mpsc+efd ns", "ratio");
    for (name, batch) in [("serial", 1), ("batch of 1000", BATCH)] {
        let n = if batch == 1 { rounds / 4 } else { rounds };
        // Warm up both paths, then measure.
        core_roundtrips(n / 10, batch);
        mpsc_roundtrips(n / 10, batch);
        let ours = core_roundtrips(n, batch);
        let base = mpsc_roundtrips(n, batch);
        println!("{name:<22} {ours:>12.0} {base:>14.0} {:>7.2}x", base / ours);
    }
}
