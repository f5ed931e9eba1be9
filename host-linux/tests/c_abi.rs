//! The C ABI as an app links it: the C example is compiled against the
//! generated header and the shared library, and must produce `prima run`'s
//! tokens; bad input comes back as a status and a message.

use prima_tests::*;
use std::path::PathBuf;

/// `target/<profile>`, where the binary, the libraries and `include/` are.
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prima")).parent().unwrap().to_path_buf()
}

fn build_example(tag: &str) -> PathBuf {
    let dir = artifacts();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/c/generate.c");
    let exe = std::env::temp_dir().join(format!("prima-c-example-{tag}-{}", std::process::id()));
    let out = target_cc()
        .arg(&src)
        .arg("-I")
        .arg(dir.join("include"))
        .arg("-L")
        .arg(&dir)
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .args(["-lprima_host", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .output()
        .expect("a C compiler (cc, or $PRIMA_TEST_CC) is installed");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    exe
}

#[test]
fn c_example_generates_the_same_tokens_as_prima_run() {
    let exe = build_example("tokens");
    let prompt = "The capital of France is";
    let c = target_command(&exe).arg(smollm2_path()).args([prompt, "16"]).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let c_ids: Vec<u32> = String::from_utf8(c.stdout).unwrap().split_whitespace().map(|s| s.parse().unwrap()).collect();
    let run = target_command(env!("CARGO_BIN_EXE_prima"))
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", prompt, "-n", "16", "--temp", "0", "-t", "1", "-c", "512", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(c_ids, ids(&v["generated_ids"]));
    assert!(String::from_utf8_lossy(&c.stderr).contains("Paris"));
    std::fs::remove_file(exe).ok();
}

#[test]
fn c_example_reports_a_bad_model_as_a_status_and_message() {
    let exe = build_example("errors");
    let missing = target_command(&exe).args(["/nonexistent.gguf", "hi", "4"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1));
    assert!(err.contains("error 2") && err.contains("/nonexistent.gguf"), "{err}");
    let not_gguf = std::env::temp_dir().join(format!("prima-not-gguf-{}", std::process::id()));
    std::fs::write(&not_gguf, b"definitely not a model").unwrap();
    let bad = target_command(&exe).arg(&not_gguf).args(["hi", "4"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("error 2") && err.contains("magic"), "{err}");
    std::fs::remove_file(not_gguf).ok();
    std::fs::remove_file(exe).ok();
}
