//! Links over sockets: [`Link`] on tokio for handshakes and setup, then
//! [`LinkWriter`] and [`Reader`] on blocking std sockets for the hot path,
//! and [`SyncLink`] for the blocking link probe. Each is plaintext or
//! secure alike, so the ring's code does not care which.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::noise::{Initiator, Opener, Responder, Sealer};
use super::{LinkError, RingKey};
use prima_core::ring::wire::{encode_control, Control};

const READ_BUF: usize = 64 << 10;

/// A ring connection during its handshake and setup, on tokio.
pub struct Link {
    stream: TcpStream,
    sealer: Sealer,
    opener: Opener,
    /// Plaintext opened but not yet read.
    early: Vec<u8>,
    wire: Vec<u8>,
    out: Vec<u8>,
}

/// Turns `timeout` into an error naming `what`.
async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out after {timeout:?}")))?
}

impl Link {
    pub fn plain(stream: TcpStream) -> Self {
        Self::with(stream, Sealer::default(), Opener::default())
    }

    fn with(stream: TcpStream, sealer: Sealer, opener: Opener) -> Self {
        Self { stream, sealer, opener, early: Vec::new(), wire: vec![0; READ_BUF], out: Vec::new() }
    }

    pub fn is_secure(&self) -> bool {
        self.sealer.is_secure()
    }

    /// Connects to `addr`; with a key, runs the handshake as the initiator.
    pub async fn connect(addr: &str, key: Option<&RingKey>, timeout: Duration) -> io::Result<Self> {
        let stream = within(timeout, "connecting", TcpStream::connect(addr)).await?;
        stream.set_nodelay(true)?;
        let Some(key) = key else { return Ok(Self::plain(stream)) };
        let mut stream = stream;
        let (mut init, first) = Initiator::start(key)?;
        within(timeout, "the secure handshake", async {
            stream.write_all(&first).await?;
            let mut buf = [0u8; 512];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    let why = "the peer closed the connection during the secure handshake";
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
                }
                if let Some((sealer, opener)) = init.feed(&buf[..n])? {
                    let mut link = Self::with(stream, sealer, opener);
                    link.opener.take_early(&mut link.early)?;
                    return Ok(link);
                }
            }
        })
        .await
    }

    /// The accepting side of a connection whose first byte was
    /// [`SECURE_MAGIC`](super::SECURE_MAGIC): checks the initiator's key against `key` and
    /// answers, or refuses with a plaintext `Error` frame saying why.
    pub async fn respond(mut stream: TcpStream, key: Option<&RingKey>, timeout: Duration) -> io::Result<Self> {
        let Some(key) = key else {
            let why = "authentication: this worker has no ring key; start it with the ring's --key";
            refuse(stream, why).await;
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "authentication: a peer asked for a secure link, but this worker has no ring key",
            ));
        };
        let mut responder = Responder::default();
        let mut buf = [0u8; 512];
        let done = within(timeout, "the secure handshake", async {
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer left during the secure handshake",
                    ));
                }
                match responder.feed(key, &buf[..n]) {
                    Ok(Some(done)) => return Ok(Ok(done)),
                    Ok(None) => {}
                    Err(e) => return Ok(Err(e)),
                }
            }
        })
        .await?;
        match done {
            Ok((answer, sealer, opener)) => {
                stream.write_all(&answer).await?;
                let mut link = Self::with(stream, sealer, opener);
                link.opener.take_early(&mut link.early)?;
                Ok(link)
            }
            Err(e) => {
                let why = match e {
                    LinkError::WrongKey => "authentication failed: this worker's ring key is not the head's",
                    _ => "authentication failed: a broken secure handshake",
                };
                refuse(stream, why).await;
                Err(e.into())
            }
        }
    }

    /// Appends at least one byte of plaintext to `out`; 0 when the peer
    /// closed the connection.
    pub async fn read_plain(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        if !self.early.is_empty() {
            let n = self.early.len();
            out.append(&mut self.early);
            return Ok(n);
        }
        loop {
            let n = self.stream.read(&mut self.wire).await?;
            if n == 0 {
                return Ok(0);
            }
            let before = out.len();
            self.opener.open(&self.wire[..n], out)?;
            if out.len() > before {
                return Ok(out.len() - before);
            }
        }
    }

    pub async fn write_all(&mut self, plain: &[u8]) -> io::Result<()> {
        if !self.sealer.is_secure() {
            return self.stream.write_all(plain).await;
        }
        self.out.clear();
        self.sealer.seal(plain, &mut self.out)?;
        self.stream.write_all(&self.out).await
    }

    fn into_parts(self) -> io::Result<(Sealer, Reader)> {
        let stream = self.stream.into_std()?;
        stream.set_nonblocking(false)?;
        Ok((self.sealer, Reader { stream, opener: self.opener, wire: self.wire, plain: self.early, at: 0 }))
    }

    /// The blocking halves for the hot path: a writer that `timeout` bounds
    /// (a peer that stopped reading), and a reader.
    pub fn into_std(self, timeout: Duration) -> io::Result<(LinkWriter, Reader)> {
        let (sealer, reader) = self.into_parts()?;
        let w = reader.stream.try_clone()?;
        w.set_write_timeout(Some(timeout))?;
        Ok((LinkWriter(Arc::new(Mutex::new((w, sealer, Vec::new())))), reader))
    }

    /// The blocking link for a probe served on this connection, with the
    /// plaintext already read (`read`) put back in front.
    pub fn into_sync(self, mut read: Vec<u8>) -> io::Result<SyncLink> {
        let (sealer, mut reader) = self.into_parts()?;
        read.append(&mut reader.plain);
        reader.plain = read;
        Ok(SyncLink { reader, sealer, out: Vec::new() })
    }
}

