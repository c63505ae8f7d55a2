//! Generates the Envoy ABI bindings from the hand-written header.

fn main() {
    // On Envoy's LuaJIT, resolve every lua_* when Envoy opens the module: a
    // binary without an exported LuaJIT then refuses the module with a clear
    // dlopen error, instead of crashing at the first Lua call.
    if std::env::var_os("CARGO_FEATURE_ENVOY_LUAJIT").is_some() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    }
    let header = "abi/envoy_abi.h";
    println!("cargo:rerun-if-changed={header}");
    let bindings = bindgen::Builder::default()
        .header(header)
        .allowlist_type("envoy_dynamic_module_type_.*")
        .allowlist_function("envoy_dynamic_module_callback_.*")
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on abi/envoy_abi.h");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_abi.rs");
    bindings.write_to_file(out).expect("cannot write the Envoy bindings");
}
