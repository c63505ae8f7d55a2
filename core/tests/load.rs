//! Loading runtime libraries: name resolution, missing symbols, init failures.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use resty_ffi::{retired_runtimes, LoadError, LoadOptions, Runtime};

/// Builds a runtime whose `libffi_init` returns `atoi(cfg)` and starts nothing.
fn init_rc_runtime() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("init_rc.c");
    let lib = dir.join("libinit_rc.so");
    std::fs::write(&src, "#include <stdlib.h>\nint libffi_init(char *cfg, void *tq) { (void) tq; return cfg ? atoi(cfg) : 0; }\n").unwrap();
    let status = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().unwrap();
    assert!(status.success());
    lib
}

fn load(lib: &str, cfg: Option<&[u8]>) -> Result<Runtime, LoadError> {
    Runtime::load(lib, cfg, &LoadOptions::default())
}

#[test]
fn unknown_library_is_a_clear_error() {
    let err = load("no_such_runtime", None).err().unwrap();
    let msg = err.to_string();
    assert!(msg.starts_with("resty_ffi: load \"no_such_runtime\": libno_such_runtime.so: cannot open shared object file"), "{msg}");
}

#[test]
fn library_without_libffi_init_is_a_clear_error() {
    let msg = load("libm.so.6", None).err().unwrap().to_string();
    assert!(msg.starts_with("resty_ffi: load \"libm.so.6\": no libffi_init:"), "{msg}");
}

#[test]
fn init_rc_is_reported_and_cfg_reaches_init() {
    let lib = init_rc_runtime();
    let lib = lib.to_str().unwrap();
    assert_eq!(load(lib, Some(b"7")).err(), Some(LoadError::Init(7)));
    let runtime = load(lib, Some(b"0")).unwrap();
    assert!(!runtime.is_unloaded());
    assert!(runtime.unload());
    assert!(load(lib, None).is_ok(), "a NULL cfg is allowed");
    assert!(matches!(load(lib, Some(b"a\0b")), Err(LoadError::Library(_))));
}

fn is_mapped(lib: &str) -> bool {
    let path = CString::new(lib).unwrap();
    // SAFETY: RTLD_NOLOAD only looks the library up; a handle it returns is closed at once.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if !handle.is_null() {
            libc::dlclose(handle);
        }
        !handle.is_null()
    }
}

#[test]
fn dropped_runtimes_are_freed_and_unpinned_libraries_closed() {
    let lib = init_rc_runtime().with_file_name("libinit_rc_unpinned.so");
    std::fs::copy(init_rc_runtime(), &lib).unwrap();
    let lib = lib.to_str().unwrap();
    let unpinned = LoadOptions { unpin: true, ..LoadOptions::default() };
    for _ in 0..20 {
        drop(Runtime::load(lib, Some(b"0"), &unpinned).unwrap());
    }
    assert!(is_mapped(lib), "closed at once, before the grace period");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (retired_runtimes() > 0 || is_mapped(lib)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(retired_runtimes(), 0);
    assert!(!is_mapped(lib), "an unpinned library is closed in the end");
}


/// Builds a runtime that counts its `libffi_init` calls (`int inits(void)`).
fn counting_runtime() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("counting.c");
    let lib = dir.join("libcounting.so");
    std::fs::write(&src, "static int n;\nint libffi_init(char *cfg, void *tq) { (void) cfg; (void) tq; return !(++n > 0); }\nint inits(void) { return n; }\n").unwrap();
    let status = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().unwrap();
    assert!(status.success());
    lib
}

fn inits(lib: &str) -> i32 {
    let path = CString::new(lib).unwrap();
    // SAFETY: the library is loaded (RTLD_NOLOAD returns it); `inits` has the
    // signature written above; the handle is closed after the call.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(!handle.is_null());
        let inits: extern "C" fn() -> i32 = std::mem::transmute(libc::dlsym(handle, c"inits".as_ptr()));
        let n = inits();
        libc::dlclose(handle);
        n
    }
}

#[test]
fn shared_runtimes_are_one_per_process_until_the_last_holder_goes() {
    let lib = counting_runtime();
    let lib = lib.to_str().unwrap();
    let opts = LoadOptions::default();
    let first = Runtime::shared(lib, Some(b"a"), &opts).unwrap();
    let second = Runtime::shared(lib, Some(b"a"), &opts).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    assert_eq!(inits(lib), 1, "libffi_init runs once for both holders");
    let other_cfg = Runtime::shared(lib, Some(b"b"), &opts).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &other_cfg));
    assert_eq!(inits(lib), 2);
    drop((first, second));
    let fresh = Runtime::shared(lib, Some(b"a"), &opts).unwrap();
    assert_eq!(inits(lib), 3, "a runtime whose holders all went is loaded anew");
    assert!(!fresh.is_unloaded());
}
