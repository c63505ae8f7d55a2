//! Runs the C++ test of the bridge (tests/bridge_test.cc, built by build.rs).

use std::ffi::c_int;

// Links the bridge, which the C++ test calls.
extern crate resty_ffi_cxx;

#[link(name = "resty_ffi_cxx_bridge_test", kind = "static")]
extern "C" {
    fn resty_ffi_cxx_bridge_test() -> c_int;
}

#[test]
fn cxx_host_and_runtime() {
    // SAFETY: a plain C entry point without arguments; it joins its threads.
    assert_eq!(unsafe { resty_ffi_cxx_bridge_test() }, 0, "see the C++ test's output above");
}
