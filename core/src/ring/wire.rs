//! The ring's wire format.
//!
//! Every frame is `[magic "PR"][kind: u8][length: u32 LE][payload]`:
//! - kind 0, **control**: a postcard-encoded [`Control`] message whose first
//!   field is the protocol version;
//! - kind 1, **activations**: a fixed 16-byte header ([`ActHeader`]) and then
//!   raw little-endian f16 or f32 values, whose count the header must match
//!   exactly.
//!
//! [`FrameDecoder`] is sans-IO: the host pushes whatever bytes arrived and
//! pulls whole frames. Lengths are checked before anything is buffered
//! beyond [`MAX_PAYLOAD`], so a hostile peer gets an error, never a panic or
//! an allocation it chose.

use alloc::vec::Vec;
use core::fmt;
use heapless::String;
use serde::{Deserialize, Serialize};

use crate::profile::DeviceProfile;

/// The protocol version this build speaks.
pub const WIRE_VERSION: u16 = 5;
/// Most sequences (KV slots) a ring carries at once, and so the most
/// spans a token batch has.
pub const MAX_SLOTS: usize = 64;
/// Largest payload accepted: 64 MiB (a 512-token f32 batch of 8192-wide
/// activations is 16 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;

const MAGIC: [u8; 2] = *b"PR";
const HEADER: usize = 7;
const KIND_CONTROL: u8 = 0;
const KIND_ACTIVATIONS: u8 = 1;
const ACT_HEADER: usize = 16;

/// Control messages between the head and the workers. Decoded into a box
/// ([`Frame::Control`]), so the bounded lists' size costs no copies.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// First message on a connection, both ways (the frame carries the version).
    Hello {
        profile: DeviceProfile,
    },
    /// The head's plan: device `index` of `devices` runs `windows[round]`
    /// for each round and sends to `next` (empty: back to the head on this
    /// connection).
    Plan {
        session: u64,
        index: u16,
        devices: u16,
        k: u16,
        windows: heapless::Vec<LayerRange, 64>,
        next: String<64>,
        f32_activations: bool,
        n_ctx: u32,
        kv_f32: bool,
        /// Identifies the model file, so a worker's cached layers are reused
        /// only for the same file.
        model: [u8; 32],
        /// Sequences held at once: each device keeps a KV cache of `n_ctx`
        /// positions per slot (1..=[`MAX_SLOTS`]).
        slots: u16,
        /// Halda's count of each window's first layers for the device's
        /// GPU, at most its own `-ngl`; `None` (fixed windows): its `-ngl`.
        gpu_layers: Option<u16>,
    },
    /// A worker's answer to the plan: whether the head must send its layers.
    Need {
        weights: bool,
    },
    /// Part of the worker's layer file (a GGUF holding only its layers),
    /// sent in order; `total` is the whole file's length.
    Weights {
        offset: u64,
        total: u64,
        bytes: Vec<u8>,
    },
    /// First message of a worker's connection to its successor.
    Pred {
        session: u64,
    },
    /// A worker has mapped its layers and connected to its successor.
    Ready,
    /// What the next activation frame carries: each sequence's rows, in
    /// order (batched sequences travel together).
    TokenMeta {
        seq: u32,
        spans: Spans,
        want_all: bool,
    },
    /// KV-cache edits every device applies to its layers.
    Kv(KvOp),
    Heartbeat {
        nonce: u64,
    },
    /// A worker's running totals, in microseconds: computing, waiting for
    /// its predecessor while work was due, and faulting weights in from disk.
    Stats {
        compute_us: u64,
        network_us: u64,
        disk_us: u64,
    },
    /// An orderly end, with a reason for the log.
    Stop {
        reason: String<128>,
    },
    /// The sender refuses what it received; the connection closes after this.
    Error {
        reason: String<128>,
    },
    /// After a layer file's last `Weights`: its SHA-256, which the worker
    /// checks before keeping the file and again before each later use.
    WeightsDigest {
        sha256: [u8; 32],
    },
}

