use super::ids::Ids;
use super::merge::{merge, Score, Symbol};
use alloc::string::String;
use alloc::vec::Vec;

/// SentencePiece-style tokenizer: merges the best-scoring adjacent pair whose
/// concatenation is a token (the leftmost on ties), then falls back to
/// `<0xXX>` byte tokens.
#[derive(Debug)]
pub(super) struct Spm {
    scores: Vec<f32>,
    add_space_prefix: bool,
    byte_ids: [Option<u32>; 256],
}

const SPACE: char = '\u{2581}';

impl Spm {
    pub(super) fn new(scores: Vec<f32>, add_space_prefix: bool, tokens: &[String]) -> Self {
        let mut byte_ids = [None; 256];
        for (i, t) in tokens.iter().enumerate() {
            if let Some(b) = parse_byte_token(t) {
                byte_ids[b as usize].get_or_insert(i as u32);
            }
        }
        Self { scores, add_space_prefix, byte_ids }
    }

    pub(super) fn encode(&self, text: &str, at_start: bool, ids: Ids<'_>, out: &mut Vec<u32>) {
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && at_start {
            s.push(SPACE);
        }
        s.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        // Units are bytes of `s`; each symbol starts as one character.
        let chars = s.char_indices().map(|(at, c)| Symbol::new(at, c.len_utf8(), 0)).collect();
        let joined = |l: &Symbol, r: &Symbol| {
            let id = ids.get(&s[l.start..r.start + r.len])?;
            Some((Score(self.scores[id as usize]), id))
        };
        for sym in merge(chars, joined) {
            let piece = &s[sym.start..sym.start + sym.len];
            match ids.get(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_ids[b as usize])),
            }
        }
    }
}

fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes an SPM piece stands for: `▁` is a space, `<0xXX>` one byte.
pub(super) fn piece_bytes(text: &str, out: &mut Vec<u8>) {
    if let Some(b) = parse_byte_token(text) {
        out.push(b);
        return;
    }
    for c in text.chars() {
        if c == SPACE {
            out.push(b' ');
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}
