//! The runtime C ABI (SPEC §2), including misuse, driven through the exported functions.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resty_ffi::abi::{ngx_http_lua_ffi_get_req, ngx_http_lua_ffi_respond, ngx_http_lua_ffi_task_poll};
use resty_ffi::host_abi::{resty_ffi_sink_free, resty_ffi_sink_new, resty_ffi_sink_spin};
use resty_ffi::{CallbackHook, Completion, CompletionQueue, Fault, PostError, TaskQueue};

fn tq(queue: &Arc<TaskQueue>) -> *mut c_void {
    Arc::as_ptr(queue) as *mut c_void
}

fn counting_sink() -> (Arc<CompletionQueue>, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    let hook = CallbackHook::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (Arc::new(CompletionQueue::new(hook)), wakes)
}

fn malloc_copy(bytes: &[u8]) -> *mut c_char {
    // SAFETY: allocates and fills `bytes.len() + 1` bytes (NUL-terminated copy).
    unsafe {
        let p = libc::malloc(bytes.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        p as *mut c_char
    }
}

fn drain_all(sink: &CompletionQueue) -> Vec<Completion> {
    let mut out = Vec::new();
    while sink.drain(16, |c| out.push(c)) == 16 {}
    out
}

fn request_of(task: *mut c_void) -> (Vec<u8>, u8) {
    let mut len: c_int = -1;
    let ptr = ngx_http_lua_ffi_get_req(task, &mut len);
    assert!(!ptr.is_null());
    // SAFETY: get_req promises `len` bytes followed by a NUL.
    unsafe {
        let bytes = std::slice::from_raw_parts(ptr as *const u8, len as usize + 1);
        (bytes[..len as usize].to_vec(), bytes[len as usize])
    }
}

#[test]
fn echo_round_trip_is_binary_safe() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"a\0b\0", 1, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    let (req, nul) = request_of(task);
    assert_eq!((req.as_slice(), nul), (&b"a\0b\0"[..], 0));
    ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"x\0y"), 3);
    let done = drain_all(&sink);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].token, done[0].rc, done[0].response.to_vec()), (1, 0, b"x\0y".to_vec()));
}

#[test]
fn requests_around_the_inline_size_keep_bytes_and_nul() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    for size in [62, 63, 64, 65, 4096] {
        let request: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        queue.post(&request, size as u64, &sink).unwrap();
        let task = ngx_http_lua_ffi_task_poll(tq(&queue));
        assert_eq!(request_of(task), (request, 0), "size {size}");
        ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    }
}

#[test]
fn empty_request_is_an_empty_c_string_and_len_may_be_null() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"", 2, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    assert_eq!(request_of(task), (vec![], 0));
    let ptr = ngx_http_lua_ffi_get_req(task, std::ptr::null_mut());
    // SAFETY: a non-NULL request is NUL-terminated.
    assert_eq!(unsafe { *ptr }, 0);
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    let done = drain_all(&sink);
    assert_eq!((done[0].rc, done[0].response.len()), (0, 0));
}

#[test]
fn nil_request_is_null_with_length_zero() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post_nil(4, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    let mut len: c_int = -1;
    assert!(ngx_http_lua_ffi_get_req(task, &mut len).is_null());
    assert_eq!(len, 0);
    assert!(ngx_http_lua_ffi_get_req(task, std::ptr::null_mut()).is_null());
    ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"seen"), 4);
    assert_eq!(drain_all(&sink)[0].response.to_vec(), b"seen");
}

#[test]
fn zero_rsp_len_means_nul_terminated_string() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"q", 3, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    ngx_http_lua_ffi_respond(task, 5, malloc_copy(b"bad input"), 0);
    let done = drain_all(&sink);
    assert_eq!((done[0].rc, done[0].response.to_vec()), (5, b"bad input".to_vec()));
}

