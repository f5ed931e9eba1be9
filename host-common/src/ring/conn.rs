//! Ring connections on tokio: one reader task and one writer task per TCP
//! stream. Readers report to the compute thread over a std channel, so the
//! sans-IO node is driven by one plain loop; writers take whole frames.

use anyhow::{anyhow, bail, Context};
use prima_core::ring::wire::{encode_control, Control, Frame, FrameDecoder};
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// How long a handshake step may take before the peer counts as dead.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a worker tells the head it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A worker's refusal while it serves another ring.
pub const BUSY: &str = "busy with another ring";

/// What a reader task saw, tagged with the ring position of the peer.
#[derive(Debug)]
pub enum Inbound {
    /// Raw bytes from the stream that feeds the node.
    Bytes { from: usize, bytes: Vec<u8> },
    /// A heartbeat on a watched control stream.
    Alive { from: usize },
    /// A worker's running totals: computing, waiting on the network, disk.
    Stats { from: usize, times: [Duration; 3] },
    /// The stream ended. `said` is the peer's own reason, if it sent one.
    Closed { from: usize, why: String, said: bool },
}

/// Reads one whole control message, within `HANDSHAKE_TIMEOUT`.
pub async fn read_control(s: &mut TcpStream, dec: &mut FrameDecoder, peer: &str) -> anyhow::Result<Control> {
    let read = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Control(c))) => return Ok(*c),
                Ok(Some(Frame::Activations(..))) => bail!("{peer} sent activations during the handshake"),
                Ok(None) => {}
                Err(e) => bail!("{peer}: {e}"),
            }
            let n = s.read(&mut buf).await.with_context(|| format!("cannot read from {peer}"))?;
            if n == 0 {
                bail!("{peer} closed the connection");
            }
            dec.push(&buf[..n]);
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("{peer} did not answer within {HANDSHAKE_TIMEOUT:?}"))?
}

pub async fn send_control(s: &mut TcpStream, msg: &Control, peer: &str) -> anyhow::Result<()> {
    let bytes = encode_control(msg).map_err(|e| anyhow!("cannot encode a message for {peer}: {e}"))?;
    s.write_all(&bytes).await.with_context(|| format!("cannot send to {peer}"))
}

/// The peer's refusal as a control frame (best effort: the stream is closing).
pub fn error_frame(reason: &str) -> Vec<u8> {
    let mut r = heapless::String::<128>::new();
    for c in reason.chars() {
        if r.push(c).is_err() {
            break;
        }
    }
    encode_control(&Control::Error { reason: r }).unwrap_or_default()
}

/// Forwards everything read to `tx` as `Bytes` (the node decodes it),
/// starting with what a handshake decoder had already buffered.
pub fn spawn_raw_reader(mut rd: OwnedReadHalf, from: usize, buffered: Vec<u8>, tx: Sender<Inbound>) {
    tokio::spawn(async move {
        if !buffered.is_empty() && tx.send(Inbound::Bytes { from, bytes: buffered }).is_err() {
            return;
        }
        let mut buf = vec![0u8; 256 << 10];
        let why = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break "closed the connection".to_string(),
                Ok(n) => {
                    if tx.send(Inbound::Bytes { from, bytes: buf[..n].to_vec() }).is_err() {
                        return;
                    }
                }
                Err(e) => break format!("connection failed: {e}"),
            }
        };
        let _ = tx.send(Inbound::Closed { from, why, said: false });
    });
}

/// Decodes a control stream that carries no activations, reporting
/// heartbeats, the peer's own error or stop, and the end of the stream.
pub fn spawn_control_reader(mut rd: OwnedReadHalf, from: usize, mut dec: FrameDecoder, tx: Sender<Inbound>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
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
            match rd.read(&mut buf).await {
                Ok(0) => break ("closed the connection".to_string(), false),
                Ok(n) => dec.push(&buf[..n]),
                Err(e) => break (format!("connection failed: {e}"), false),
            }
        };
        let _ = tx.send(Inbound::Closed { from, why, said });
    });
}

/// A task writing whole frames to `wr` in order. A failed write is reported
/// as the peer's close.
pub fn spawn_writer(mut wr: OwnedWriteHalf, from: usize, tx: Sender<Inbound>) -> UnboundedSender<Vec<u8>> {
    let (out, mut frames) = unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if let Err(e) = wr.write_all(&f).await {
                let _ = tx.send(Inbound::Closed { from, why: format!("cannot send: {e}"), said: false });
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    out
}

/// Sends a heartbeat on `out` every [`HEARTBEAT`] until it closes.
pub fn spawn_heartbeat(out: UnboundedSender<Vec<u8>>) {
    tokio::spawn(async move {
        let mut nonce = 0u64;
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            nonce += 1;
            let Ok(f) = encode_control(&Control::Heartbeat { nonce }) else { return };
            if out.send(f).is_err() {
                return;
            }
        }
    });
}