/// One sequence's rows of a token batch: `n_tokens` consecutive rows at
/// positions `pos0..` of slot `slot`'s caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub slot: u16,
    pub pos0: u32,
    pub n_tokens: u32,
}

/// The spans of one token batch, slots in increasing order.
pub type Spans = heapless::Vec<Span, MAX_SLOTS>;

/// Whether `spans` describe a batch of `rows` rows for a ring of `slots`
/// slots: each slot once, in increasing order, each with rows, positions
/// that do not wrap, and rows that add up.
pub fn spans_fit(spans: &[Span], rows: usize, slots: usize) -> bool {
    let ordered = spans.windows(2).all(|w| w[0].slot < w[1].slot);
    let each =
        spans.iter().all(|s| s.n_tokens > 0 && (s.slot as usize) < slots && s.pos0.checked_add(s.n_tokens).is_some());
    let total: u64 = spans.iter().map(|s| s.n_tokens as u64).sum();
    !spans.is_empty() && ordered && each && total == rows as u64
}

/// Layers `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRange {
    pub start: u16,
    pub end: u16,
}

/// An edit of every device's KV cache for one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Clear,
    /// Forget positions `start..end`.
    Remove {
        start: u32,
        end: u32,
    },
    /// Move positions `start..end` by `delta`.
    Shift {
        start: u32,
        end: u32,
        delta: i32,
    },
}

/// Element type of an activation frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActType {
    F16,
    F32,
}

impl ActType {
    fn bytes(self) -> usize {
        match self {
            ActType::F16 => 2,
            ActType::F32 => 4,
        }
    }
}

/// Which hidden states an activation frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActHeader {
    pub seq: u32,
    /// Round within the token (0..k).
    pub round: u16,
    pub ty: ActType,
    pub n_tokens: u32,
    pub n_embd: u32,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Boxed: control messages are rare and large (a profile), activations frequent.
    Control(alloc::boxed::Box<Control>),
    /// The header and the raw little-endian values.
    Activations(ActHeader, Vec<u8>),
}

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    BadMagic([u8; 2]),
    UnknownKind(u8),
    TooLong {
        len: usize,
        max: usize,
    },
    /// A control message that does not decode (or has trailing bytes).
    Malformed,
    Version {
        found: u16,
        supported: u16,
    },
    /// An activation header whose sizes disagree with the payload.
    ActivationLength {
        header_says: usize,
        payload: usize,
    },
    BadActType(u8),
    /// Encoding failed: a bounded field overflowed.
    Encode,
    /// A well-formed frame that does not fit the ring's state or plan.
    Unexpected(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "not a prima ring frame (magic {m:02x?})"),
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Self::TooLong { len, max } => write!(f, "frame payload of {len} bytes exceeds the {max}-byte limit"),
            Self::Malformed => f.write_str("malformed control message"),
            Self::Version { found, supported } => {
                write!(f, "peer speaks ring protocol version {found}; this build speaks {supported}")
            }
            Self::ActivationLength { header_says, payload } => {
                write!(f, "activation frame header says {header_says} bytes but carries {payload}")
            }
            Self::BadActType(t) => write!(f, "unknown activation element type {t}"),
            Self::Encode => f.write_str("message too large for its bounded fields"),
            Self::Unexpected(what) => write!(f, "unexpected frame: {what}"),
        }
    }
}

impl core::error::Error for WireError {}

fn frame(kind: u8, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLong { len: payload.len(), max: MAX_PAYLOAD });
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A control frame.
pub fn encode_control(msg: &Control) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_allocvec(msg).map_err(|_| WireError::Encode)?;
    let mut payload = WIRE_VERSION.to_le_bytes().to_vec();
    payload.extend_from_slice(&body);
    frame(KIND_CONTROL, &payload)
}