/// Tells a peer why it is turned away, in a plaintext `Error` frame.
async fn refuse(stream: TcpStream, why: &str) {
    let reason = crate::ring::conn::reason(why);
    if let Ok(frame) = encode_control(&Control::Error { reason }) {
        turn_away(stream, &frame).await;
    }
}

/// Sends `refusal` to a peer before any link is set up. What the peer sent
/// is read first: closing over unread bytes resets the connection, and the
/// peer would see the reset instead of the reason.
pub async fn turn_away(mut s: TcpStream, refusal: &[u8]) {
    let _ = s.write_all(refusal).await;
    let _ = s.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 1usize << 20;
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 || n >= left {
                break;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The sending half of a link on a blocking socket, shared by the threads
/// that write to one peer; each message is sealed and written whole under
/// the lock, so records keep their order.
#[derive(Clone)]
pub struct LinkWriter(Arc<Mutex<(std::net::TcpStream, Sealer, Vec<u8>)>>);

impl std::fmt::Debug for LinkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkWriter")
    }
}

impl LinkWriter {
    pub fn send(&self, plain: &[u8]) -> io::Result<()> {
        let mut guard = self.0.lock().map_err(|_| io::Error::other("writer lock poisoned"))?;
        let (s, sealer, out) = &mut *guard;
        if !sealer.is_secure() {
            return s.write_all(plain);
        }
        out.clear();
        sealer.seal(plain, out)?;
        s.write_all(out)
    }

    /// Ends the sending direction, so the peer reads end-of-stream.
    pub fn close(&self) {
        if let Ok(g) = self.0.lock() {
            let _ = g.0.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Ends both directions (the reader sees end-of-stream too).
    pub fn shutdown(&self) {
        if let Ok(g) = self.0.lock() {
            let _ = g.0.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The receiving half of a link on a blocking socket.
pub struct Reader {
    stream: std::net::TcpStream,
    opener: Opener,
    wire: Vec<u8>,
    plain: Vec<u8>,
    /// How much of `plain` was handed out.
    at: usize,
}

impl Reader {
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.stream
    }

    /// The plaintext that arrived: what was waiting, else one socket read's
    /// worth (possibly none, when only part of a record came). `None`: the
    /// peer closed the connection. Errors include the socket's read timeout.
    pub fn read(&mut self) -> io::Result<Option<&[u8]>> {
        if self.at < self.plain.len() {
            let from = std::mem::replace(&mut self.at, self.plain.len());
            return Ok(Some(&self.plain[from..]));
        }
        if !self.fill()? {
            return Ok(None);
        }
        self.at = self.plain.len();
        Ok(Some(&self.plain))
    }

    /// Replaces `plain` (all handed out) with one socket read's plaintext;
    /// false when the peer closed the connection.
    fn fill(&mut self) -> io::Result<bool> {
        self.plain.clear();
        self.at = 0;
        let n = self.stream.read(&mut self.wire)?;
        if n == 0 {
            return Ok(false);
        }
        self.opener.open(&self.wire[..n], &mut self.plain)?;
        Ok(true)
    }
}

/// A whole link on a blocking socket, as `Read` and `Write` (the link probe).
pub struct SyncLink {
    reader: Reader,
    sealer: Sealer,
    out: Vec<u8>,
}

impl SyncLink {
    /// Connects to `addr` with `timeout` on every step; with a key, runs
    /// the handshake as the initiator.
    pub fn connect(addr: &std::net::SocketAddr, key: Option<&RingKey>, timeout: Duration) -> io::Result<Self> {
        let mut s = std::net::TcpStream::connect_timeout(addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        let (sealer, mut opener) = match key {
            None => (Sealer::default(), Opener::default()),
            Some(key) => {
                let (mut init, first) = Initiator::start(key)?;
                s.write_all(&first)?;
                let mut buf = [0u8; 512];
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        let why = "the peer closed the connection during the secure handshake";
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
                    }
                    if let Some(ends) = init.feed(&buf[..n])? {
                        break ends;
                    }
                }
            }
        };
        let mut plain = Vec::new();
        opener.take_early(&mut plain)?;
        let reader = Reader { stream: s, opener, wire: vec![0; READ_BUF], plain, at: 0 };
        Ok(Self { reader, sealer, out: Vec::new() })
    }

    pub fn socket(&self) -> &std::net::TcpStream {
        self.reader.socket()
    }
}

impl Read for SyncLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut self.reader;
        while r.at == r.plain.len() {
            if !r.fill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(r.plain.len() - r.at);
        buf[..n].copy_from_slice(&r.plain[r.at..r.at + n]);
        r.at += n;
        Ok(n)
    }
}

impl Write for SyncLink {
    fn write(&mut self, plain: &[u8]) -> io::Result<usize> {
        if !self.sealer.is_secure() {
            return self.reader.stream.write(plain);
        }
        self.out.clear();
        self.sealer.seal(plain, &mut self.out)?;
        self.reader.stream.write_all(&self.out)?;
        Ok(plain.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.reader.stream.flush()
    }
}
