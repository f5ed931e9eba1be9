//! Puts `memory.x` on the linker's path and writes the tiny GGUF file that
//! the program embeds: one 2 x 32 Q8_0 matrix named `w`.

use std::path::PathBuf;

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn tiny_gguf() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(b"GGUF");
    f.extend(3u32.to_le_bytes()); // version
    f.extend(1u64.to_le_bytes()); // tensors
    f.extend(1u64.to_le_bytes()); // metadata pairs
    gguf_string(&mut f, "general.name");
    f.extend(8u32.to_le_bytes()); // string value
    gguf_string(&mut f, "bare-metal demo");
    gguf_string(&mut f, "w");
    f.extend(2u32.to_le_bytes()); // dimensions
    f.extend(32u64.to_le_bytes());
    f.extend(2u64.to_le_bytes());
    f.extend(8u32.to_le_bytes()); // Q8_0
    f.extend(0u64.to_le_bytes()); // data offset
    while f.len() % 32 != 0 {
        f.push(0);
    }
    for row in 0..2u8 {
        f.extend(half_one_over(64)); // d = 1/64
        f.extend((0..32u8).map(|i| (i as i8 - 16 + row as i8) as u8));
    }
    f
}

/// `1/n` as f16 bytes, for a power of two `n` (exact).
fn half_one_over(n: u32) -> [u8; 2] {
    let exp = 15 - n.trailing_zeros() as u16;
    (exp << 10).to_le_bytes()
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("memory.x"), include_bytes!("memory.x")).unwrap();
    std::fs::write(out.join("tiny.gguf"), tiny_gguf()).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("thumb")) {
        println!("cargo:rustc-link-arg=-Tlink.x");
    }
}
