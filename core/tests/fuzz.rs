//! Property-based fuzzing of the C host API and the runtime ABI: random
//! sequences of post (random lengths, nil requests), poll, respond (random
//! rc, NULL or malloc()ed rsp, rsp_len from i32::MIN to past the buffer),
//! cancel, drain, wake_in, unload and sink close, checked against a model.
//! Every answer reaches its caller at most once, exactly as the runtime gave
//! it (or as the negative-length error), and nothing leaks (run it under
//! ASan: `ci/sanitize.sh`). `PROPTEST_CASES` sets the number of sequences.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;
use resty_ffi::abi::{ngx_http_lua_ffi_get_req, ngx_http_lua_ffi_respond, ngx_http_lua_ffi_task_poll};
use resty_ffi::host_abi::*;

const MAX_QUEUE: usize = 8;
const NEGATIVE_LENGTH: &str = "resty_ffi: runtime answered with a negative length";

/// A runtime whose `libffi_init` only keeps `tq`: the test polls it itself.
fn tq_keeping_runtime() -> (CString, *mut c_void) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (src, lib) = (dir.join("keep_tq.c"), dir.join("libkeep_tq.so"));
    if !lib.exists() {
        std::fs::write(&src, "void *kept_tq;\nint libffi_init(char *cfg, void *tq) { (void) cfg; kept_tq = tq; return 0; }\n")
            .unwrap();
        let built = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().unwrap();
        assert!(built.success());
    }
    let lib = CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: loads our own tiny library; `kept_tq` is a `void *` it defines.
    let kept = unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null());
        libc::dlsym(handle, c"kept_tq".as_ptr()) as *mut *mut c_void
    };
    assert!(!kept.is_null());
    (lib, kept as *mut c_void)
}

#[derive(Debug, Clone)]
enum Rsp {
    Null,
    /// `size` bytes, NUL-terminated when `nul`.
    Buffer { size: usize, nul: bool },
}

#[derive(Debug, Clone)]
enum Op {
    Post { len: Option<usize> },
    Respond { pick: usize, rc: i32, rsp: Rsp, rsp_len: i32 },
    Cancel { pick: usize },
    Drain { max: usize },
    WakeIn { pick: u32, ms: u32 },
    Unload,
    CloseSink,
    Misuse { rc: i32, rsp_len: i32 },
}

fn rsp_len() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), 1..200i32, -200..0i32, Just(i32::MIN), Just(i32::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    let rsp = prop_oneof![
        Just(Rsp::Null),
        (0..200usize, any::<bool>()).prop_map(|(size, nul)| Rsp::Buffer { size, nul })
    ];
    prop_oneof![
        4 => proptest::option::weighted(0.9, 0..300usize).prop_map(|len| Op::Post { len }),
        4 => (any::<usize>(), any::<i32>(), rsp, rsp_len())
            .prop_map(|(pick, rc, rsp, rsp_len)| Op::Respond { pick, rc, rsp, rsp_len }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => (1..20usize).prop_map(|max| Op::Drain { max }),
        1 => (any::<u32>(), 0..3u32).prop_map(|(pick, ms)| Op::WakeIn { pick, ms }),
        1 => Just(Op::Unload),
        1 => Just(Op::CloseSink),
        1 => (any::<i32>(), rsp_len()).prop_map(|(rc, rsp_len)| Op::Misuse { rc, rsp_len }),
    ]
}

/// What the host must see for an answer: rc and bytes, or an error.
type Expected = Result<(i32, Vec<u8>), String>;

struct Harness {
    rt: *mut resty_ffi_runtime,
    sink: *mut resty_ffi_sink,
    tq: *mut c_void,
    next_token: u64,
    /// Posted and not yet polled, in order.
    queued: Vec<u64>,
    /// Polled and not yet answered: token -> task.
    held: Vec<(u64, *mut c_void)>,
    requests: HashMap<u64, Option<Vec<u8>>>,
    answered: HashMap<u64, Expected>,
    cancelled: HashSet<u64>,
    delivered: HashSet<u64>,
    unloaded: bool,
    closed: bool,
}

fn request_bytes(token: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (token as usize * 31 + i) as u8).collect()
}

fn malloc_rsp(rsp: &Rsp) -> (*mut c_char, Vec<u8>) {
    match *rsp {
        Rsp::Null => (std::ptr::null_mut(), Vec::new()),
        Rsp::Buffer { size, nul } => {
            // Never a NUL inside: the C-string length is then `size` exactly.
            let bytes: Vec<u8> = (0..size).map(|i| 1 + (i % 250) as u8).collect();
            // SAFETY: a fresh allocation of size + 1 bytes, filled below.
            let ptr = unsafe { libc::malloc(size + 1) } as *mut u8;
            // SAFETY: `ptr` has room for `size` bytes and a NUL.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, size);
                *ptr.add(size) = if nul { 0 } else { b'!' };
            }
            (ptr as *mut c_char, bytes)
        }
    }
}

