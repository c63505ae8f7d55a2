//! The runtime ABI extensions (SPEC §2, "Extensions"): batch and non-blocking
//! polling, the queue's readiness fd, runtime logs, and per-runtime stats.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resty_ffi::abi::{
    ngx_http_lua_ffi_get_req, ngx_http_lua_ffi_respond, resty_ffi_log, resty_ffi_queue_fd, resty_ffi_task_poll_many,
    resty_ffi_task_try_poll,
};
use resty_ffi::host_abi::{resty_ffi_log_drain, resty_ffi_log_use_eventfd, resty_ffi_log_use_writer};
use resty_ffi::{CallbackHook, CompletionQueue, TaskQueue};

fn tq(queue: &Arc<TaskQueue>) -> *mut c_void {
    Arc::as_ptr(queue) as *mut c_void
}

fn sink() -> Arc<CompletionQueue> {
    Arc::new(CompletionQueue::new(CallbackHook::new(|| {})))
}

fn request(task: *mut c_void) -> Vec<u8> {
    let mut len: c_int = 0;
    let ptr = ngx_http_lua_ffi_get_req(task, &mut len);
    // SAFETY: get_req gives `len` readable bytes.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) }.to_vec()
}

fn readable(fd: c_int) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

#[test]
fn poll_many_hands_out_a_batch_then_zero_at_the_end() {
    let sink = sink();
    let queue = TaskQueue::new(64);
    for i in 0..5u64 {
        queue.post(format!("r{i}").as_bytes(), i, &sink).unwrap();
    }
    queue.unload();
    let mut tasks = [std::ptr::null_mut(); 3];
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 3), 3);
    let mut got: Vec<Vec<u8>> = tasks.iter().map(|&t| request(t)).collect();
    tasks.iter().for_each(|&t| ngx_http_lua_ffi_respond(t, 0, std::ptr::null_mut(), 0));
    // Two left, then the end: the end waits for the next call.
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 3), 2);
    got.extend(tasks[..2].iter().map(|&t| request(t)));
    tasks[..2].iter().for_each(|&t| ngx_http_lua_ffi_respond(t, 0, std::ptr::null_mut(), 0));
    assert_eq!(got, ["r0", "r1", "r2", "r3", "r4"].map(|s| s.as_bytes().to_vec()));
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 3), 0);
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 3), 0);
}

#[test]
fn poll_many_rejects_bad_arguments_without_touching_the_queue() {
    let sink = sink();
    let queue = TaskQueue::new(4);
    queue.post(b"x", 1, &sink).unwrap();
    let mut tasks = [std::ptr::null_mut(); 1];
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 0), 0);
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), -5), 0);
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), std::ptr::null_mut(), 1), 0);
    assert_eq!(resty_ffi_task_poll_many(std::ptr::null_mut(), tasks.as_mut_ptr(), 1), 0);
    assert_eq!(queue.len(), 1);
}

#[test]
fn poll_many_blocks_until_a_task_arrives() {
    let sink = sink();
    let queue = TaskQueue::new(4);
    let poller = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let mut tasks = [std::ptr::null_mut(); 8];
            let n = resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 8);
            let started = Instant::now();
            tasks[..n as usize].iter().for_each(|&t| ngx_http_lua_ffi_respond(t, 0, std::ptr::null_mut(), 0));
            (n, started)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let posted = Instant::now();
    queue.post(b"late", 1, &sink).unwrap();
    let (n, returned) = poller.join().unwrap();
    assert_eq!(n, 1);
    assert!(returned >= posted);
}

#[test]
fn try_poll_never_blocks_and_ends_with_minus_one() {
    let sink = sink();
    let queue = TaskQueue::new(4);
    let mut task = std::ptr::null_mut();
    let started = Instant::now();
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), 0);
    assert!(started.elapsed() < Duration::from_millis(50));
    queue.post(b"a", 1, &sink).unwrap();
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), 1);
    assert_eq!(request(task), b"a");
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    queue.unload();
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), -1);
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), -1);
    assert_eq!(resty_ffi_task_try_poll(std::ptr::null_mut(), &mut task), -1);
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), std::ptr::null_mut()), -1);
}