#[test]
fn negative_rsp_len_fails_the_call_and_frees_rsp_unread() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    for (token, rsp_len) in [(1, -1), (2, c_int::MIN)] {
        queue.post(b"q", token, &sink).unwrap();
        let task = ngx_http_lua_ffi_task_poll(tq(&queue));
        // SAFETY: three bytes without a NUL: reading past them is a bug ASan reports.
        let rsp = unsafe { libc::malloc(3) } as *mut c_char;
        // SAFETY: `rsp` has room for 3 bytes.
        unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), rsp as *mut u8, 3) };
        ngx_http_lua_ffi_respond(task, 7, rsp, rsp_len);
    }
    queue.post(b"q", 3, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), -5);
    let done = drain_all(&sink);
    assert_eq!(done.len(), 3);
    for c in &done {
        assert_eq!((c.fault, c.response.len()), (Some(Fault::NegativeLength), 0), "token {}", c.token);
    }
    assert_eq!(Fault::NegativeLength.message().to_str().unwrap(), "resty_ffi: runtime answered with a negative length");
}

#[test]
fn null_task_and_null_queue_are_harmless() {
    assert!(ngx_http_lua_ffi_task_poll(std::ptr::null_mut()).is_null());
    let mut len: c_int = 99;
    assert!(ngx_http_lua_ffi_get_req(std::ptr::null_mut(), &mut len).is_null());
    assert_eq!(len, 0);
    // The response of a NULL task is freed. A 256 MiB one, which malloc
    // maps on its own (and nothing touches), leaves malloc's mapped total
    // when it is freed. A sanitizer's allocator is not in malloc's
    // statistics: there LeakSanitizer checks it (ci/sanitize.sh).
    const BIG: usize = 256 << 20;
    // SAFETY: malloc has no memory arguments; the buffer is handed to respond.
    let rsp = unsafe { libc::malloc(BIG) } as *mut c_char;
    assert!(!rsp.is_null());
    let mapped = malloc_mapped_bytes();
    ngx_http_lua_ffi_respond(std::ptr::null_mut(), 0, rsp, BIG as c_int);
    if sanitizer().is_none() {
        let freed = mapped.saturating_sub(malloc_mapped_bytes());
        assert!(freed >= BIG / 2, "the answer to a NULL task was not freed ({freed} bytes unmapped)");
    }
}

/// The sanitizer the tests run under (ci/sanitize.sh says), if any.
fn sanitizer() -> Option<String> {
    std::env::var("RESTY_FFI_SANITIZER").ok().filter(|s| !s.is_empty())
}

/// Bytes in blocks that glibc's malloc mapped on their own (large ones).
fn malloc_mapped_bytes() -> usize {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    unsafe { libc::mallinfo2() }.hblkhd
}

#[test]
fn queue_full_fails_at_once() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(2);
    queue.post(b"1", 1, &sink).unwrap();
    queue.post(b"2", 2, &sink).unwrap();
    assert_eq!(queue.post(b"3", 3, &sink), Err(PostError::QueueFull));
    assert_eq!(PostError::QueueFull.to_string(), "resty_ffi: task queue full");
    // Polling makes room again.
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    queue.post(b"3", 3, &sink).unwrap();
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    assert_eq!(queue.len(), 2);
}

#[test]
fn unload_answers_pending_tasks_then_every_poller_sees_null() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"before", 1, &sink).unwrap();
    assert!(queue.unload());
    assert!(!queue.unload(), "double unload reports false");
    assert_eq!(queue.post(b"after", 2, &sink), Err(PostError::Finished));
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    assert!(!task.is_null());
    assert!(ngx_http_lua_ffi_task_poll(tq(&queue)).is_null());
    assert!(ngx_http_lua_ffi_task_poll(tq(&queue)).is_null(), "the end is sticky");
    // Responding after unload still delivers.
    ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"late"), 4);
    let done = drain_all(&sink);
    assert_eq!((done[0].token, done[0].response.to_vec()), (1, b"late".to_vec()));
    assert!(queue.is_empty());
}

