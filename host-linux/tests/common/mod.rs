//! What the ring tests share: `prima` itself and workers on loopback.

#![allow(dead_code)]

use prima_tests::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// `prima`, without a ring key from the environment (tests pass `--key`).
pub fn prima() -> Command {
    let mut c = target_command(env!("CARGO_BIN_EXE_prima"));
    c.env_remove("PRIMA_RING_KEY");
    c
}

/// Whether the tests run as root (network namespaces, tmpfs mounts).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
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

/// A `prima serve` on a free loopback port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// What it printed before it was ready.
    pub startup: Vec<String>,
    /// What it printed since.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut child = prima()
            .args(["serve", "-m"])
            .arg(smollm2_path())
            .args(["--port", "0", "-t", "2"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut startup = Vec::new();
        let url = loop {
            let line =
                lines.next().unwrap_or_else(|| panic!("prima serve ended before it was ready: {startup:?}")).unwrap();
            if let Some(rest) = line.split_once(" on http://").map(|(_, r)| r) {
                break format!("http://{}", rest.split_whitespace().next().unwrap());
            }
            startup.push(line);
        };
        // Keep draining stderr so the server never blocks on it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| kept.lock().unwrap().push(l)));
        Server { child, url, startup, log }
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, (u16, Value)> {
        match ureq::post(&format!("{}{path}", self.url)).send_json(body) {
            Ok(r) => Ok(r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_json().unwrap_or(Value::Null))),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// The cluster view's next update.
    pub fn cluster(&self) -> Value {
        let r = ureq::get(&format!("{}/cluster", self.url)).call().unwrap();
        let line =
            BufReader::new(r.into_reader()).lines().map(Result::unwrap).find(|l| l.starts_with("data: ")).unwrap();
        serde_json::from_str(&line["data: ".len()..]).unwrap()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.url)).call().unwrap().into_string().unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