#[test]
fn queue_fd_is_readable_exactly_while_tasks_wait_and_at_the_end() {
    let sink = sink();
    let queue = TaskQueue::new(16);
    queue.post(b"before", 0, &sink).unwrap();
    let fd = resty_ffi_queue_fd(tq(&queue));
    assert!(fd >= 0);
    assert_eq!(resty_ffi_queue_fd(tq(&queue)), fd, "one fd per queue");
    assert!(readable(fd), "a task posted before the fd existed");
    let mut task = std::ptr::null_mut();
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), 1);
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    assert!(!readable(fd), "empty queue");
    for i in 0..3 {
        queue.post(b"x", i, &sink).unwrap();
    }
    assert!(readable(fd));
    for _ in 0..2 {
        assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), 1);
        ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
        assert!(readable(fd), "a task still waits");
    }
    let mut tasks = [std::ptr::null_mut(); 4];
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 4), 1);
    ngx_http_lua_ffi_respond(tasks[0], 0, std::ptr::null_mut(), 0);
    assert!(!readable(fd), "the blocking polls reset it too");
    queue.unload();
    assert!(readable(fd), "the end is readable");
    assert_eq!(resty_ffi_task_try_poll(tq(&queue), &mut task), -1);
    assert!(readable(fd));
    assert_eq!(resty_ffi_queue_fd(std::ptr::null_mut()), -1);
}

