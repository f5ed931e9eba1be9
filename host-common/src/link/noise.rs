//! The secure link's bytes, without IO: the Noise handshake and the records
//! that carry everything after it.
//!
//! The connecting side (initiator) opens with `N`, a `u16` length and
//! Noise's first message; the accepting side answers the same way or, when
//! it refuses, with a plaintext ring `Error` frame saying why. After that
//! every byte travels in records: a `u16` length, then ciphertext with its
//! 16-byte tag, each under the next nonce of its direction.

use prima_core::ring::wire::{Control, Frame, FrameDecoder};
use snow::{HandshakeState, StatelessTransportState};
use std::sync::Arc;

use super::{LinkError, RingKey};

/// First byte of a secure connection (ring frames start with `P`, link
/// probes with their kind, 1 or 2).
pub const SECURE_MAGIC: u8 = b'N';
/// Noise NN with the pre-shared ring key mixed in first: both sides prove
/// they hold it before any other byte is read.
const PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol and version.
const PROLOGUE: &[u8] = b"prima-ring link 1";
const TAG: usize = 16;
/// Most plaintext bytes in one record (Noise messages are at most 65535).
pub const MAX_RECORD_PLAIN: usize = u16::MAX as usize - TAG;
/// Largest handshake message accepted (NNpsk0's are 48 bytes).
const MAX_HANDSHAKE: usize = 256;

fn builder(key: &RingKey) -> Result<snow::Builder<'_>, LinkError> {
    let params = PARAMS.parse().map_err(LinkError::noise)?;
    snow::Builder::new(params).psk(0, key.bytes()).and_then(|b| b.prologue(PROLOGUE)).map_err(LinkError::noise)
}

/// `N`, the length, the message.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + msg.len());
    out.push(SECURE_MAGIC);
    out.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    out.extend_from_slice(msg);
    out
}

/// One whole handshake message from the front of `buf`, if it has arrived.
/// A plaintext ring frame in its place is the peer's refusal.
fn take_message(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, LinkError> {
    match buf.first() {
        None => return Ok(None),
        Some(&SECURE_MAGIC) => {}
        Some(b'P') => return refusal(buf),
        Some(_) => return Err(LinkError::Protocol("the peer does not speak the secure link".into())),
    }
    if buf.len() < 3 {
        return Ok(None);
    }
    let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
    if len > MAX_HANDSHAKE {
        return Err(LinkError::Protocol(format!("a handshake message of {len} bytes (limit {MAX_HANDSHAKE})")));
    }
    if buf.len() < 3 + len {
        return Ok(None);
    }
    let msg = buf[3..3 + len].to_vec();
    buf.drain(..3 + len);
    Ok(Some(msg))
}

/// The reason in a plaintext `Error` frame, once it has all arrived.
fn refusal(buf: &[u8]) -> Result<Option<Vec<u8>>, LinkError> {
    let mut dec = FrameDecoder::default();
    dec.push(buf);
    match dec.next_frame() {
        Ok(None) => Ok(None),
        Ok(Some(Frame::Control(c))) => match *c {
            Control::Error { reason } | Control::Stop { reason } => Err(LinkError::Refused(reason.to_string())),
            other => Err(LinkError::Protocol(format!("the peer answered the handshake with {other:?}"))),
        },
        Ok(Some(Frame::Activations(..))) => Err(LinkError::Protocol("the peer sent activations".into())),
        Err(e) => Err(LinkError::Protocol(e.to_string())),
    }
}

/// The connecting side's handshake in progress.
pub struct Initiator {
    /// `None` once the handshake has finished.
    hs: Option<HandshakeState>,
    got: Vec<u8>,
}

impl Initiator {
    /// The handshake and the bytes to send first.
    pub fn start(key: &RingKey) -> Result<(Self, Vec<u8>), LinkError> {
        let mut hs = builder(key)?.build_initiator().map_err(LinkError::noise)?;
        let mut msg = [0u8; MAX_HANDSHAKE];
        let n = hs.write_message(&[], &mut msg).map_err(LinkError::noise)?;
        Ok((Self { hs: Some(hs), got: Vec::new() }, framed(&msg[..n])))
    }

    /// Feeds the peer's bytes; once its answer is whole, the link's ends and
    /// any bytes that followed it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<(Sealer, Opener)>, LinkError> {
        self.got.extend_from_slice(bytes);
        if self.got.len() > 2 * MAX_HANDSHAKE + (64 << 10) {
            return Err(LinkError::Protocol("the peer's answer to the handshake is too long".into()));
        }
        let Some(msg) = take_message(&mut self.got)? else { return Ok(None) };
        let mut hs = self.hs.take().ok_or_else(|| LinkError::Protocol("the handshake already finished".into()))?;
        let mut payload = [0u8; MAX_HANDSHAKE];
        hs.read_message(&msg, &mut payload).map_err(|_| LinkError::WrongKey)?;
        let (sealer, mut opener) = split(hs.into_stateless_transport_mode().map_err(LinkError::noise)?);
        opener.sealed = std::mem::take(&mut self.got);
        Ok(Some((sealer, opener)))
    }
}

