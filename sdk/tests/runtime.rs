//! The SDK driven by the real core as host: one runtime (the `libffi_init`
//! exported below), started in a different mode per test through its cfg.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resty_ffi::{CallbackHook, CompletionQueue, TaskQueue as HostQueue};
use resty_ffi_sdk::{export_runtime, Error, Response, TaskQueue, CFG_NOT_UTF8, PANIC_RC};

fn sync_handler(req: &[u8]) -> Result<Vec<u8>, Error> {
    match req {
        b"panic" => panic!("boom"),
        b"error" => Err(Error::new(5, "bad request")),
        _ => Ok(std::str::from_utf8(req)?.to_uppercase().into_bytes()),
    }
}

async fn async_handler(req: Vec<u8>) -> Response {
    if req == b"panic" {
        panic!("async boom");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Response::ok(req)
}

fn init(cfg: Option<&str>, queue: TaskQueue) -> Result<(), i32> {
    match cfg {
        Some("sync") => queue.serve(2, sync_handler).map_err(|_| 2),
        Some("async") => queue.serve_async(2, async_handler).map_err(|_| 2),
        Some("drop") => {
            std::thread::spawn(move || {
                while let Some(task) = queue.poll() {
                    drop(task);
                }
            });
            Ok(())
        }
        Some("panic") => panic!("init failed"),
        Some(rc) => Err(rc.parse().unwrap()),
        None => Ok(()),
    }
}

export_runtime!(init);

/// A loaded runtime as the host sees it.
struct Host {
    queue: Arc<HostQueue>,
    sink: Arc<CompletionQueue>,
    init_rc: i32,
}

impl Host {
    fn load(cfg: &[u8]) -> Host {
        let queue = HostQueue::new(4096);
        // Like the hosts, keep the queue for the life of the process: poll
        // threads may still use it after unload.
        std::mem::forget(Arc::clone(&queue));
        let cfg = CString::new(cfg).unwrap();
        // SAFETY: a C string and a live queue, like the hosts pass.
        let init_rc = unsafe { libffi_init(cfg.as_ptr() as *mut c_char, Arc::as_ptr(&queue) as *mut c_void) };
        Host {
            queue,
            sink: Arc::new(CompletionQueue::new(CallbackHook::new(|| {}))),
            init_rc,
        }
    }

    /// Posts `reqs` and waits for every answer: (rc, body) in request order.
    fn call_all(&self, reqs: &[&[u8]]) -> Vec<(i32, Vec<u8>)> {
        for (token, req) in reqs.iter().enumerate() {
            self.queue.post(req, token as u64, &self.sink).unwrap();
        }
        let mut out = vec![None; reqs.len()];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < reqs.len() {
            assert!(Instant::now() < deadline, "only {got} of {} answered", reqs.len());
            got += self
                .sink
                .drain(64, |c| out[c.token as usize] = Some((c.rc, c.response.to_vec())));
            std::thread::sleep(Duration::from_millis(1));
        }
        out.into_iter().map(Option::unwrap).collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.queue.unload();
    }
}

#[test]
fn init_rc_and_cfg() {
    assert_eq!(Host::load(b"7").init_rc, 7);
    assert_eq!(Host::load(b"0").init_rc, 1, "an Err(0) must not look like success");
    assert_eq!(Host::load(b"panic").init_rc, PANIC_RC);
    assert_eq!(Host::load(b"\xff").init_rc, CFG_NOT_UTF8);
}

#[test]
fn blocking_handlers_answer_bodies_errors_and_panics() {
    let host = Host::load(b"sync");
    assert_eq!(host.init_rc, 0);
    let answers = host.call_all(&[b"hello", b"", b"error", b"\xff", b"panic", b"a\0b"]);
    assert_eq!(answers[0], (0, b"HELLO".to_vec()));
    assert_eq!(answers[1], (0, vec![]));
    assert_eq!(answers[2], (5, b"bad request".to_vec()));
    assert_eq!(answers[3].0, Error::RC);
    assert!(String::from_utf8_lossy(&answers[3].1).contains("invalid utf-8"));
    assert_eq!(
        answers[4],
        (PANIC_RC, b"resty_ffi_sdk: handler panicked: boom".to_vec())
    );
    assert_eq!(answers[5], (0, b"A\0B".to_vec()), "the thread survived the panic");
}

#[test]
fn async_requests_run_concurrently() {
    let host = Host::load(b"async");
    let reqs: Vec<Vec<u8>> = (0..100).map(|i| format!("req {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = reqs.iter().map(Vec::as_slice).collect();
    let start = Instant::now();
    let answers = host.call_all(&refs);
    let took = start.elapsed();
    assert!(answers
        .iter()
        .zip(&reqs)
        .all(|((rc, body), req)| *rc == 0 && body == req));
    // 100 sleeps of 300 ms one after the other would take 30 s, two at a
    // time (one per thread) 15 s; together about 0.3 s. The bound leaves
    // room for a loaded machine and still fails anything but overlap.
    assert!(took < Duration::from_secs(6), "100 calls took {took:?}");
    let panicked = host.call_all(&[b"panic"]);
    assert_eq!(
        panicked[0],
        (PANIC_RC, b"resty_ffi_sdk: handler panicked: async boom".to_vec())
    );
}

#[test]
fn async_requests_in_flight_are_answered_after_unload() {
    let host = Host::load(b"async");
    for token in 0..10 {
        host.queue.post(b"late", token, &host.sink).unwrap();
    }
    host.queue.unload();
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while answers.len() < 10 && Instant::now() < deadline {
        host.sink.drain(64, |c| answers.push((c.rc, c.response.to_vec())));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(answers, vec![(0, b"late".to_vec()); 10]);
}

#[test]
fn dropped_tasks_are_answered() {
    let host = Host::load(b"drop");
    let answers = host.call_all(&[b"x"]);
    assert_eq!(
        answers[0],
        (
            Error::DROPPED_RC,
            b"resty_ffi_sdk: request dropped without a response".to_vec()
        )
    );
}
