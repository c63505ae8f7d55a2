//! A loaded runtime library and its task queue, as the host sees them.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use crate::completion::CompletionQueue;
use crate::glibc_heap;
use crate::library::{resolve_name, Library};
use crate::queue::{PostError, TaskQueue};
use crate::reaper;
use crate::stats::StatsSnapshot;

/// How to load a runtime (SPEC §1 `opts`).
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub max_queue: usize,
    /// dlopen with `RTLD_GLOBAL` (the Python and Node.js loaders need it).
    pub is_global: bool,
    /// dlclose the library after the runtime is dropped, so a later load can
    /// pick up a new build: once every task was answered and every poll
    /// thread received NULL and left `task_poll`, then after a grace period
    /// (see `reaper`).
    pub unpin: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_queue: 65536, is_global: false, unpin: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// dlopen failed, or the library has no `libffi_init`.
    Library(String),
    /// `libffi_init` returned this non-zero rc.
    Init(i32),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Library(msg) => write!(f, "resty_ffi: {msg}"),
            LoadError::Init(rc) => write!(f, "resty_ffi: libffi_init returned {rc}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The host's handle on a runtime. Dropping it unloads the runtime (tasks
/// already posted are still answered) and retires its queue and library,
/// which are freed (the library closed, if unpinned) once no thread can use
/// them any more (see `reaper`).
pub struct Runtime {
    queue: Arc<TaskQueue>,
    /// What [`Runtime::stats_since_published`] returned last.
    published: Mutex<StatsSnapshot>,
    /// `None` once retired.
    library: Option<Library>,
}

impl Runtime {
    /// Opens `lib` (a path or a name resolved like LuaJIT's `ffi.load`) and calls
    /// its `libffi_init(cfg, tq)` with a NUL-terminated copy of `cfg` (NULL if none).
    pub fn load(lib: &str, cfg: Option<&[u8]>, opts: &LoadOptions) -> Result<Runtime, LoadError> {
        let name = resolve_name(lib);
        glibc_heap::prepare(); // before any runtime can call glibc's malloc
        let library = Library::open(&name, opts.is_global, !opts.unpin)
            .map_err(|e| LoadError::Library(format!("load \"{lib}\": {e}")))?;
        let init = library
            .init_fn()
            .map_err(|e| LoadError::Library(format!("load \"{lib}\": no libffi_init: {e}")))?;
        let cfg = match cfg {
            Some(bytes) => Some(
                CString::new(bytes)
                    .map_err(|_| LoadError::Library("cfg contains a NUL byte".to_owned()))?,
            ),
            None => None,
        };
        let queue = TaskQueue::new(opts.max_queue);
        queue.set_name(library_name(lib));
        let cfg_ptr = cfg.as_ref().map_or(std::ptr::null_mut(), |c| c.as_ptr() as *mut _);
        let tq = Arc::as_ptr(&queue) as *mut c_void;
        // SAFETY: `init` has the SPEC §2 signature; `cfg_ptr` is NULL or a C string
        // that outlives the call; `tq` points to a queue that the reaper keeps
        // alive while the runtime may use it.
        let rc = unsafe { init(cfg_ptr, tq) };
        let runtime = Runtime { queue, published: Mutex::default(), library: Some(library) };
        if rc != 0 {
            return Err(LoadError::Init(rc)); // the runtime may have started threads: retired
        }
        Ok(runtime)
    }

    /// Posts `request`; `None` reaches the runtime as a NULL request.
    pub fn post(&self, request: Option<&[u8]>, token: u64, sink: &Arc<CompletionQueue>) -> Result<(), PostError> {
        match request {
            Some(request) => self.queue.post(request, token, sink),
            None => self.queue.post_nil(token, sink),
        }
    }

    /// Ends the runtime after the tasks already posted; false if already unloaded.
    pub fn unload(&self) -> bool {
        self.queue.unload()
    }

    /// The runtime's queue (its stats, its length).
    pub fn queue(&self) -> &TaskQueue {
        &self.queue
    }

    /// The counters last published and the counters now, which become the
    /// last published: a host that adds the difference to its own metrics
    /// counts each call once, however many holders (workers) publish.
    pub fn stats_since_published(&self) -> (StatsSnapshot, StatsSnapshot) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.queue.snapshot();
        (std::mem::replace(&mut *published, now), now)
    }

    pub fn is_unloaded(&self) -> bool {
        self.queue.is_finished()
    }

    /// The process's one runtime for `lib` and `cfg` (`opts.shared`): loaded
    /// (and `libffi_init` called) by the first caller, with its options; the
    /// others get the same runtime while any holder keeps it. Its queue
    /// serves every host that posts to it; each answer goes to the sink
    /// its task was posted with.
    pub fn shared(lib: &str, cfg: Option<&[u8]>, opts: &LoadOptions) -> Result<Arc<Runtime>, LoadError> {
        static SHARED: Mutex<Option<HashMap<Vec<u8>, Weak<Runtime>>>> = Mutex::new(None);
        let key = [lib.as_bytes(), b"\0", cfg.unwrap_or(b"\0")].concat();
        // Held while loading: two hosts asking at once get one runtime.
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let shared = shared.get_or_insert_with(HashMap::new);
        if let Some(runtime) = shared.get(&key).and_then(Weak::upgrade).filter(|rt| !rt.is_unloaded()) {
            return Ok(runtime);
        }
        shared.retain(|_, runtime| runtime.strong_count() > 0);
        let runtime = Arc::new(Runtime::load(lib, cfg, opts)?);
        shared.insert(key, Arc::downgrade(&runtime));
        Ok(runtime)
    }
}

/// The name a runtime's log lines start with: the file name of `lib`
/// without `lib` and `.so` (`/x/libdemo.so` and `demo` both give `demo`).
fn library_name(lib: &str) -> &str {
    let file = lib.rsplit('/').next().unwrap_or(lib);
    let file = file.strip_prefix("lib").filter(|_| file.contains(".so")).unwrap_or(file);
    file.split(".so").next().filter(|n| !n.is_empty()).unwrap_or(file)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.queue.unload();
        if let Some(library) = self.library.take() {
            reaper::retire(Arc::clone(&self.queue), library);
        }
    }
}
