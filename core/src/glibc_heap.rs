//! Answers allocated by glibc's own `malloc` in a process whose `malloc` is
//! another allocator (Envoy's is tcmalloc).
//!
//! Hosts free answers with the process's `free()`. A runtime that takes
//! `malloc` from a handle on libc (jnr-ffi's `LibraryLoader.load("c")`,
//! Python's `ctypes.CDLL("libc.so.6")`) gets glibc's allocator instead, and
//! tcmalloc's `free()` of such a buffer crashes. Neither allocator can say
//! safely whether it owns a pointer: Envoy exports tcmalloc's `malloc`,
//! `free`, `malloc_usable_size` (which crash on a foreign pointer too) but no
//! ownership query, and glibc has none.
//!
//! So we make glibc's buffers recognizable instead. Before the first runtime
//! library is loaded, if the process's `free` is not glibc's, glibc's
//! allocator was never used, and nothing moved the program break (tcmalloc
//! maps its memory and never uses the break), glibc's allocator is confined
//! to the break heap: one arena, no mapped chunks (`mallopt` `M_ARENA_MAX` 1,
//! `M_MMAP_MAX` 0). From then on an answer between the start of the break
//! heap and the current break was made by glibc: it is copied into the
//! process's `malloc` and given back to glibc's `free`. Everywhere else (nginx,
//! tests: one allocator) answers pass through untouched.

use std::alloc::{handle_alloc_error, Layout};
use std::ffi::{c_int, c_void};
use std::ops::Range;
use std::sync::OnceLock;

type FreeFn = unsafe extern "C" fn(*mut c_void);

enum Heaps {
    /// The process's `free` is glibc's (or there is no glibc).
    Shared,
    /// glibc allocates only in the break heap, which starts at `start`.
    GlibcInBreak { start: usize, glibc_free: FreeFn },
    /// Another allocator, but glibc's allocations cannot be told apart.
    Unknown,
}

static HEAPS: OnceLock<Heaps> = OnceLock::new();

/// Decides, once per process, how answers are freed; call before loading a
/// runtime library (glibc must not have allocated yet).
pub(crate) fn prepare() {
    HEAPS.get_or_init(|| {
        let heaps = detect();
        if let Heaps::Unknown = heaps {
            eprintln!(
                "resty_ffi: the process's malloc is not glibc's, and glibc's heap or the program break \
                 is already in use: answers allocated by glibc's own malloc (e.g. jnr-ffi's load(\"c\")) \
                 cannot be told apart and would crash the process"
            );
        }
        heaps
    });
}

/// A buffer that the process's `free()` can free, with the `len` bytes of
/// `ptr` (and a NUL after them when it is a copy).
///
/// # Safety
/// `ptr` is NULL or came from a `malloc()` and holds at least `len` readable
/// bytes; the caller owns it and does not use it afterwards.
pub(crate) unsafe fn adopt(ptr: *mut u8, len: usize) -> *mut u8 {
    let Some(&Heaps::GlibcInBreak { start, glibc_free }) = HEAPS.get() else {
        return ptr;
    };
    // SAFETY: sbrk(0) only reads the current break.
    let end = unsafe { libc::sbrk(0) } as usize;
    // SAFETY: our contract; only glibc allocates in the break heap.
    unsafe { adopt_from(ptr, len, start..end, glibc_free) }
}

/// [`adopt`], where glibc's buffers are those in `glibc` and `glibc_free`
/// frees them.
///
/// # Safety
/// As [`adopt`]; a `ptr` in `glibc` can be freed with `glibc_free`.
unsafe fn adopt_from(ptr: *mut u8, len: usize, glibc: Range<usize>, glibc_free: FreeFn) -> *mut u8 {
    if ptr.is_null() || !glibc.contains(&(ptr as usize)) {
        return ptr; // the process allocator's
    }
    // `len` bytes are readable memory: `len + 1` cannot overflow.
    let size = len + 1;
    // SAFETY: malloc of a non-zero size; the result is checked before use.
    let copy = unsafe { libc::malloc(size) } as *mut u8;
    if copy.is_null() {
        handle_alloc_error(Layout::from_size_align(size, 1).unwrap_or(Layout::new::<u8>()));
    }
    // SAFETY: `ptr` holds `len` readable bytes and is ours (the contract),
    // `copy` has room for `len + 1`; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr, copy, len);
        *copy.add(len) = 0;
        glibc_free(ptr as *mut c_void);
    }
    copy
}

