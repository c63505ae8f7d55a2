//! Compiles the C++ half of the bridge into the library, and the C++ test
//! (tests/bridge_test.cc) into an archive that only tests/bridge.rs links.

use std::path::PathBuf;

fn main() {
    cxx_build::bridge("src/lib.rs").std("c++17").compile("resty_ffi_cxx");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=tests/bridge_test.cc");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(out_dir.join("cxxbridge/include"))
        .file("tests/bridge_test.cc")
        .cargo_metadata(false)
        .compile("resty_ffi_cxx_bridge_test");
}
