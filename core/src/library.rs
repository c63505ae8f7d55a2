//! dlopen/dlsym for runtime libraries: the only place that touches libdl.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// `int libffi_init(char *cfg, void *tq)`, provided by every runtime library.
pub(crate) type InitFn = unsafe extern "C" fn(cfg: *mut c_char, tq: *mut c_void) -> c_int;

/// An open shared library; closed on drop unless pinned.
pub(crate) struct Library {
    handle: *mut c_void,
    pinned: bool,
}

// SAFETY: a dlopen handle may be used and closed from any thread.
unsafe impl Send for Library {}
// SAFETY: dlsym on a shared handle is thread-safe.
unsafe impl Sync for Library {}

/// Resolves a library name like LuaJIT's `ffi.load`: a name without `/` gets a
/// `.so` suffix when it has no dot and a `lib` prefix when it lacks one.
pub(crate) fn resolve_name(name: &str) -> String {
    if name.contains('/') {
        return name.to_owned();
    }
    let mut resolved = name.to_owned();
    if !resolved.contains('.') {
        resolved.push_str(".so");
    }
    if !resolved.starts_with("lib") {
        resolved.insert_str(0, "lib");
    }
    resolved
}

fn dlerror_message() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the
    // next dl* call on this thread; we copy it at once.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        return "unknown dynamic loader error".to_owned();
    }
    // SAFETY: non-NULL, NUL-terminated, see above.
    unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
}

impl Library {
    pub(crate) fn open(path: &str, global: bool, pinned: bool) -> Result<Library, String> {
        let c_path = CString::new(path).map_err(|_| "library name contains a NUL byte".to_owned())?;
        let mode = libc::RTLD_NOW | if global { libc::RTLD_GLOBAL } else { libc::RTLD_LOCAL };
        // SAFETY: `c_path` is a valid C string; dlopen runs the library's constructors,
        // which is what loading a runtime means.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), mode) };
        if handle.is_null() {
            return Err(dlerror_message());
        }
        Ok(Library { handle, pinned })
    }

    pub(crate) fn init_fn(&self) -> Result<InitFn, String> {
        // SAFETY: `handle` is open; the name is a valid C string.
        let sym = unsafe { libc::dlsym(self.handle, c"libffi_init".as_ptr()) };
        if sym.is_null() {
            return Err(dlerror_message());
        }
        // SAFETY: SPEC §2 fixes the signature of `libffi_init`.
        Ok(unsafe { std::mem::transmute::<*mut c_void, InitFn>(sym) })
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if !self.pinned {
            // SAFETY: `handle` came from dlopen and is closed once.
            unsafe { libc::dlclose(self.handle) };
        }
    }
}