fn detect() -> Heaps {
    // SAFETY: RTLD_NOLOAD only looks libc up (it is loaded: we link it).
    let libc = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if libc.is_null() {
        return Heaps::Shared;
    }
    // SAFETY: `libc` is open; the names are C strings.
    let (glibc_free, process_free, mallinfo2, mallopt) = unsafe {
        (
            libc::dlsym(libc, c"free".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"free".as_ptr()),
            libc::dlsym(libc, c"mallinfo2".as_ptr()),
            libc::dlsym(libc, c"mallopt".as_ptr()),
        )
    };
    // SAFETY: balances our dlopen; libc itself stays loaded.
    unsafe { libc::dlclose(libc) };
    if glibc_free.is_null() || glibc_free == process_free {
        return Heaps::Shared;
    }
    if mallinfo2.is_null() || mallopt.is_null() {
        return Heaps::Unknown;
    }
    // SAFETY: glibc's own functions, with their glibc signatures.
    let (glibc_free, mallinfo2, mallopt) = unsafe {
        (
            std::mem::transmute::<*mut c_void, FreeFn>(glibc_free),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> libc::mallinfo2>(mallinfo2),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_int) -> c_int>(mallopt),
        )
    };
    // SAFETY: mallinfo2 takes no argument and only reads glibc's statistics.
    let used = unsafe { mallinfo2() };
    if used.arena != 0 || used.hblkhd != 0 {
        return Heaps::Unknown;
    }
    // SAFETY: sbrk(0) only reads the current break.
    let brk = unsafe { libc::sbrk(0) } as usize;
    let Some(start) = break_start() else {
        return Heaps::Unknown;
    };
    if brk != start {
        return Heaps::Unknown; // someone else grows the break heap
    }
    // SAFETY: mallopt only sets glibc's tunables.
    let confined = unsafe { mallopt(libc::M_ARENA_MAX, 1) == 1 && mallopt(libc::M_MMAP_MAX, 0) == 1 };
    if !confined {
        return Heaps::Unknown;
    }
    Heaps::GlibcInBreak { start, glibc_free }
}

/// Where the break heap starts (`start_brk`, field 47 of /proc/self/stat).
fn break_start() -> Option<usize> {
    parse_start_brk(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_start_brk(stat: &str) -> Option<usize> {
    // Field 2, the command, may hold spaces and parentheses: count from its end.
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(47 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn start_brk_is_field_47() {
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let stat = format!("1234 (a (b) c) {}", fields.join(" "));
        assert_eq!(parse_start_brk(&stat), Some(47));
        assert_eq!(parse_start_brk("1 (x) R 1 2"), None);
    }

    #[test]
    fn break_start_is_readable_and_below_the_break() {
        let start = break_start().expect("start_brk");
        // SAFETY: sbrk(0) only reads the current break.
        assert!(start <= unsafe { libc::sbrk(0) } as usize);
    }

    static FREED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn counting_free(ptr: *mut c_void) {
        FREED.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the test's buffers come from malloc.
        unsafe { libc::free(ptr) };
    }

    #[test]
    fn glibcs_buffers_are_copied_and_given_back() {
        // SAFETY: a malloc()ed buffer of 3 bytes, ours; adopt_from takes it.
        let (copy, ptr) = unsafe {
            let ptr = libc::malloc(3) as *mut u8;
            std::ptr::copy_nonoverlapping(b"abc".as_ptr(), ptr, 3);
            let addr = ptr as usize;
            (adopt_from(ptr, 3, addr..addr + 1, counting_free), ptr)
        };
        assert_ne!(copy, ptr);
        assert_eq!(FREED.load(Ordering::Relaxed), 1);
        // SAFETY: the copy holds 3 bytes and a NUL, and is ours.
        unsafe {
            assert_eq!(std::slice::from_raw_parts(copy, 4), b"abc\0");
            libc::free(copy as *mut c_void);
        }
        // SAFETY: NULL and a buffer outside the range pass through.
        unsafe {
            assert!(adopt_from(std::ptr::null_mut(), 0, 0..usize::MAX, counting_free).is_null());
            let other = libc::malloc(1) as *mut u8;
            assert_eq!(adopt_from(other, 1, 0..1, counting_free), other);
            libc::free(other as *mut c_void);
        }
        assert_eq!(FREED.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn answers_from_the_process_allocator_pass_through() {
        prepare(); // glibc's malloc here; ASan's under the sanitizer tests
        for size in [4, 1 << 20] {
            // SAFETY: a fresh malloc()ed buffer that we own.
            let ptr = unsafe { libc::malloc(size) } as *mut u8;
            // SAFETY: as above.
            let same = unsafe { adopt(ptr, size) };
            assert_eq!(same, ptr);
            // SAFETY: still ours.
            unsafe { libc::free(same as *mut c_void) };
        }
    }
}