#[test]
fn several_poll_threads_all_end() {
    let queue = TaskQueue::new(8);
    let pollers: Vec<_> = (0..4)
        .map(|i| {
            let q = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("abi_poller_{i}"))
                .spawn(move || ngx_http_lua_ffi_task_poll(tq(&q)).is_null())
                .unwrap()
        })
        .collect();
    // The end must wake pollers that already sleep in task_poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_named("abi_poller_").iter().filter(|(_, state)| *state == 'S').count() < 4 {
        assert!(Instant::now() < deadline, "pollers not asleep: {:?}", threads_named("abi_poller_"));
        std::thread::sleep(Duration::from_millis(1));
    }
    queue.unload();
    assert!(pollers.into_iter().all(|p| p.join().unwrap()));
}

#[test]
fn orphaned_tasks_are_freed_not_delivered() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"gone", 1, &sink).unwrap();
    queue.post(b"kept", 2, &sink).unwrap();
    sink.cancel(1);
    for _ in 0..2 {
        let task = ngx_http_lua_ffi_task_poll(tq(&queue));
        ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"answer"), 6);
    }
    let tokens: Vec<u64> = drain_all(&sink).iter().map(|c| c.token).collect();
    assert_eq!(tokens, vec![2]);
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory arguments.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn cancelled_tokens_never_answered_take_bounded_memory() {
    let (sink, _) = counting_sink();
    let before = resident_bytes();
    for token in 0..1_000_000 {
        sink.cancel(token);
    }
    let grown = resident_bytes().saturating_sub(before);
    // ThreadSanitizer's shadow memory grows with the memory it watches.
    let limit = if sanitizer().as_deref() == Some("thread") { 16 << 20 } else { 1 << 20 };
    assert!(grown < limit, "{grown} bytes for 1,000,000 cancelled tokens");
    // The latest cancels still hold.
    let queue = TaskQueue::new(8);
    queue.post(b"x", 999_999, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"late"), 4);
    assert!(drain_all(&sink).is_empty());
}

#[test]
fn answers_after_close_are_freed() {
    let (sink, wakes) = counting_sink();
    let queue = TaskQueue::new(8);
    queue.post(b"x", 1, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    sink.close();
    drop(sink); // the task still holds the completion queue
    ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"nobody listens"), 0);
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
}

#[test]
fn one_wake_per_batch() {
    let (sink, wakes) = counting_sink();
    let queue = TaskQueue::new(1000);
    for token in 0..100 {
        queue.post(b"x", token, &sink).unwrap();
    }
    for _ in 0..100 {
        let task = ngx_http_lua_ffi_task_poll(tq(&queue));
        ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    }
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(drain_all(&sink).len(), 100);
    // A new answer after the drain wakes again.
    queue.post(b"x", 100, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
}

#[test]
fn eventfd_hook_becomes_readable() {
    let hook = Arc::new(resty_ffi::EventFdHook::new().unwrap());
    let sink = Arc::new(CompletionQueue::new(Arc::clone(&hook)));
    let queue = TaskQueue::new(8);
    queue.post(b"x", 1, &sink).unwrap();
    let task = ngx_http_lua_ffi_task_poll(tq(&queue));
    ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    let mut pfd = libc::pollfd { fd: hook.fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 1000) }, 1);
    hook.acknowledge();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0, "acknowledge resets the fd");
    assert_eq!(drain_all(&sink).len(), 1);
}

#[test]
fn spin_until_answered_waits_for_an_answer_and_is_bounded() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    let started = Instant::now();
    assert!(!sink.spin_until_answered(Duration::from_micros(300)));
    assert!(started.elapsed() >= Duration::from_micros(300));

    queue.post(b"late", 1, &sink).unwrap();
    let answering = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let task = ngx_http_lua_ffi_task_poll(tq(&queue));
            std::thread::sleep(Duration::from_millis(2));
            ngx_http_lua_ffi_respond(task, 0, malloc_copy(b"late"), 4);
        })
    };
    assert!(sink.spin_until_answered(Duration::from_secs(5)));
    answering.join().unwrap();
    assert_eq!(drain_all(&sink)[0].response.to_vec(), b"late");
}

