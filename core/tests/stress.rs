//! 1,000,000 tasks from 4 host threads to 4 runtime threads: every task is
//! answered exactly once with its own payload. Run under ThreadSanitizer with
//! `ci/sanitize.sh` (see core/README.md).

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::thread;

use resty_ffi::abi::{ngx_http_lua_ffi_get_req, ngx_http_lua_ffi_respond, ngx_http_lua_ffi_task_poll};
use resty_ffi::{CompletionQueue, EventFdHook, PostError, TaskQueue};

const HOSTS: u64 = 4;
const RUNTIMES: usize = 4;

fn total_tasks() -> u64 {
    std::env::var("STRESS_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn payload(token: u64) -> Vec<u8> {
    let mut p = token.to_le_bytes().to_vec();
    p.resize(8 + (token % 61) as usize, (token % 251) as u8);
    p
}

/// A runtime thread: echo with the bytes reversed, rc = length.
fn runtime(queue: Arc<TaskQueue>) {
    let tq = Arc::as_ptr(&queue) as *mut c_void;
    loop {
        let task = ngx_http_lua_ffi_task_poll(tq);
        if task.is_null() {
            return;
        }
        let mut len: c_int = 0;
        let req = ngx_http_lua_ffi_get_req(task, &mut len);
        // SAFETY: `len` request bytes are readable until we respond; the copy is malloc()ed.
        let rsp = unsafe {
            let req = std::slice::from_raw_parts(req as *const u8, len as usize);
            let rsp = libc::malloc(req.len()) as *mut u8;
            for (i, b) in req.iter().rev().enumerate() {
                *rsp.add(i) = *b;
            }
            rsp
        };
        ngx_http_lua_ffi_respond(task, len, rsp as *mut _, len);
    }
}

fn host(queue: Arc<TaskQueue>, first: u64, count: u64) {
    let hook = Arc::new(EventFdHook::new().unwrap());
    let sink = Arc::new(CompletionQueue::new(Arc::clone(&hook)));
    let mut answered = vec![false; count as usize];
    let (mut next, mut done) = (first, 0u64);
    while done < count {
        while next < first + count {
            match queue.post(&payload(next), next, &sink) {
                Ok(()) => next += 1,
                Err(PostError::QueueFull) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut pfd = libc::pollfd { fd: hook.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        hook.acknowledge();
        while {
            let n = sink.drain(256, |c| {
                let mut expected = payload(c.token);
                expected.reverse();
                assert_eq!(c.rc as usize, expected.len());
                assert_eq!(c.response.as_slice(), &expected[..], "payload of {}", c.token);
                let slot = &mut answered[(c.token - first) as usize];
                assert!(!*slot, "task {} answered twice", c.token);
                *slot = true;
                done += 1;
            });
            n == 256
        } {}
    }
    assert!(answered.iter().all(|a| *a));
}

#[test]
fn a_million_tasks_answered_exactly_once() {
    let per_host = total_tasks() / HOSTS;
    let queue = TaskQueue::new(4096);
    let runtimes: Vec<_> = (0..RUNTIMES)
        .map(|_| {
            let q = Arc::clone(&queue);
            thread::spawn(move || runtime(q))
        })
        .collect();
    let hosts: Vec<_> = (0..HOSTS)
        .map(|h| {
            let q = Arc::clone(&queue);
            thread::spawn(move || host(q, h * per_host, per_host))
        })
        .collect();
    for h in hosts {
        h.join().unwrap();
    }
    queue.unload();
    for r in runtimes {
        r.join().unwrap();
    }
    assert!(queue.is_empty());
}
