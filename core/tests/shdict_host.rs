//! A host's own dicts (nginx's zones) registered with the core: the runtime
//! ABI reaches them, and unregistering waits for the calls that run. Its
//! own test binary: the registration is process-wide.

use std::ffi::{c_char, c_int, c_long, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use resty_ffi::shdict::declare;
use resty_ffi::shdict_abi::*;

static SLOW: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn host_get(
    dict: *const c_char,
    _key: *const c_char,
    key_len: usize,
    val: *mut *mut c_char,
    val_len: *mut usize,
    flags: *mut c_int,
) -> c_int {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    if SLOW.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: the core passes a C string and writable out-parameters.
    let rc = unsafe {
        if CStr::from_ptr(dict).to_bytes() != b"zone" {
            RESTY_FFI_SHDICT_NO_DICT
        } else {
            let copy = libc::malloc(4) as *mut c_char;
            std::ptr::copy_nonoverlapping(b"host".as_ptr(), copy as *mut u8, 4);
            *val = copy;
            *val_len = 4;
            *flags = key_len as c_int;
            1
        }
    };
    INSIDE.fetch_sub(1, Ordering::SeqCst);
    rc
}

unsafe extern "C" fn host_set(
    _dict: *const c_char,
    _key: *const c_char,
    _key_len: usize,
    _val: *const c_char,
    val_len: usize,
    exptime_ms: c_long,
    _flags: c_int,
) -> c_int {
    // Tells the test what it got: the exptime in milliseconds, as a code.
    if val_len == 0 { exptime_ms as c_int } else { 0 }
}

fn get(dict: &str) -> (c_int, Option<Vec<u8>>) {
    let dict = CString::new(dict).unwrap();
    let (mut val, mut len, mut flags) = (std::ptr::null_mut::<c_char>(), 0usize, 0);
    // SAFETY: valid strings and out-parameters.
    let rc = unsafe { resty_ffi_shdict_get(dict.as_ptr(), b"key".as_ptr().cast(), 3, &mut val, &mut len, &mut flags) };
    if rc != 1 {
        return (rc, None);
    }
    assert_eq!(flags, 3);
    // SAFETY: a malloc()ed copy of `len` bytes that we own.
    let bytes = unsafe { std::slice::from_raw_parts(val as *const u8, len) }.to_vec();
    // SAFETY: ours to free.
    unsafe { libc::free(val.cast()) };
    (rc, Some(bytes))
}

#[test]
fn a_registered_host_serves_runtimes_until_unregistered() {
    declare("zone", 1 << 20).unwrap();
    let host = resty_ffi_shdict_host { get: Some(host_get), set: Some(host_set), incr: None, delete: None };
    // SAFETY: a valid host whose functions live for the whole test.
    unsafe { resty_ffi_shdict_host_set(&host) };
    assert_eq!(get("zone"), (1, Some(b"host".to_vec())), "the host's dict, not the core's");
    assert_eq!(get("other").0, RESTY_FFI_SHDICT_NO_DICT);
    let name = CString::new("zone").unwrap();
    // SAFETY: valid strings; the host's set tells the milliseconds it got.
    assert_eq!(unsafe { resty_ffi_shdict_set(name.as_ptr(), b"k".as_ptr().cast(), 1, std::ptr::null(), 0, 1.5009, 0) }, 1500);
    let mut out = 0.0;
    // SAFETY: valid strings and out-parameter; the host has no incr.
    assert_eq!(unsafe { resty_ffi_shdict_incr(name.as_ptr(), b"k".as_ptr().cast(), 1, 1.0, 0.0, 0.0, &mut out) }, RESTY_FFI_SHDICT_NO_DICT);

    // Unregistering waits for a call in the host to return.
    SLOW.store(true, Ordering::SeqCst);
    let caller = thread::spawn(|| get("zone"));
    while INSIDE.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    // SAFETY: NULL unregisters.
    unsafe { resty_ffi_shdict_host_set(std::ptr::null()) };
    assert_eq!(INSIDE.load(Ordering::SeqCst), 0, "returned only once the call left the host");
    assert_eq!(caller.join().unwrap(), (1, Some(b"host".to_vec())));
    // Afterwards the core's own dicts answer again.
    assert_eq!(get("zone"), (0, None));
}