/// The accepting side's handshake: collects the initiator's first message.
#[derive(Default)]
pub struct Responder {
    got: Vec<u8>,
}

impl Responder {
    /// Feeds the initiator's bytes; once its message is whole, checks it
    /// against `key` and returns the answer to send and the link's ends.
    pub fn feed(&mut self, key: &RingKey, bytes: &[u8]) -> Result<Option<(Vec<u8>, Sealer, Opener)>, LinkError> {
        self.got.extend_from_slice(bytes);
        let Some(msg) = take_message(&mut self.got)? else { return Ok(None) };
        let mut hs = builder(key)?.build_responder().map_err(LinkError::noise)?;
        let mut payload = [0u8; MAX_HANDSHAKE];
        hs.read_message(&msg, &mut payload).map_err(|_| LinkError::WrongKey)?;
        let mut reply = [0u8; MAX_HANDSHAKE];
        let n = hs.write_message(&[], &mut reply).map_err(LinkError::noise)?;
        let state = hs.into_stateless_transport_mode().map_err(LinkError::noise)?;
        let (sealer, mut opener) = split(state);
        opener.sealed = std::mem::take(&mut self.got);
        Ok(Some((framed(&reply[..n]), sealer, opener)))
    }
}

fn split(state: StatelessTransportState) -> (Sealer, Opener) {
    let state = Arc::new(state);
    (Sealer { state: Some(Arc::clone(&state)), nonce: 0 }, Opener { state: Some(state), nonce: 0, sealed: Vec::new() })
}

/// The sending end of a link: plaintext in, records out (or the same bytes
/// on a plaintext link).
#[derive(Default)]
pub struct Sealer {
    state: Option<Arc<StatelessTransportState>>,
    nonce: u64,
}

impl Sealer {
    pub fn is_secure(&self) -> bool {
        self.state.is_some()
    }

    /// Appends to `out` what to send for `plain`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let Some(state) = &self.state else {
            out.extend_from_slice(plain);
            return Ok(());
        };
        for piece in plain.chunks(MAX_RECORD_PLAIN) {
            let len = piece.len() + TAG;
            let at = out.len() + 2;
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.resize(at + len, 0);
            state.write_message(self.nonce, piece, &mut out[at..]).map_err(LinkError::noise)?;
            self.nonce += 1;
        }
        Ok(())
    }
}

/// The receiving end of a link: bytes as they arrive in, plaintext out.
#[derive(Default)]
pub struct Opener {
    state: Option<Arc<StatelessTransportState>>,
    nonce: u64,
    /// Bytes of records not yet whole.
    sealed: Vec<u8>,
}