#[test]
fn an_answer_seen_by_a_spin_does_not_call_the_hook_and_later_ones_do() {
    let (sink, wakes) = counting_sink();
    let queue = TaskQueue::new(8);
    let answer = |token| {
        queue.post(b"x", token, &sink).unwrap();
        let task = ngx_http_lua_ffi_task_poll(tq(&queue));
        ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
    };
    // The host watches (spins) while the answer comes: it needs no wake-up.
    queue.post(b"x", 1, &sink).unwrap();
    let answering = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let task = ngx_http_lua_ffi_task_poll(tq(&queue));
            std::thread::sleep(Duration::from_millis(20));
            ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
        })
    };
    assert!(sink.spin_until_answered(Duration::from_secs(5)));
    answering.join().unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 0, "an answer the host was watching for woke it");
    assert_eq!(drain_all(&sink).len(), 1);
    // Drained: the next answer wakes the host again.
    answer(2);
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(drain_all(&sink).len(), 1);
    // A spin that sees nothing leaves the hook armed.
    assert!(!sink.spin_until_answered(Duration::from_micros(100)));
    answer(3);
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
}

/// The poller thread named `name`'s state ('R' running, 'S' asleep...).
fn state_of_thread(name: &str) -> char {
    threads_named(name).first().map_or('?', |(_, state)| *state)
}

#[test]
fn a_fixed_poll_spin_keeps_the_poller_awake_for_that_long_then_it_sleeps_and_says_so() {
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    assert!(!queue.has_awake_poller(), "no poller yet");
    queue.set_poll_spin(300_000); // capped at 100 ms
    let q = Arc::clone(&queue);
    let poller = std::thread::Builder::new()
        .name("abi_fixed_spin".to_owned())
        .spawn(move || loop {
            let task = ngx_http_lua_ffi_task_poll(tq(&q));
            if task.is_null() {
                return;
            }
            ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
        })
        .unwrap();
    queue.post(b"one", 1, &sink).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while drain_all(&sink).is_empty() {
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_micros(100));
    }
    // Spinning for the next task, not asleep...
    let answered = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let state = state_of_thread("abi_fixed_spin");
    let awake = queue.has_awake_poller();
    if answered.elapsed() < Duration::from_millis(90) {
        assert_eq!(state, 'R', "a poller with a fixed spin sleeps before it is over");
        assert!(awake, "a spinning poller counts as awake");
    }
    // ...until the spin is over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of_thread("abi_fixed_spin") != 'S' {
        assert!(Instant::now() < deadline, "the poller never sleeps");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(answered.elapsed() >= Duration::from_millis(90), "slept after {:?}", answered.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.has_awake_poller() {
        assert!(Instant::now() < deadline, "a sleeping poller counts as awake");
        std::thread::sleep(Duration::from_millis(1));
    }

    // Back to the adaptive default: asleep soon after a lone task.
    queue.set_poll_spin(0);
    queue.post(b"two", 2, &sink).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while drain_all(&sink).is_empty() {
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_micros(100));
    }
    let deadline = Instant::now() + Duration::from_millis(50);
    while state_of_thread("abi_fixed_spin") != 'S' {
        assert!(Instant::now() < deadline, "the adaptive poller spins on");
        std::thread::sleep(Duration::from_millis(1));
    }
    queue.unload();
    poller.join().unwrap();
}

#[test]
fn every_post_wakes_a_sleeping_poller_and_unload_wakes_them_all() {
    const POLLERS: usize = 3;
    let (sink, _) = counting_sink();
    let queue = TaskQueue::new(8);
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            let q = Arc::clone(&queue);
            std::thread::spawn(move || loop {
                let task = ngx_http_lua_ffi_task_poll(tq(&q));
                if task.is_null() {
                    return;
                }
                ngx_http_lua_ffi_respond(task, 0, std::ptr::null_mut(), 0);
            })
        })
        .collect();
    let all_asleep = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue.has_awake_poller() {
            assert!(Instant::now() < deadline, "the pollers never sleep");
            std::thread::yield_now();
        }
    };
    // Each task goes to a queue whose pollers all sleep; none may be missed.
    for token in 0..300 {
        all_asleep();
        queue.post(b"x", token, &sink).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while drain_all(&sink).is_empty() {
            assert!(Instant::now() < deadline, "task {token} was posted to sleeping pollers and never answered");
            std::thread::yield_now();
        }
    }
    all_asleep();
    assert!(queue.unload());
    for poller in pollers {
        poller.join().unwrap();
    }
}

