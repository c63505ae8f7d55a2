//! Generates `include/resty_ffi.h` (runtime ABI + host API) from the Rust source.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/abi.rs");
    println!("cargo:rerun-if-changed=src/host_abi.rs");
    println!("cargo:rerun-if-changed=src/shdict_abi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("generate resty_ffi.h");
    header.write_to_file(out_dir.join("resty_ffi.h"));
    // Also publish it next to the build outputs: <target>/<profile>/include/.
    let profile_dir = out_dir.ancestors().nth(3).expect("OUT_DIR layout");
    header.write_to_file(profile_dir.join("include").join("resty_ffi.h"));
}