#[test]
fn an_event_loop_on_the_fd_misses_no_task_under_concurrent_posts() {
    const N: u64 = 20_000;
    let sink = sink();
    let queue = TaskQueue::new(N as usize);
    let fd = resty_ffi_queue_fd(tq(&queue));
    let looper = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let mut served = 0u64;
            loop {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd; a stuck fd fails the test by timeout.
                assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "fd never became readable");
                let mut task = std::ptr::null_mut();
                loop {
                    match resty_ffi_task_try_poll(tq(&queue), &mut task) {
                        1 => {
                            ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
                            served += 1;
                        }
                        0 => break,
                        _ => return served,
                    }
                }
            }
        })
    };
    let posters: Vec<_> = (0..2)
        .map(|p| {
            let (queue, sink) = (Arc::clone(&queue), Arc::clone(&sink));
            std::thread::spawn(move || {
                for i in 0..N / 2 {
                    queue.post(b"t", p * N + i, &sink).unwrap();
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    posters.into_iter().for_each(|p| p.join().unwrap());
    queue.unload();
    assert_eq!(looper.join().unwrap(), N);
}

#[test]
fn stats_count_posts_answers_failures_and_latency() {
    let sink = sink();
    let queue = TaskQueue::new(2);
    for i in 0..2 {
        queue.post(b"x", i, &sink).unwrap();
    }
    assert!(queue.post(b"x", 9, &sink).is_err());
    let mut tasks = [std::ptr::null_mut(); 2];
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 2), 2);
    std::thread::sleep(Duration::from_millis(5));
    ngx_http_lua_ffi_respond(tasks[0], 0, std::ptr::null_mut(), 0);
    ngx_http_lua_ffi_respond(tasks[1], 7, std::ptr::null_mut(), 0);
    queue.post(b"x", 3, &sink).unwrap();
    let s = queue.stats().snapshot();
    assert_eq!((s.posted, s.answered, s.failed, s.queue_full, s.in_flight, s.samples), (3, 2, 1, 1, 1, 2));
    assert!(s.max_us >= 5_000 && s.p50_us >= 5_000, "{s:?}");
}

/// The log is one per process: every case of it in one test.
#[test]
fn runtime_logs_reach_the_host_through_its_eventfd_and_drops_are_counted() {
    extern "C" fn collect(ctx: *mut c_void, level: c_int, msg: *const c_char, len: usize) {
        // SAFETY: ctx is the Mutex below; msg has len bytes.
        let lines = unsafe { &*(ctx as *const Mutex<Vec<(c_int, String)>>) };
        let text = unsafe { std::slice::from_raw_parts(msg as *const u8, len) };
        lines.lock().unwrap().push((level, String::from_utf8_lossy(text).into_owned()));
    }
    extern "C" fn ignore(_: *mut c_void, _: c_int, _: *const c_char, _: usize) {}

    let fd = resty_ffi_log_use_eventfd();
    assert!(fd >= 0);
    assert_eq!(resty_ffi_log_use_eventfd(), -1, "one consumer per process");
    // SAFETY: `ignore` may be called from any thread.
    assert_eq!(unsafe { resty_ffi_log_use_writer(ignore, std::ptr::null_mut()) }, -1);
    let lines = Mutex::new(Vec::new());
    let ctx = &lines as *const _ as *mut c_void;
    let drain = || {
        // SAFETY: `collect` with `ctx` as above.
        while unsafe { resty_ffi_log_drain(collect, ctx, 64) } == 64 {}
        std::mem::take(&mut *lines.lock().unwrap())
    };

    assert!(!readable(fd));
    let queue = TaskQueue::new(1);
    queue.set_name("demo");
    resty_ffi_log(tq(&queue), 4, c"boom".as_ptr(), -1);
    resty_ffi_log(std::ptr::null_mut(), 7, b"a\0b!".as_ptr() as *const c_char, 3);
    resty_ffi_log(std::ptr::null_mut(), 0, c"low".as_ptr(), -1);
    resty_ffi_log(std::ptr::null_mut(), 99, c"high".as_ptr(), -1);
    resty_ffi_log(std::ptr::null_mut(), 4, std::ptr::null(), 3);
    assert!(readable(fd));
    let got = drain();
    assert!(!readable(fd));
    let expected: Vec<(c_int, String)> =
        vec![(4, "demo: boom".into()), (7, "a\0b".into()), (1, "low".into()), (8, "high".into())];
    assert_eq!(got, expected);

    // Many threads at once; a full queue never blocks, and the drop is one line.
    let started = Instant::now();
    let logged = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let logged = Arc::clone(&logged);
            std::thread::spawn(move || {
                for _ in 0..5000 {
                    resty_ffi_log(std::ptr::null_mut(), 6, c"spam".as_ptr(), -1);
                    logged.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    let got = drain();
    let dropped = 20_000 - resty_ffi::log::LOG_QUEUE_LEN;
    assert_eq!(got[0], (5, format!("resty_ffi: {dropped} log messages dropped")));
    assert_eq!(got.len(), 1 + resty_ffi::log::LOG_QUEUE_LEN);
    assert!(got[1..].iter().all(|(level, text)| *level == 6 && text == "spam"));

    // Long messages are cut.
    let long = vec![b'z'; resty_ffi::log::MAX_MESSAGE + 10];
    resty_ffi_log(std::ptr::null_mut(), 4, long.as_ptr() as *const c_char, long.len() as c_int);
    let got = drain();
    assert_eq!(got[0].1.len(), resty_ffi::log::MAX_MESSAGE + 3);
    assert!(got[0].1.ends_with("zzz..."));
}

#[test]
fn answers_to_a_closed_sink_count_as_cancelled_unless_the_caller_gave_up() {
    let sink = sink();
    let queue = TaskQueue::new(8);
    for token in 0..3 {
        queue.post(b"x", token, &sink).unwrap();
    }
    sink.cancel(1); // this caller timed out (counted by the host)
    sink.close(); // the other callers went away with their host (a stream reset)
    let mut tasks = [std::ptr::null_mut(); 3];
    assert_eq!(resty_ffi_task_poll_many(tq(&queue), tasks.as_mut_ptr(), 3), 3);
    tasks.iter().for_each(|&t| ngx_http_lua_ffi_respond(t, 0, std::ptr::null_mut(), 0));
    let s = queue.snapshot();
    assert_eq!((s.answered, s.cancelled, s.in_flight), (3, 2, 0));
}
