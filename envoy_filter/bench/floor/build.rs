//! The Envoy ABI bindings, from the filter's own header.

fn main() {
    let header = "../../abi/envoy_abi.h";
    println!("cargo:rerun-if-changed={header}");
    let bindings = bindgen::Builder::default()
        .header(header)
        .allowlist_type("envoy_dynamic_module_type_.*")
        .allowlist_function("envoy_dynamic_module_callback_(http_send_response|http_filter_scheduler_.*|http_filter_continue_decoding)")
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on envoy_abi.h");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_abi.rs");
    bindings.write_to_file(out).expect("cannot write the Envoy bindings");
}
