//! Ring links that a home network cannot read or join uninvited.
//!
//! Every ring connection (control, layer shipping, activations, link probes)
//! can run over Noise `NNpsk0`: both ends hold a 32-byte ring key made by
//! `prima keygen`, prove it in the handshake before any other byte is
//! read, and then exchange ChaCha20-Poly1305 records. A peer without the
//! key, or with another, is refused with a line that names authentication.
//! The key must be random (keygen's): a guessable passphrase could be tried
//! offline against a recorded handshake.

mod noise;
mod stream;

pub use noise::{Initiator, Opener, Responder, Sealer, MAX_RECORD_PLAIN, SECURE_MAGIC};
pub use stream::{turn_away, Link, LinkWriter, Reader, SyncLink};

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// The environment variable that holds a ring key (or a key file's path)
/// when `--key` is not given.
pub const KEY_ENV: &str = "PRIMA_RING_KEY";

/// A ring's pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey([u8; 32]);

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingKey({})", self.id())
    }
}

impl RingKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, LinkError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| LinkError::Key(format!("no randomness for a key: {e}")))?;
        Ok(Self(k))
    }

    /// A key written as 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let text = text.trim();
        let bad = || LinkError::Key("a ring key is 64 hex digits (make one with `prima keygen`)".into());
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(k))
    }

    /// `arg` is the key itself, or the path of a file that holds it.
    pub fn load(arg: &str) -> Result<Self, LinkError> {
        if arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Self::parse(arg);
        }
        let path = Path::new(arg);
        let meta = std::fs::metadata(path)
            .map_err(|e| LinkError::Key(format!("cannot read ring key file {}: {e}", path.display())))?;
        if meta.len() > 4096 {
            return Err(LinkError::Key(format!("{} is too large to be a ring key file", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| LinkError::Key(format!("cannot read ring key file {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| LinkError::Key(format!("{}: {e}", path.display())))
    }

    /// `--key`'s value, else `$PRIMA_RING_KEY`'s, else none.
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Option<Self>, LinkError> {
        match arg.map(str::to_string).or_else(|| std::env::var(KEY_ENV).ok().filter(|v| !v.is_empty())) {
            Some(a) => Self::load(&a).map(Some),
            None => Ok(None),
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }

    /// A short public name for the key (a hash of it), for logs: two
    /// devices showing the same id hold the same key.
    pub fn id(&self) -> String {
        let h = Sha256::new().chain_update(b"prima ring key id").chain_update(self.0).finalize();
        crate::hex(&h[..4])
    }
}

/// Why a secure link could not be set up or went bad.
#[derive(Debug)]
pub enum LinkError {
    /// The peer's handshake does not verify under this key.
    WrongKey,
    /// A record did not verify: altered, replayed, or under another key.
    Tampered,
    /// The peer turned the connection away, for this reason.
    Refused(String),
    /// The peer broke the link protocol.
    Protocol(String),
    /// A ring key could not be made or read.
    Key(String),
    Noise(snow::Error),
}

impl LinkError {
    fn noise(e: snow::Error) -> Self {
        Self::Noise(e)
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongKey => f.write_str("authentication failed: the peer's ring key is not this one"),
            Self::Tampered => {
                f.write_str("authentication failed: a record from the peer does not verify (altered or replayed)")
            }
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Protocol(what) => write!(f, "secure link: {what}"),
            Self::Key(what) => f.write_str(what),
            Self::Noise(_) => f.write_str("secure link: the Noise handshake failed"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Noise(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LinkError> for std::io::Error {
    fn from(e: LinkError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_from_hex_or_a_file_and_bad_ones_are_named() {
        let key = RingKey::generate().unwrap();
        assert_eq!(RingKey::parse(&key.to_hex()).unwrap(), key);
        let dir = std::env::temp_dir().join(format!("prima-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ring.key");
        std::fs::write(&file, format!("{}\n", key.to_hex())).unwrap();
        assert_eq!(RingKey::load(file.to_str().unwrap()).unwrap(), key);
        std::fs::write(&file, "not a key").unwrap();
        let err = RingKey::load(file.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("ring.key") && err.contains("64 hex digits"), "{err}");
        let err = RingKey::load(dir.join("missing").to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("cannot read ring key file"), "{err}");
        assert!(!format!("{key:?}").contains(&key.to_hex()[..16]), "Debug must not print the key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