impl Opener {
    /// Appends to `plain` the plaintext of every record that `wire` (with
    /// what came before) completes. A record that does not verify (another
    /// key, altered or replayed bytes) is an error, and the link is dead.
    pub fn open(&mut self, wire: &[u8], plain: &mut Vec<u8>) -> Result<(), LinkError> {
        let Some(state) = &self.state else {
            plain.extend_from_slice(wire);
            return Ok(());
        };
        self.sealed.extend_from_slice(wire);
        let mut at = 0;
        while self.sealed.len() - at >= 2 {
            let len = u16::from_le_bytes([self.sealed[at], self.sealed[at + 1]]) as usize;
            if len < TAG {
                return Err(LinkError::Protocol(format!("a record of {len} bytes is shorter than its tag")));
            }
            if self.sealed.len() - at - 2 < len {
                break;
            }
            let start = plain.len();
            plain.resize(start + len - TAG, 0);
            let record = &self.sealed[at + 2..at + 2 + len];
            if state.read_message(self.nonce, record, &mut plain[start..]).is_err() {
                plain.truncate(start);
                return Err(LinkError::Tampered);
            }
            self.nonce += 1;
            at += 2 + len;
        }
        self.sealed.drain(..at);
        Ok(())
    }

    /// Takes the plaintext of records that arrived with the handshake.
    pub fn take_early(&mut self, plain: &mut Vec<u8>) -> Result<(), LinkError> {
        let early = std::mem::take(&mut self.sealed);
        self.open(&early, plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Ends = (Sealer, Opener);

    /// The initiator's and the responder's ends of a handshake between `a` and `b`.
    fn pair(a: &RingKey, b: &RingKey) -> Result<(Ends, Ends), LinkError> {
        let (mut init, first) = Initiator::start(a)?;
        let (answer, rs, ro) = Responder::default().feed(b, &first)?.expect("whole message");
        let (is, io) = init.feed(&answer)?.expect("whole answer");
        Ok(((is, io), (rs, ro)))
    }

    #[test]
    fn a_wrong_key_is_refused_by_the_responder() {
        let err = pair(&RingKey::generate().unwrap(), &RingKey::generate().unwrap()).err().unwrap();
        assert!(matches!(err, LinkError::WrongKey), "{err}");
        assert!(err.to_string().contains("authentication"), "{err}");
    }

    #[test]
    fn a_refusal_frame_is_read_as_the_peers_reason() {
        let key = RingKey::generate().unwrap();
        let (mut init, _) = Initiator::start(&key).unwrap();
        let frame = prima_core::ring::wire::encode_control(&Control::Error {
            reason: "authentication required".try_into().unwrap(),
        })
        .unwrap();
        let (head, tail) = frame.split_at(5);
        assert!(init.feed(head).unwrap().is_none());
        match init.feed(tail) {
            Err(LinkError::Refused(why)) => assert_eq!(why, "authentication required"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn altered_or_replayed_records_are_refused() {
        let key = RingKey::generate().unwrap();
        let ((mut s, _), (_, mut o)) = pair(&key, &key).unwrap();
        let mut wire = Vec::new();
        s.seal(b"hidden states", &mut wire).unwrap();
        let mut flipped = wire.clone();
        flipped[5] ^= 1;
        let mut plain = Vec::new();
        assert!(matches!(o.open(&flipped, &mut plain), Err(LinkError::Tampered)));
        let ((mut s, _), (_, mut o)) = pair(&key, &key).unwrap();
        wire.clear();
        s.seal(b"once", &mut wire).unwrap();
        o.open(&wire, &mut plain).unwrap();
        assert_eq!(plain, b"once");
        assert!(matches!(o.open(&wire, &mut plain), Err(LinkError::Tampered)), "a replay must not verify");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever the message sizes and however the bytes are cut on the
        /// way, the plaintext arrives whole and in order, never in the clear.
        #[test]
        fn records_survive_any_split(sizes in prop::collection::vec(0usize..200_000, 1..5), cut in 1usize..70_000) {
            let key = RingKey::generate().unwrap();
            let ((mut s, _), (_, mut o)) = pair(&key, &key).unwrap();
            let mut sent = Vec::new();
            let mut wire = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let msg: Vec<u8> = (0..*n).map(|j| (j * 7 + i) as u8).collect();
                s.seal(&msg, &mut wire).unwrap();
                sent.extend_from_slice(&msg);
            }
            if sent.len() >= 64 {
                prop_assert!(!wire.windows(64).any(|w| w == &sent[..64]));
            }
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                o.open(piece, &mut got).unwrap();
            }
            prop_assert_eq!(got, sent);
        }
    }
}