impl Harness {
    fn new(lib: &CStr, kept_tq: *mut c_void) -> Harness {
        let mut init_rc: c_int = 0;
        // SAFETY: valid C strings and out pointers; no cfg.
        let rt = unsafe {
            resty_ffi_runtime_load(lib.as_ptr(), std::ptr::null(), 0, MAX_QUEUE, 0, 0, 0, &mut init_rc, std::ptr::null_mut(), 0)
        };
        assert!(!rt.is_null());
        // SAFETY: `kept_tq` is the library's `void *kept_tq`, just set by libffi_init.
        let tq = unsafe { *(kept_tq as *mut *mut c_void) };
        Harness {
            rt,
            sink: resty_ffi_sink_new(),
            tq,
            next_token: 1,
            queued: Vec::new(),
            held: Vec::new(),
            requests: HashMap::new(),
            answered: HashMap::new(),
            cancelled: HashSet::new(),
            delivered: HashSet::new(),
            unloaded: false,
            closed: false,
        }
    }

    fn post(&mut self, len: Option<usize>) {
        if self.closed {
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let request = len.map(|len| request_bytes(token, len));
        let (ptr, n) = request.as_ref().map_or((std::ptr::null(), 0), |r| (r.as_ptr() as *const c_char, r.len()));
        // SAFETY: live handles; `ptr` is NULL or readable for `n` bytes.
        let rc = unsafe { resty_ffi_runtime_post(self.rt, self.sink, token, ptr, n) };
        let want = if self.unloaded {
            RESTY_FFI_FINISHED
        } else if self.queued.len() >= MAX_QUEUE {
            RESTY_FFI_QUEUE_FULL
        } else {
            RESTY_FFI_OK
        };
        assert_eq!(rc, want, "post #{token}");
        if rc == RESTY_FFI_OK {
            self.queued.push(token);
            self.requests.insert(token, request);
        }
    }

    /// Polls one queued task (never blocks: only when one is queued).
    fn poll_one(&mut self) -> bool {
        if self.queued.is_empty() {
            return false;
        }
        let token = self.queued.remove(0);
        let task = ngx_http_lua_ffi_task_poll(self.tq);
        assert!(!task.is_null());
        let mut len: c_int = -1;
        let ptr = ngx_http_lua_ffi_get_req(task, &mut len);
        match &self.requests[&token] {
            None => assert!(ptr.is_null() && len == 0, "a nil request is NULL"),
            Some(bytes) => {
                assert_eq!(len as usize, bytes.len());
                // SAFETY: get_req promises `len` bytes and a NUL.
                let got = unsafe { std::slice::from_raw_parts(ptr as *const u8, bytes.len() + 1) };
                assert_eq!((&got[..bytes.len()], got[bytes.len()]), (&bytes[..], 0));
            }
        }
        self.held.push((token, task));
        true
    }

    fn respond(&mut self, pick: usize, rc: i32, rsp: &Rsp, rsp_len: i32) {
        if self.held.is_empty() && !self.poll_one() {
            return;
        }
        let (token, task) = self.held.swap_remove(pick % self.held.len());
        let (ptr, bytes) = malloc_rsp(rsp);
        // Runtime bugs the host cannot see are not generated: a C string
        // (rsp_len 0) without its NUL, a length past the buffer.
        let rsp_len = match *rsp {
            Rsp::Buffer { size, nul: false } if rsp_len == 0 => (size as i32).max(-1),
            Rsp::Buffer { size, .. } if rsp_len > size as i32 => size as i32,
            _ => rsp_len,
        };
        let rsp_len = if matches!(rsp, Rsp::Buffer { size: 0, nul: false }) { -1 } else { rsp_len };
        let expected = if rsp_len < 0 {
            Err(NEGATIVE_LENGTH.to_owned())
        } else if ptr.is_null() {
            Ok((rc, Vec::new()))
        } else if rsp_len == 0 {
            Ok((rc, bytes))
        } else {
            Ok((rc, bytes[..rsp_len as usize].to_vec()))
        };
        ngx_http_lua_ffi_respond(task, rc, ptr, rsp_len);
        self.answered.insert(token, expected);
    }

    fn drain(&mut self, max: usize) {
        let mut out: Vec<resty_ffi_completion> = Vec::with_capacity(max);
        // SAFETY: `out` has room for `max` completions; the sink is live.
        let n = unsafe { resty_ffi_sink_drain(self.sink, out.as_mut_ptr(), max) };
        assert!(n <= max);
        // SAFETY: drain initialised the first `n` entries.
        unsafe { out.set_len(n) };
        for c in out {
            let token = c.token;
            assert!(self.delivered.insert(token), "token {token} delivered twice");
            let expected = self.answered.get(&token).unwrap_or_else(|| panic!("token {token} never answered"));
            let got = if c.err.is_null() {
                // SAFETY: the host owns `rsp_len` bytes at `rsp` (or NULL).
                let bytes = if c.rsp.is_null() {
                    Vec::new()
                } else {
                    unsafe { std::slice::from_raw_parts(c.rsp as *const u8, c.rsp_len) }.to_vec()
                };
                Ok((c.rc, bytes))
            } else {
                assert!(c.rsp.is_null());
                // SAFETY: a static C string from the core.
                Err(unsafe { CStr::from_ptr(c.err) }.to_str().unwrap().to_owned())
            };
            assert_eq!(&got, expected, "token {token}");
            // SAFETY: the host frees what it was handed.
            unsafe { libc::free(c.rsp as *mut c_void) };
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Post { len } => self.post(*len),
            Op::Respond { pick, rc, rsp, rsp_len } => self.respond(*pick, *rc, rsp, *rsp_len),
            Op::Cancel { pick } => {
                let token = 1 + (*pick as u64 % self.next_token);
                if !self.closed {
                    // SAFETY: live sink.
                    unsafe { resty_ffi_sink_cancel(self.sink, token) };
                    self.cancelled.insert(token);
                }
            }
            Op::Drain { max } if !self.closed => self.drain(*max),
            Op::WakeIn { pick, ms } if !self.closed => {
                let token = 1 + (*pick as u64 % self.next_token);
                // SAFETY: live sink.
                assert_eq!(unsafe { resty_ffi_sink_wake_in(self.sink, token, *ms) }, 0);
            }
            Op::Unload => {
                // SAFETY: live runtime.
                let rc = unsafe { resty_ffi_runtime_unload(self.rt) };
                assert_eq!(rc, if self.unloaded { RESTY_FFI_FINISHED } else { RESTY_FFI_OK });
                self.unloaded = true;
            }
            Op::CloseSink if !self.closed => {
                // SAFETY: live sink, not used afterwards (tasks keep its queue).
                unsafe { resty_ffi_sink_free(self.sink) };
                self.closed = true;
            }
            Op::Misuse { rc, rsp_len } => {
                // A NULL task: the response is freed, nothing else happens.
                let (ptr, _) = malloc_rsp(&Rsp::Buffer { size: 4, nul: true });
                ngx_http_lua_ffi_respond(std::ptr::null_mut(), *rc, ptr, *rsp_len);
                let mut len: c_int = 7;
                assert!(ngx_http_lua_ffi_get_req(std::ptr::null_mut(), &mut len).is_null());
                assert_eq!(len, 0);
                assert!(ngx_http_lua_ffi_get_req(std::ptr::null_mut(), std::ptr::null_mut()).is_null());
                assert!(ngx_http_lua_ffi_task_poll(std::ptr::null_mut()).is_null());
            }
            _ => {}
        }
    }

    /// Answers everything left, drains, checks, and frees the handles.
    fn finish(mut self) {
        while self.poll_one() {}
        while !self.held.is_empty() {
            self.respond(0, 0, &Rsp::Null, 0);
        }
        if !self.closed {
            loop {
                let before = self.delivered.len();
                self.drain(64);
                if self.delivered.len() - before < 64 {
                    break;
                }
            }
            for token in self.answered.keys() {
                assert!(
                    self.delivered.contains(token) || self.cancelled.contains(token),
                    "token {token} answered but never delivered"
                );
            }
            // SAFETY: live sink, not used afterwards.
            unsafe { resty_ffi_sink_free(self.sink) };
        }
        // SAFETY: live runtime, not used afterwards; its queue now ends.
        unsafe { resty_ffi_runtime_free(self.rt) };
        assert!(ngx_http_lua_ffi_task_poll(self.tq).is_null(), "the end after unload");
    }
}

proptest! {
    // No regression files in the source tree: a failure prints its minimal input.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn host_api_and_abi_keep_their_contract(ops in proptest::collection::vec(op(), 1..120)) {
        let (lib, kept_tq) = tq_keeping_runtime();
        let mut harness = Harness::new(&lib, kept_tq);
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}
