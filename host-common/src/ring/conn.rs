//! Ring connections. The handshake runs on tokio; afterwards each link is
//! on a blocking std socket: the compute thread reads its predecessor and
//! writes its successor directly, and small threads watch the other control
//! streams and send heartbeats, reporting over a std channel. Links are
//! plaintext or secure ([`crate::link`]) alike.

use anyhow::{anyhow, bail, Context};
use prima_core::ring::wire::{encode_control, Control, Frame, FrameDecoder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use crate::link::{Link, LinkWriter, Reader};

/// How long a handshake step may take before the peer counts as dead.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a worker tells the head it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A worker's refusal while it serves another ring.
pub const BUSY: &str = "busy with another ring";

/// What a reader task saw, tagged with the ring position of the peer.
#[derive(Debug)]
pub enum Inbound {
    /// A heartbeat on a watched control stream.
    Alive { from: usize },
    /// A worker's running totals: computing, waiting on the network, disk.
    Stats { from: usize, times: [Duration; 3] },
    /// The stream ended. `said` is the peer's own reason, if it sent one.
    Closed { from: usize, why: String, said: bool },
}

/// Reads one whole control message, within `HANDSHAKE_TIMEOUT`.
pub async fn read_control(s: &mut Link, dec: &mut FrameDecoder, peer: &str) -> anyhow::Result<Control> {
    let read = async {
        let mut buf = Vec::new();
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Control(c))) => return Ok(*c),
                Ok(Some(Frame::Activations(..))) => bail!("{peer} sent activations during the handshake"),
                Ok(None) => {}
                Err(e) => bail!("{peer}: {e}"),
            }
            buf.clear();
            let n = s.read_plain(&mut buf).await.with_context(|| format!("cannot read from {peer}"))?;
            if n == 0 {
                bail!("{peer} closed the connection");
            }
            dec.push(&buf);
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("{peer} did not answer within {HANDSHAKE_TIMEOUT:?}"))?
}

pub async fn send_control(s: &mut Link, msg: &Control, peer: &str) -> anyhow::Result<()> {
    let bytes = encode_control(msg).map_err(|e| anyhow!("cannot encode a message for {peer}: {e}"))?;
    s.write_all(&bytes).await.with_context(|| format!("cannot send to {peer}"))
}

/// `text` cut (at a character boundary) to fit a `Stop` or `Error` reason.
pub fn reason(text: &str) -> heapless::String<128> {
    let mut r = heapless::String::new();
    for c in text.chars() {
        if r.push(c).is_err() {
            break;
        }
    }
    r
}

/// The peer's refusal as a control frame (best effort: the stream is closing).
pub fn error_frame(text: &str) -> Vec<u8> {
    encode_control(&Control::Error { reason: reason(text) }).unwrap_or_default()
}

/// Decodes a control stream that carries no activations, on its own thread,
/// reporting heartbeats, stats, the peer's own error or stop, and the end.
pub fn spawn_control_reader(mut rd: Reader, from: usize, mut dec: FrameDecoder, tx: Sender<Inbound>) {
    std::thread::spawn(move || {
        let (why, said) = 'read: loop {
            loop {
                match dec.next_frame() {
                    Ok(Some(Frame::Control(c))) => {
                        let report = match *c {
                            Control::Heartbeat { .. } => Inbound::Alive { from },
                            Control::Stats { compute_us, network_us, disk_us } => Inbound::Stats {
                                from,
                                times: [compute_us, network_us, disk_us].map(Duration::from_micros),
                            },
                            Control::Error { reason } | Control::Stop { reason } => {
                                break 'read (reason.to_string(), true)
                            }
                            _ => continue,
                        };
                        if tx.send(report).is_err() {
                            return;
                        }
                    }
                    Ok(Some(Frame::Activations(..))) => break 'read ("sent activations out of turn".into(), false),
                    Ok(None) => break,
                    Err(e) => break 'read (e.to_string(), false),
                }
            }
            match rd.read() {
                Ok(None) => break ("closed the connection".to_string(), false),
                Ok(Some(bytes)) => dec.push(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break (format!("connection failed: {e}"), false),
            }
        };
        let _ = tx.send(Inbound::Closed { from, why, said });
    });
}

/// Sends a heartbeat every [`HEARTBEAT`] until a write fails or `stop` is set.
pub fn spawn_heartbeat(out: LinkWriter, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut nonce = 0u64;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(HEARTBEAT);
            nonce += 1;
            let Ok(f) = encode_control(&Control::Heartbeat { nonce }) else { return };
            if stop.load(Ordering::Relaxed) || out.send(&f).is_err() {
                return;
            }
        }
    });
}
