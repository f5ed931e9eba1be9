//! What the ring tests share: `prima` itself and workers on loopback.

#![allow(dead_code)]

use prima_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// `prima`, without a ring key from the environment (tests pass `--key`).
pub fn prima() -> Command {
    let mut c = target_command(env!("CARGO_BIN_EXE_prima"));
    c.env_remove("PRIMA_RING_KEY");
    c
}

/// A `prima worker` on a free loopback port, with its own layer cache.
pub struct Worker {
    pub child: Child,
    pub addr: String,
    pub cache: PathBuf,
    /// Its log so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_in(scratch_dir("worker-cache"), extra)
    }

    pub fn start_in(cache: PathBuf, extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", cache, extra)
    }

    /// A worker listening on `listen` (such as the address of one that died).
    pub fn start_at(listen: &str, cache: PathBuf, extra: &[&str]) -> Self {
        let mut child = prima()
            .args(["worker", "--listen", listen, "-t", "1", "--peer-timeout", "5", "--cache"])
            .arg(&cache)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addr, log) = worker_address_and_log(&mut child);
        Self { child, addr, cache, log }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}

/// A profile of this machine, measured once per test process, so workers
/// started with `--profile` skip measuring themselves.
pub fn saved_profile() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let out = prima().args(["profile", "--quick", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let path = scratch_dir("profile").join("device.json");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    })
    .clone()
}

pub fn ring_flag(workers: &[Worker]) -> String {
    workers.iter().map(|w| w.addr.as_str()).collect::<Vec<_>>().join(",")
}
