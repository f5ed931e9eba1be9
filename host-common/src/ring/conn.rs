//! Ring connections. The handshake runs on tokio; afterwards each socket is
//! a blocking std one: the compute thread reads its predecessor and writes
//! its successor directly, and small threads watch the other control
//! streams and send heartbeats, reporting over a std channel.

use anyhow::{anyhow, bail, Context};
use prima_core::ring::wire::{encode_control, Control, Frame, FrameDecoder};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A tokio stream turned into a blocking std one for the hot path: after
/// the handshake, the compute thread reads and writes ring sockets itself,
/// since every hop through an executor thread costs a wake-up per frame.
pub fn to_std(s: TcpStream) -> anyhow::Result<std::net::TcpStream> {
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// The sending side of a ring connection, shared by the compute thread and
/// the heartbeat thread; each frame is written whole under the lock.
#[derive(Clone, Debug)]
pub struct Writer(Arc<Mutex<std::net::TcpStream>>);

impl Writer {
    /// `timeout` bounds a write to a peer that stopped reading.
    pub fn new(s: &std::net::TcpStream, timeout: Duration) -> anyhow::Result<Self> {
        let s = s.try_clone()?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Self(Arc::new(Mutex::new(s))))
    }

    pub fn send(&self, frame: Vec<u8>) -> std::io::Result<()> {
        let mut s = self.0.lock().map_err(|_| std::io::Error::other("writer lock poisoned"))?;
        s.write_all(&frame)
    }

    /// Ends the sending direction, so the peer reads end-of-stream.
    pub fn close(&self) {
        if let Ok(s) = self.0.lock() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// Decodes a control stream that carries no activations, on its own thread,
/// reporting heartbeats, stats, the peer's own error or stop, and the end.
pub fn spawn_control_reader(
    s: &std::net::TcpStream,
    from: usize,
    mut dec: FrameDecoder,
    tx: Sender<Inbound>,
) -> anyhow::Result<()> {
    let mut rd = s.try_clone()?;
    std::thread::spawn(move || {
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
            match rd.read(&mut buf) {
                Ok(0) => break ("closed the connection".to_string(), false),
                Ok(n) => dec.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break (format!("connection failed: {e}"), false),
            }
        };
        let _ = tx.send(Inbound::Closed { from, why, said });
    });
    Ok(())
}

/// Sends a heartbeat every [`HEARTBEAT`] until a write fails or `stop` is set.
pub fn spawn_heartbeat(out: Writer, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut nonce = 0u64;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(HEARTBEAT);
            nonce += 1;
            let Ok(f) = encode_control(&Control::Heartbeat { nonce }) else { return };
            if stop.load(Ordering::Relaxed) || out.send(f).is_err() {
                return;
            }
        }
    });
}