#[test]
fn sink_spin_through_the_c_abi_is_capped_at_a_millisecond() {
    let sink = resty_ffi_sink_new();
    let started = Instant::now();
    // SAFETY: `sink` is a live handle until freed below.
    unsafe {
        assert_eq!(resty_ffi_sink_spin(sink, u32::MAX), 0);
        resty_ffi_sink_free(sink);
    }
    let spun = started.elapsed();
    assert!(spun >= Duration::from_millis(1) && spun < Duration::from_millis(500), "{spun:?}");
}

#[test]
fn armed_wake_up_calls_the_hook_once_and_can_be_replaced_or_cancelled() {
    let (sink, wakes) = counting_sink();
    let armed_at = Instant::now();
    assert!(sink.wake_after(1, Some(Duration::from_millis(30))));
    wait_for_wakes(&wakes, 1);
    assert!(armed_at.elapsed() >= Duration::from_millis(30), "not before the deadline");
    assert_eq!(wakes.load(Ordering::SeqCst), 1);

    // Re-arming replaces; cancelling and closing leave the hook alone.
    assert!(sink.wake_after(1, Some(Duration::from_secs(3600))));
    assert!(sink.wake_after(1, Some(Duration::from_millis(20))));
    let (cancelled, cancelled_wakes) = counting_sink();
    assert!(cancelled.wake_after(1, Some(Duration::from_millis(20))));
    assert!(cancelled.wake_after(1, None));
    let (closed, closed_wakes) = counting_sink();
    assert!(closed.wake_after(1, Some(Duration::from_millis(20))));
    assert!(closed.wake_after(2, Some(Duration::from_millis(20))));
    closed.close();
    wait_for_wakes(&wakes, 2);
    // A later deadline, due after the others: when it fired, they were due too.
    let (witness, witness_wakes) = counting_sink();
    assert!(witness.wake_after(1, Some(Duration::from_millis(40))));
    wait_for_wakes(&witness_wakes, 1);
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
    assert_eq!(cancelled_wakes.load(Ordering::SeqCst), 0);
    assert_eq!(closed_wakes.load(Ordering::SeqCst), 0);
}

#[test]
fn calls_on_one_sink_have_independent_wake_ups() {
    let (sink, wakes) = counting_sink();
    let armed_at = Instant::now();
    assert!(sink.wake_after(1, Some(Duration::from_millis(60))));
    assert!(sink.wake_after(2, Some(Duration::from_secs(3600))));
    // Cancelling call 2 leaves call 1's deadline armed.
    assert!(sink.wake_after(2, None));
    wait_for_wakes(&wakes, 1);
    assert!(armed_at.elapsed() >= Duration::from_millis(60));
    assert!(sink.wake_after(3, Some(Duration::from_millis(10))));
    assert!(sink.wake_after(4, Some(Duration::from_millis(10))));
    wait_for_wakes(&wakes, 2);
}

#[test]
fn the_timer_thread_blocks_every_signal() {
    // The host's signals (nginx's, Envoy's) must stay with the host's threads.
    let (sink, wakes) = counting_sink();
    assert!(sink.wake_after(1, Some(Duration::from_millis(1))));
    wait_for_wakes(&wakes, 1);
    let timers = threads_named("resty_ffi_timer");
    assert_eq!(timers.len(), 1, "{timers:?}");
    let status = std::fs::read_to_string(format!("/proc/self/task/{}/status", timers[0].0)).unwrap();
    let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
    let blocked = u64::from_str_radix(blocked, 16).unwrap();
    // All but SIGKILL and SIGSTOP (which no thread can block) and glibc's two
    // internal signals (32, 33), which pthread_sigmask leaves alone.
    for signal in (1..=64).filter(|s| ![9, 19, 32, 33].contains(s)) {
        assert!(blocked & (1 << (signal - 1)) != 0, "signal {signal} not blocked: SigBlk {blocked:016x}");
    }
}