/// An activation frame for `values` (`n_tokens * n_embd` of them), as `ty`.
pub fn encode_activations(
    seq: u32,
    round: u16,
    ty: ActType,
    n_embd: u32,
    values: &[f32],
) -> Result<Vec<u8>, WireError> {
    let n_tokens = values.len().checked_div(n_embd as usize).unwrap_or(0) as u32;
    let mut payload = Vec::with_capacity(ACT_HEADER + values.len() * ty.bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&round.to_le_bytes());
    payload.push(match ty {
        ActType::F16 => 0,
        ActType::F32 => 1,
    });
    payload.push(0);
    payload.extend_from_slice(&n_tokens.to_le_bytes());
    payload.extend_from_slice(&n_embd.to_le_bytes());
    for &v in values {
        match ty {
            ActType::F16 => payload.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            ActType::F32 => payload.extend_from_slice(&v.to_le_bytes()),
        }
    }
    frame(KIND_ACTIVATIONS, &payload)
}

/// Decodes activation values (as produced by [`encode_activations`]) into `out`.
pub fn decode_values(h: &ActHeader, raw: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match h.ty {
        ActType::F16 => out.extend(raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        ActType::F32 => out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
    }
}

/// Reassembles frames from a byte stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Appends bytes as they arrive.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded, for a reader that takes over the stream.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.buf)
    }

    /// The next whole frame, `Ok(None)` until one has arrived, or the reason
    /// the stream must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < HEADER {
            if self.buf.len() >= 2 && self.buf[..2] != MAGIC {
                return Err(WireError::BadMagic([self.buf[0], self.buf[1]]));
            }
            return Ok(None);
        }
        if self.buf[..2] != MAGIC {
            return Err(WireError::BadMagic([self.buf[0], self.buf[1]]));
        }
        let kind = self.buf[2];
        if kind != KIND_CONTROL && kind != KIND_ACTIVATIONS {
            return Err(WireError::UnknownKind(kind));
        }
        let len = u32::from_le_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong { len, max: MAX_PAYLOAD });
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(HEADER + len);
        let payload = core::mem::replace(&mut self.buf, rest).split_off(HEADER);
        match kind {
            KIND_CONTROL => decode_control(&payload).map(|c| Some(Frame::Control(alloc::boxed::Box::new(c)))),
            _ => decode_activations(payload).map(Some),
        }
    }
}

fn decode_control(payload: &[u8]) -> Result<Control, WireError> {
    let [a, b, body @ ..] = payload else { return Err(WireError::Malformed) };
    let version = u16::from_le_bytes([*a, *b]);
    if version != WIRE_VERSION {
        return Err(WireError::Version { found: version, supported: WIRE_VERSION });
    }
    match postcard::take_from_bytes::<Control>(body) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(WireError::Malformed),
    }
}

fn decode_activations(mut payload: Vec<u8>) -> Result<Frame, WireError> {
    if payload.len() < ACT_HEADER {
        return Err(WireError::ActivationLength { header_says: ACT_HEADER, payload: payload.len() });
    }
    let h = &payload[..ACT_HEADER];
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let ty = match h[6] {
        0 => ActType::F16,
        1 => ActType::F32,
        t => return Err(WireError::BadActType(t)),
    };
    let header = ActHeader {
        seq: u32_at(0),
        round: u16::from_le_bytes([h[4], h[5]]),
        ty,
        n_tokens: u32_at(8),
        n_embd: u32_at(12),
    };
    // Checked: a hostile header must not wrap around to a plausible size.
    let want = (header.n_tokens as u128) * (header.n_embd as u128) * ty.bytes() as u128;
    let have = payload.len() - ACT_HEADER;
    if want != have as u128 {
        return Err(WireError::ActivationLength { header_says: want.min(usize::MAX as u128) as usize, payload: have });
    }
    Ok(Frame::Activations(header, payload.split_off(ACT_HEADER)))
}

#[cfg(test)]
mod tests;
