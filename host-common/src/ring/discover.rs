//! Finding ring workers on the LAN by mDNS/DNS-SD. A worker announces
//! `_prima-ring._tcp` with its port and, in TXT, the id of its ring key (a
//! hash, not the key) and the wire version; `--ring auto` browses for a
//! while and keeps the workers whose key id is the head's. The key id only
//! picks the candidates: the secure handshake is what proves the key.

use anyhow::{anyhow, Context};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use prima_core::ring::wire::WIRE_VERSION;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::link::RingKey;

const SERVICE: &str = "_prima-ring._tcp.local.";
/// The TXT value of a worker without a key.
const NO_KEY: &str = "none";

fn key_id(key: Option<&RingKey>) -> String {
    key.map_or_else(|| NO_KEY.to_string(), RingKey::id)
}

/// A worker's announcement, withdrawn when dropped.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Announces a worker listening on `listen` as `name`: on every interface
/// when it listens on all of them, else on its one address. A worker on
/// loopback is not announced (`None`): no other device could reach it.
pub fn announce(
    name: &str,
    listen: std::net::SocketAddr,
    key: Option<&RingKey>,
) -> anyhow::Result<Option<Announcement>> {
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    let port = listen.port();
    let daemon = ServiceDaemon::new().context("cannot start mDNS")?;
    // The port in the instance name tells apart workers on one host.
    let instance = format!("{name}-{port}");
    let host = format!("{}.local.", name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"));
    let props = [("key", key_id(key)), ("v", WIRE_VERSION.to_string())];
    let ip = if listen.ip().is_unspecified() { String::new() } else { listen.ip().to_string() };
    let mut info = ServiceInfo::new(SERVICE, &instance, &host, ip.as_str(), port, &props[..])
        .context("cannot describe this worker for mDNS")?;
    if listen.ip().is_unspecified() {
        info = info.enable_addr_auto();
    }
    let fullname = info.get_fullname().to_string();
    daemon.register(info).context("cannot announce this worker by mDNS")?;
    Ok(Some(Announcement { daemon, fullname }))
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// The workers found by browsing for `wait`: those announcing `key`'s id
/// and this wire version, as `ip:port`, in a stable order (by instance
/// name). A line on stderr says what was found and what was left out.
pub fn discover(key: Option<&RingKey>, wait: Duration) -> anyhow::Result<Vec<String>> {
    let (addrs, other_key) = browse(key, wait)?;
    let left_out = match other_key.len() {
        0 => String::new(),
        n => format!(" ({n} left out, with another key or version: {})", other_key.join(", ")),
    };
    match addrs.len() {
        0 => eprintln!("discovery: found no worker with this ring's key{left_out}"),
        n => eprintln!("discovery: found {n} worker(s) with this ring's key: {}{left_out}", addrs.join(", ")),
    }
    if addrs.is_empty() {
        return Err(anyhow!(
            "--ring auto found no worker announcing this ring's key (id {}) within {:.1} s",
            key_id(key),
            wait.as_secs_f64()
        ));
    }
    Ok(addrs)
}

/// Browses for `wait`: the workers with `key`'s id and this wire version,
/// and the others, each as `ip:port` in instance-name order.
pub fn browse(key: Option<&RingKey>, wait: Duration) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let daemon = ServiceDaemon::new().context("cannot start mDNS")?;
    let events = daemon.browse(SERVICE).context("cannot browse for workers by mDNS")?;
    let want = key_id(key);
    let version = WIRE_VERSION.to_string();
    let mut found = BTreeMap::new();
    let mut other_key = BTreeMap::new();
    let until = Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        let ServiceEvent::ServiceResolved(s) = event else { continue };
        let mut v4: Vec<_> = s.get_addresses_v4().into_iter().collect();
        v4.sort();
        let Some(ip) = v4.first() else { continue };
        let addr = format!("{ip}:{}", s.get_port());
        let name = s.get_fullname().to_string();
        if s.get_property_val_str("key") == Some(want.as_str()) && s.get_property_val_str("v") == Some(&version) {
            found.insert(name, addr);
        } else {
            other_key.insert(name, addr);
        }
    }
    let _ = daemon.shutdown();
    for name in found.keys() {
        other_key.remove(name);
    }
    Ok((found.into_values().collect(), other_key.into_values().collect()))
}

/// A serving head's look for new workers: every `every`, the workers that
/// announce `key` go to `joins`, where the ring takes in those it lacks.
/// Ends when `joins` closes.
pub fn keep_looking(key: Option<RingKey>, wait: Duration, every: Duration, joins: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        match browse(key.as_ref(), wait) {
            Ok((found, _)) => {
                for addr in found {
                    if joins.send(addr).is_err() {
                        return;
                    }
                }
            }
            Err(e) => eprintln!("discovery: {e:#}"),
        }
    });
}
