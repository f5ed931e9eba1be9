//! `--ring auto` on an emulated LAN: network namespaces joined by a bridge,
//! a worker in each of three, two holding the head's ring key and one
//! another. The head must find exactly the two, and run with them; a
//! serving head also takes in a worker that appears later.

mod common;

use common::{is_root, prima, saved_profile};
use prima_tests::*;
use std::process::{Child, Command, Stdio};

/// Network namespaces on one bridge, removed when dropped.
struct Lan {
    names: Vec<String>,
    bridge: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the `ip` command");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Lan {
    /// `hosts` namespaces at 10.77.N.10, .11, … on one bridge.
    fn new(hosts: usize, subnet: u8) -> Self {
        // Unique per LAN: this binary's tests build theirs at once.
        static LANS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = std::process::id() % 10_000 * 10 + n % 10;
        let bridge = format!("pd{tag}-br");
        ip(&["netns", "add", &bridge]);
        let mut lan = Self { names: Vec::new(), bridge: bridge.clone() };
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = format!("pd{tag}-{i}");
            ip(&["netns", "add", &ns]);
            lan.names.push(ns.clone());
            let veth = format!("pv{tag}x{i}");
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "e0", "netns", &ns]);
            ip(&["link", "set", &veth, "netns", &bridge]);
            ip(&["-n", &bridge, "link", "set", &veth, "master", "br0", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("10.77.{subnet}.{}/24", 10 + i), "dev", "e0"]);
            ip(&["-n", &ns, "link", "set", "e0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn exec(&self, host: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[host], env!("CARGO_BIN_EXE_prima")]).env_remove("PRIMA_RING_KEY");
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.names.iter().chain([&self.bridge]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Kills its worker when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ring_auto_finds_exactly_the_workers_with_the_rings_key() {
    let root = is_root();
    if !root || emulated() {
        eprintln!("skipped: network namespaces need root (and a native build)");
        return;
    }
    let dir = scratch_dir("discovery");
    let keys: Vec<String> = ["ring.key", "other.key"]
        .iter()
        .map(|k| {
            let path = dir.join(k);
            assert!(prima().args(["keygen", "-o"]).arg(&path).status().unwrap().success());
            path.to_str().unwrap().to_string()
        })
        .collect();
    let subnet = (std::process::id() % 200) as u8 + 20;
    let lan = Lan::new(4, subnet);
    let profile = saved_profile();
    let workers: Vec<Running> = (1..4)
        .map(|host| {
            let key = &keys[usize::from(host == 3)];
            let cache = dir.join(format!("cache-{host}"));
            let mut w = lan.exec(host);
            w.args(["worker", "--listen", "0.0.0.0:9000", "-t", "1", "--key", key, "--name", &format!("w{host}")])
                .arg("--profile")
                .arg(&profile)
                .arg("--cache")
                .arg(&cache)
                .stderr(Stdio::piped());
            let mut child = w.spawn().unwrap();
            worker_address(&mut child);
            Running(child)
        })
        .collect();
    let run = |key: &str| {
        let mut head = lan.exec(0);
        head.args(["run", "-m"]).arg(smollm2_path());
        head.args(["-p", "The capital of France is", "-n", "12", "--temp", "0", "-t", "1", "--json"]);
        head.args(["--ring", "auto", "--discover-time", "3", "--key", key, "--layer-window", "10,10,10"]);
        head.output().unwrap()
    };
    let out = run(&keys[0]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let found = err.lines().find(|l| l.starts_with("discovery:")).unwrap_or_default();
    let (a, b, other) =
        (format!("10.77.{subnet}.11:9000"), format!("10.77.{subnet}.12:9000"), format!("10.77.{subnet}.13:9000"));
    assert!(
        found.contains(&format!("found 2 worker(s) with this ring's key: {a}, {b}"))
            && found.contains(&format!("1 left out, with another key or version: {other}")),
        "{err}"
    );
    // The ring it found gives one device's tokens.
    let ring: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alone = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", "The capital of France is", "-n", "12", "--temp", "0", "-t", "1", "--json"])
        .output()
        .unwrap();
    let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
    assert_eq!(ring["generated_ids"], alone["generated_ids"]);
    // The other key finds only the third worker, and no key finds none.
    let out = run(&keys[1]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("found 1 worker(s) with this ring's key: {other} (2 left out")), "{err}");
    let mut head = lan.exec(0);
    head.args(["run", "-m"]).arg(smollm2_path()).args([
        "-p",
        "Hi",
        "-n",
        "2",
        "--ring",
        "auto",
        "--discover-time",
        "2",
    ]);
    let out = head.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("found no worker announcing this ring's key"), "{err}");
    drop(workers);
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A head serving with `--ring auto` keeps looking (`--rediscover`): a
/// worker that starts on the LAN afterwards is found and taken into the
/// ring between requests.
#[test]
fn a_serving_head_takes_in_a_worker_that_appears_on_the_lan() {
    let root = is_root();
    if !root || emulated() {
        eprintln!("skipped: network namespaces need root (and a native build)");
        return;
    }
    let dir = scratch_dir("rediscovery");
    let key = dir.join("ring.key");
    assert!(prima().args(["keygen", "-o"]).arg(&key).status().unwrap().success());
    let key = key.to_str().unwrap().to_string();
    let subnet = (std::process::id() % 200) as u8 + 21;
    let lan = Lan::new(3, subnet);
    let profile = saved_profile();
    // Short of memory, so Halda uses every worker it has.
    let worker = |host: usize| {
        let mut w = lan.exec(host);
        w.args(["worker", "--listen", "0.0.0.0:9000", "-t", "1", "--key", &key, "--mem", "50", "--profile"])
            .arg(&profile)
            .arg("--cache")
            .arg(dir.join(format!("cache-{host}")))
            .stderr(Stdio::piped());
        let mut child = w.spawn().unwrap();
        worker_address(&mut child);
        Running(child)
    };
    let first = worker(1);
    let mut head = lan.exec(0);
    head.args(["serve", "-m"]).arg(smollm2_path());
    head.args(["--port", "0", "-t", "1", "-c", "128", "--mem", "60", "--key", &key]);
    head.args(["--ring", "auto", "--discover-time", "2", "--rediscover", "1"]).stderr(Stdio::piped());
    let mut head = Running(head.spawn().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let err = head.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let until = |what: &str, log: &mut Vec<String>| {
        while !log.last().is_some_and(|l: &String| l.contains(what)) {
            match lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) => log.push(line),
                Err(_) => panic!("no {what:?} within 60 s: {log:?}"),
            }
        }
    };
    until("serving", &mut log);
    let second = worker(2);
    until("on 3 devices", &mut log);
    let joined = format!("10.77.{subnet}.12:9000");
    assert!(log.iter().any(|l| l.contains(&format!("ring: {joined} asks to join"))), "{log:?}");
    drop((head, first, second));
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}