/// (tid, state) of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        // The state follows the command's closing parenthesis.
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        if let Some(state) = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()) {
            out.push((entry.file_name().to_string_lossy().parse().unwrap(), state));
        }
    }
    out
}

/// Waits (at most 5 s) until `wakes` reaches `n`.
fn wait_for_wakes(wakes: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while wakes.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(wakes.load(Ordering::SeqCst) >= n, "expected {n} wake-ups");
}

// ------------------------------------------------------------ shared dicts --

mod shdict {
    use std::ffi::{c_char, c_int, CString};
    use std::sync::Arc;
    use std::thread;

    use resty_ffi::shdict::declare;
    use resty_ffi::shdict_abi::*;

    fn get(dict: &str, key: &[u8]) -> (c_int, Option<Vec<u8>>, c_int) {
        let dict = CString::new(dict).unwrap();
        let (mut val, mut len, mut flags) = (std::ptr::null_mut::<c_char>(), 0usize, -1);
        // SAFETY: valid strings and writable out-parameters.
        let rc = unsafe { resty_ffi_shdict_get(dict.as_ptr(), key.as_ptr().cast(), key.len(), &mut val, &mut len, &mut flags) };
        if rc != 1 {
            return (rc, None, flags);
        }
        assert!(!val.is_null());
        // SAFETY: a malloc()ed copy of `len` bytes that we own.
        let bytes = unsafe { std::slice::from_raw_parts(val as *const u8, len) }.to_vec();
        // SAFETY: the caller frees the copy (the ABI's contract).
        unsafe { libc::free(val.cast()) };
        (rc, Some(bytes), flags)
    }

    fn set(dict: &str, key: &[u8], val: &[u8], exptime: f64, flags: c_int) -> c_int {
        let dict = CString::new(dict).unwrap();
        // SAFETY: valid strings.
        unsafe { resty_ffi_shdict_set(dict.as_ptr(), key.as_ptr().cast(), key.len(), val.as_ptr().cast(), val.len(), exptime, flags) }
    }

    fn incr(dict: &str, key: &[u8], by: f64, init: f64) -> (c_int, f64) {
        let dict = CString::new(dict).unwrap();
        let mut out = f64::NAN;
        // SAFETY: valid strings, writable `out`.
        let rc = unsafe { resty_ffi_shdict_incr(dict.as_ptr(), key.as_ptr().cast(), key.len(), by, init, 0.0, &mut out) };
        (rc, out)
    }

    #[test]
    fn get_set_incr_delete_through_the_abi() {
        let dict = declare("abi_test", 1 << 20).unwrap();
        assert_eq!(get("abi_test", b"k"), (0, None, -1));
        assert_eq!(set("abi_test", b"k", b"a\0b", 0.0, 9), 0);
        assert_eq!(get("abi_test", b"k"), (1, Some(b"a\0b".to_vec()), 9));
        assert_eq!(set("abi_test", b"e", b"", 0.0, 0), 0);
        assert_eq!(get("abi_test", b"e"), (1, Some(Vec::new()), 0), "an empty value is found, not NULL");
        assert_eq!(incr("abi_test", b"n", 2.0, 40.0), (0, 42.0));
        assert_eq!(incr("abi_test", b"n", 1.0, 0.0), (0, 43.0));
        assert_eq!(get("abi_test", b"n").0, RESTY_FFI_SHDICT_WRONG_TYPE, "a number is not a string");
        assert_eq!(incr("abi_test", b"k", 1.0, 0.0).0, RESTY_FFI_SHDICT_WRONG_TYPE);
        let name = CString::new("abi_test").unwrap();
        // SAFETY: valid strings.
        assert_eq!(unsafe { resty_ffi_shdict_delete(name.as_ptr(), b"k".as_ptr().cast(), 1) }, 0);
        assert_eq!(get("abi_test", b"k").0, 0);
        // The dict Lua sees (through the filter) is the same.
        assert_eq!(dict.incr(b"n", 0.0, None, 0), Ok((43.0, false)));
    }

