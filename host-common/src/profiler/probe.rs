//! The link probe: how `prima profile --peer` measures round-trip time and
//! bandwidth against `prima worker`.
//!
//! A frame is `[kind: u8][length: u32 LE][payload]`, with payloads of at
//! most [`MAX_PAYLOAD`] bytes. `ECHO` frames come back unchanged; a `SINK`
//! frame is answered by an empty `SINK` once its payload has arrived. Any
//! other kind, or a longer payload, is answered by an `ERROR` frame naming
//! the problem, and the connection is closed. With a ring key, the frames
//! travel over the secure link, like all ring traffic.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use crate::link::{RingKey, SyncLink};

pub const ECHO: u8 = 1;
pub const SINK: u8 = 2;
pub const ERROR: u8 = 0xFF;
pub const MAX_PAYLOAD: usize = 16 << 20;

/// No probe reply may take longer than this: a dead peer is an error, not a hang.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn write_frame(s: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut head = [kind, 0, 0, 0, 0];
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    s.write_all(&head)?;
    s.write_all(payload)?;
    s.flush()
}

/// Reads one frame's kind into the return value and its payload into `buf`,
/// refusing payloads over `MAX_PAYLOAD` before reading them. `None`: the
/// peer closed the connection between frames.
pub fn read_frame(s: &mut impl Read, buf: &mut Vec<u8>) -> anyhow::Result<Option<u8>> {
    let mut head = [0u8; 5];
    match s.read(&mut head[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e).context("connection failed or timed out"),
    }
    s.read_exact(&mut head[1..]).context("connection closed mid-frame")?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        bail!("probe frame of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit");
    }
    buf.resize(len, 0);
    s.read_exact(buf).context("connection closed mid-frame")?;
    Ok(Some(head[0]))
}

/// Round-trip time (median of small echoes) and bandwidth (large sinks) to `peer`.
pub fn measure(peer: &str, budget: Duration, key: Option<&RingKey>) -> anyhow::Result<(f64, f64)> {
    let addr = peer.to_socket_addrs().with_context(|| format!("cannot resolve {peer}"))?.next();
    let addr = addr.with_context(|| format!("{peer} resolves to no address"))?;
    let mut s = SyncLink::connect(&addr, key, TIMEOUT).with_context(|| format!("cannot connect to {peer}"))?;
    let mut buf = Vec::new();
    let expect = |s: &mut SyncLink, want: u8, buf: &mut Vec<u8>| -> anyhow::Result<()> {
        match read_frame(s, buf).with_context(|| format!("peer {peer}"))? {
            Some(k) if k == want => Ok(()),
            Some(ERROR) => bail!("peer {peer} refused the probe: {}", String::from_utf8_lossy(buf)),
            Some(k) => bail!("peer {peer} answered with frame kind {k}, expected {want}"),
            None => bail!("peer {peer} closed the connection"),
        }
    };
    let mut rtts = Vec::new();
    for _ in 0..16 {
        let t = Instant::now();
        write_frame(&mut s, ECHO, &[0])?;
        expect(&mut s, ECHO, &mut buf)?;
        rtts.push(t.elapsed().as_secs_f64());
    }
    rtts.sort_by(f64::total_cmp);
    let rtt = rtts[rtts.len() / 2];
    let chunk = vec![0x5Au8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < budget || sent == 0 {
        write_frame(&mut s, SINK, &chunk)?;
        expect(&mut s, SINK, &mut buf)?;
        sent += chunk.len();
    }
    // Each sink waits for its reply: take the round trips out of the time.
    let rounds = sent / chunk.len();
    let busy = (start.elapsed().as_secs_f64() - rounds as f64 * rtt).max(1e-9);
    Ok((rtt, sent as f64 / busy))
}

/// Whether a worker at `peer` answers one echo within [`TIMEOUT`]: up and
/// responsive, not merely accepting connections (a stopped process's
/// kernel still does that).
pub fn ping(peer: &str, key: Option<&RingKey>) -> anyhow::Result<()> {
    let addr = peer.to_socket_addrs().with_context(|| format!("cannot resolve {peer}"))?.next();
    let addr = addr.with_context(|| format!("{peer} resolves to no address"))?;
    let mut s = SyncLink::connect(&addr, key, TIMEOUT).with_context(|| format!("cannot connect to {peer}"))?;
    s.socket().set_read_timeout(Some(TIMEOUT))?;
    write_frame(&mut s, ECHO, &[0])?;
    let mut buf = Vec::new();
    match read_frame(&mut s, &mut buf).with_context(|| format!("peer {peer}"))? {
        Some(ECHO) => Ok(()),
        Some(k) => bail!("peer {peer} answered with frame kind {k}"),
        None => bail!("peer {peer} closed the connection"),
    }
}

/// Answers probe frames on `s` until the peer closes, misbehaves or goes quiet.
pub fn serve(mut s: SyncLink) -> anyhow::Result<()> {
    let socket = s.socket();
    socket.set_read_timeout(Some(TIMEOUT * 6))?;
    socket.set_write_timeout(Some(TIMEOUT))?;
    socket.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let kind = match read_frame(&mut s, &mut buf) {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = write_frame(&mut s, ERROR, format!("{e:#}").as_bytes());
                return Err(e);
            }
        };
        match kind {
            ECHO => write_frame(&mut s, ECHO, &buf)?,
            SINK => write_frame(&mut s, SINK, &[])?,
            other => {
                let msg = format!("unknown probe frame kind {other}");
                write_frame(&mut s, ERROR, msg.as_bytes())?;
                anyhow::bail!(msg);
            }
        }
    }
}
