//! Generates `prima.h`, the C header for `src/ffi.rs`, next to the built
//! libraries (`target/<profile>/include/prima.h`).

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out.ancestors().nth(3) else { return };
    let include = profile_dir.join("include");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml is valid");
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(format!("{crate_dir}/src/ffi.rs"))
        .generate()
        .expect("src/ffi.rs is valid for cbindgen");
    std::fs::create_dir_all(&include).expect("the target directory is writable");
    header.write_to_file(include.join("prima.h"));
}