    #[test]
    fn bad_arguments_and_unknown_dicts() {
        declare("abi_args", 1 << 20).unwrap();
        assert_eq!(get("abi_no_such_dict", b"k").0, RESTY_FFI_SHDICT_NO_DICT);
        assert_eq!(set("abi_no_such_dict", b"k", b"v", 0.0, 0), RESTY_FFI_SHDICT_NO_DICT);
        assert_eq!(get("abi_args", b"").0, RESTY_FFI_SHDICT_BAD_ARGUMENT);
        assert_eq!(get("abi_args", &vec![b'k'; 65536]).0, RESTY_FFI_SHDICT_BAD_ARGUMENT);
        assert_eq!(set("abi_args", &vec![b'k'; 65535], b"v", 0.0, 0), 0, "65535 bytes is the longest key");
        assert_eq!(set("abi_args", b"k", b"v", -1.0, 0), RESTY_FFI_SHDICT_BAD_ARGUMENT);
        assert_eq!(set("abi_args", b"k", b"v", f64::NAN, 0), RESTY_FFI_SHDICT_BAD_ARGUMENT);
        assert_eq!(set("abi_args", b"k", &vec![b'v'; 2 << 20], 0.0, 0), RESTY_FFI_SHDICT_NO_MEMORY);
        let name = CString::new("abi_args").unwrap();
        let mut out = 0.0;
        // SAFETY: NULL pointers are refused before anything is read.
        unsafe {
            assert_eq!(resty_ffi_shdict_get(std::ptr::null(), b"k".as_ptr().cast(), 1, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()), RESTY_FFI_SHDICT_BAD_ARGUMENT);
            assert_eq!(resty_ffi_shdict_set(name.as_ptr(), std::ptr::null(), 1, std::ptr::null(), 0, 0.0, 0), RESTY_FFI_SHDICT_BAD_ARGUMENT);
            assert_eq!(resty_ffi_shdict_set(name.as_ptr(), b"k".as_ptr().cast(), 1, std::ptr::null(), 3, 0.0, 0), RESTY_FFI_SHDICT_BAD_ARGUMENT);
            assert_eq!(resty_ffi_shdict_incr(name.as_ptr(), b"k".as_ptr().cast(), 1, 1.0, 0.0, -1.0, &mut out), RESTY_FFI_SHDICT_BAD_ARGUMENT);
            assert_eq!(resty_ffi_shdict_incr(name.as_ptr(), b"k".as_ptr().cast(), 1, 1.0, 0.0, 0.0, std::ptr::null_mut()), RESTY_FFI_SHDICT_BAD_ARGUMENT);
            assert_eq!(resty_ffi_shdict_set(name.as_ptr(), b"nil".as_ptr().cast(), 3, std::ptr::null(), 0, 0.0, 0), 0);
        }
        assert_eq!(get("abi_args", b"nil"), (1, Some(Vec::new()), 0), "NULL with length 0 is the empty string");
    }

    #[test]
    fn incr_from_threads_is_exact() {
        let dict = declare("abi_threads", 1 << 20).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| thread::spawn(|| (0..20_000).all(|_| incr("abi_threads", b"n", 1.0, 0.0).0 == 0)))
            .collect();
        let lua_side = Arc::clone(&dict);
        for _ in 0..20_000 {
            lua_side.incr(b"n", 1.0, Some(0.0), 0).unwrap();
        }
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
        assert_eq!(dict.incr(b"n", 0.0, None, 0), Ok((100_000.0, false)));
    }
}
