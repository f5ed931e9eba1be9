//! Ring keys on loopback: a keyed ring gives one device's tokens while a
//! capture of its links shows no ring frame, layer file or activation in
//! the clear, and peers without the key are refused in a line that names
//! authentication, on both sides.

mod common;

use common::{prima, Worker};
use prima_core::ring::wire::{encode_control, Control};
use prima_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP forwarder to `to` that records every byte crossing it, both ways.
struct Capture {
    addr: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    fn start(to: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (to, seen) = (to.to_string(), Arc::clone(&bytes));
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(&to) else { continue };
                for (mut from, mut into) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Self { addr, bytes }
    }

    /// What of the ring's plaintext the capture shows. Each needle is long
    /// enough that megabytes of ciphertext do not hold it by chance.
    fn plaintext_seen(&self) -> Vec<&'static str> {
        let bytes = self.bytes.lock().unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let ready = encode_control(&Control::Ready).unwrap();
        // A one-token batch of SmolLM2's 576 f32 values: "PR", kind 1, length.
        let mut one_token = b"PR\x01".to_vec();
        one_token.extend_from_slice(&(16u32 + 576 * 4).to_le_bytes());
        let mut seen = Vec::new();
        if has(&ready) {
            seen.push("control frames");
        }
        if has(&one_token) {
            seen.push("activation frames");
        }
        if has(b"GGUF\x03\x00\x00\x00") {
            seen.push("a layer file");
        }
        if has(b"blk.10.attn_q.weight") {
            seen.push("tensor names");
        }
        seen
    }
}

fn keygen(dir: &Path) -> PathBuf {
    let path = dir.join("ring.key");
    let out = prima().args(["keygen", "-o"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

/// `prima run` of 16 tokens at temperature 0, on `ring` when given.
fn run(ring: Option<(&str, &str)>, key: Option<&Path>) -> (bool, Vec<u32>, String) {
    let mut cmd = prima();
    cmd.args(["run", "-m"]).arg(smollm2_path());
    cmd.args(["-p", "The capital of France is", "-n", "16", "--temp", "0", "-t", "1", "--json"]);
    if let Some((addrs, windows)) = ring {
        cmd.args(["--ring", addrs, "--layer-window", windows]);
    }
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let tokens = match out.status.success() {
        true => ids(&serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["generated_ids"]),
        false => Vec::new(),
    };
    (out.status.success(), tokens, err)
}

/// Runs a 3-device ring through capturing proxies; returns the tokens and
/// what each capture saw in the clear.
fn captured_ring(key: Option<&Path>) -> (Vec<u32>, Vec<Vec<&'static str>>) {
    let key_arg: Vec<&str> = key.map(|k| vec!["--key", k.to_str().unwrap()]).unwrap_or_default();
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start_with(&key_arg)).collect();
    // Every link passes a capture: head → worker 1, worker 1 → worker 2
    // (the head hands out the capture's address), worker 2 → head.
    let captures: Vec<Capture> = workers.iter().map(|w| Capture::start(&w.addr)).collect();
    let addrs = captures.iter().map(|c| c.addr.as_str()).collect::<Vec<_>>().join(",");
    let (ok, tokens, err) = run(Some((&addrs, "10,10,10")), key);
    assert!(ok, "the ring failed: {err}");
    // A probe through the capture too (Halda's link measurement).
    let mut probe = prima();
    probe.args(["profile", "--quick", "--peer", &captures[0].addr]).args(&key_arg);
    let out = probe.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(200));
    (tokens, captures.iter().map(Capture::plaintext_seen).collect())
}

#[test]
fn a_keyed_ring_keeps_the_tokens_and_shows_nothing_in_the_clear() {
    let dir = scratch_dir("ring-key");
    let key = keygen(&dir);
    let (ok, alone, err) = run(None, None);
    assert!(ok, "{err}");
    let (tokens, seen) = captured_ring(Some(&key));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(tokens, alone, "a keyed ring must give one device's tokens");
    for (i, s) in seen.iter().enumerate() {
        assert!(s.is_empty(), "link {i} shows {s:?} in the clear");
    }
    // The same capture of a plaintext ring sees all of it: the check can
    // fail. (Not again under an emulator: it checks the test, not the build.)
    if emulated() {
        return;
    }
    let (tokens, seen) = captured_ring(None);
    assert_eq!(tokens, alone);
    for (i, s) in seen.iter().enumerate() {
        for what in ["control frames", "activation frames", "a layer file"] {
            assert!(s.contains(&what), "link {i} of a plaintext ring shows {s:?}, not {what}");
        }
    }
}

#[test]
fn peers_without_the_ring_key_are_refused_naming_authentication() {
    if emulated() {
        return; // the handshake's logic, the same on every CPU (the keyed ring runs there)
    }
    let dir = scratch_dir("ring-key");
    let key = keygen(&dir);
    let other = dir.join("other.key");
    assert!(prima().args(["keygen", "-o"]).arg(&other).status().unwrap().success());
    let keyed = Worker::start_with(&["--key", key.to_str().unwrap()]);
    let plain = Worker::start();
    let cases: [(&str, &str, Option<&Path>); 3] = [
        ("an unkeyed head", &keyed.addr, None),
        ("a head with another key", &keyed.addr, Some(&other)),
        ("an unkeyed worker", &plain.addr, Some(&key)),
    ];
    for (what, addr, head_key) in cases {
        let (ok, _, err) = run(Some((addr, "15,15")), head_key);
        assert!(!ok, "{what} was let through");
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].contains("authentication") && lines[0].contains(addr),
            "{what}: the head's error is not one line naming authentication and the worker: {err}"
        );
    }
    // Both workers' logs name authentication for each refusal.
    std::thread::sleep(Duration::from_millis(300));
    let refusals = |w: &Worker| w.log.lock().unwrap().iter().filter(|l| l.contains("authentication")).count();
    assert_eq!(refusals(&keyed), 2, "{:?}", keyed.log.lock().unwrap());
    assert_eq!(refusals(&plain), 1, "{:?}", plain.log.lock().unwrap());
    // The keyed worker still serves a head with its key.
    let (ok, alone, err) = run(None, None);
    assert!(ok, "{err}");
    let (ok, tokens, err) = run(Some((&keyed.addr, "15,15")), Some(&key));
    assert!(ok, "{err}");
    assert_eq!(tokens, alone);
    // A probe without the key is refused too.
    let out = prima().args(["profile", "--quick", "--peer", &keyed.addr]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("authentication"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
