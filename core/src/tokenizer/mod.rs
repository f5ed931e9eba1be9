//! Tokenizers read from GGUF metadata: byte-level BPE (gpt2 style) and
//! SentencePiece (score-based), with special-token parsing and streaming
//! UTF-8-safe decoding.

mod bpe;
mod bytes;
mod ids;
mod merge;
mod pretok;
mod spm;
mod stream;

#[cfg(test)]
mod tests;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::gguf::{Gguf, GgufError};
use ids::{Ids, TextOrder};
pub use pretok::{splits_for, Split};
pub use stream::StreamDecoder;

/// Token attributes from `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_id(v: i64) -> Self {
        match v {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerError {
    Gguf(GgufError),
    UnsupportedModel { model: String },
    UnsupportedPre { pre: String },
    Inconsistent { what: &'static str },
}

impl From<GgufError> for TokenizerError {
    fn from(e: GgufError) -> Self {
        TokenizerError::Gguf(e)
    }
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Gguf(e) => e.fmt(f),
            TokenizerError::UnsupportedModel { model } => {
                write!(f, "unsupported tokenizer model '{model}' (supported: gpt2, llama)")
            }
            TokenizerError::UnsupportedPre { pre } => write!(f, "unsupported BPE pre-tokenizer '{pre}'"),
            TokenizerError::Inconsistent { what } => write!(f, "tokenizer metadata is inconsistent: {what}"),
        }
    }
}

impl core::error::Error for TokenizerError {}

#[derive(Debug)]
enum Algorithm {
    Bpe(bpe::Bpe),
    Spm(spm::Spm),
}

/// A tokenizer built from a model's GGUF metadata.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// Text → id over `tokens`.
    order: TextOrder,
    /// Tokens matched verbatim in text when special parsing is on, longest first.
    specials: Vec<u32>,
    algo: Algorithm,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        let model = g.get_str("tokenizer.ggml.model")?;
        let arr = g.get_array("tokenizer.ggml.tokens")?;
        let tokens: Vec<String> = arr
            .strings()
            .ok_or(TokenizerError::Inconsistent { what: "tokens are not strings" })?
            .map(|s| s.to_string())
            .collect();
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(TokenizerError::Inconsistent { what: "vocabulary size" });
        }
        let kinds: Vec<TokenKind> = match g.get("tokenizer.ggml.token_type") {
            Some(_) => g
                .get_array("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| TokenKind::from_id(v.as_i64().unwrap_or(1)))
                .collect(),
            None => alloc::vec![TokenKind::Normal; n],
        };
        if kinds.len() != n {
            return Err(TokenizerError::Inconsistent { what: "token_type length differs from tokens" });
        }
        let order = TextOrder::new(&tokens);
        let ids = Ids { tokens: &tokens, order: &order };
        let id_key = |k: &str| -> Result<Option<u32>, TokenizerError> {
            Ok(g.opt(k, Gguf::get_u64)?.filter(|&v| (v as usize) < n).map(|v| v as u32))
        };
        let is_spm = model == "llama";
        let algo = match model {
            "gpt2" => {
                let pre = g.opt("tokenizer.ggml.pre", Gguf::get_str)?.unwrap_or("default");
                let steps = splits_for(pre).ok_or_else(|| TokenizerError::UnsupportedPre { pre: pre.to_string() })?;
                let merges = g.get_array("tokenizer.ggml.merges")?;
                let merges = merges.strings().ok_or(TokenizerError::Inconsistent { what: "merges are not strings" })?;
                Algorithm::Bpe(bpe::Bpe::new(steps, merges, ids))
            }
            "llama" => {
                let scores: Vec<f32> =
                    g.get_array("tokenizer.ggml.scores")?.iter().map(|v| v.as_f32().unwrap_or(0.0)).collect();
                if scores.len() != n {
                    return Err(TokenizerError::Inconsistent { what: "scores length differs from tokens" });
                }
                let add_space_prefix = g.opt("tokenizer.ggml.add_space_prefix", Gguf::get_bool)?.unwrap_or(true);
                Algorithm::Spm(spm::Spm::new(scores, add_space_prefix, &tokens))
            }
            other => return Err(TokenizerError::UnsupportedModel { model: other.to_string() }),
        };
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(kinds[i as usize], TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown)
                    && !tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()).then(a.cmp(&b)));
        let eot = id_key("tokenizer.ggml.eot_token_id")?.or_else(|| {
            ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"].iter().find_map(|s| ids.get(s))
        });
        Ok(Self {
            bos: id_key("tokenizer.ggml.bos_token_id")?,
            eos: id_key("tokenizer.ggml.eos_token_id")?,
            eot,
            add_bos: g.opt("tokenizer.ggml.add_bos_token", Gguf::get_bool)?.unwrap_or(is_spm),
            add_eos: g.opt("tokenizer.ggml.add_eos_token", Gguf::get_bool)?.unwrap_or(false),
            tokens,
            kinds,
            order,
            specials,
            algo,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|s| s.as_str())
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids().get(text)
    }

    /// Whether generation should stop at this token.
    pub fn is_eog(&self, id: u32) -> bool {
        Some(id) == self.eos || Some(id) == self.eot
    }

    /// Encodes `text`. `add_special` adds BOS/EOS as the model asks;
    /// `parse_special` turns special-token text (e.g. `<|im_start|>`) into its id.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut after_special = true;
        for frag in self.fragments(text, parse_special) {
            match frag {
                Fragment::Special(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    match &self.algo {
                        Algorithm::Bpe(b) => b.encode(t, self.ids(), &mut out),
                        Algorithm::Spm(s) => s.encode(t, after_special, self.ids(), &mut out),
                    }
                    after_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The bytes a token stands for when printed. Control tokens print
    /// nothing unless `special` is set.
    pub fn token_bytes(&self, id: u32, special: bool, out: &mut Vec<u8>) {
        let Some(text) = self.tokens.get(id as usize) else { return };
        match self.kinds[id as usize] {
            TokenKind::Control | TokenKind::Unknown if !special => {}
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown => out.extend_from_slice(text.as_bytes()),
            _ => match &self.algo {
                Algorithm::Bpe(_) => bytes::unicode_to_bytes(text, out),
                Algorithm::Spm(_) => spm::piece_bytes(text, out),
            },
        }
    }

    /// Decodes ids into text, replacing invalid UTF-8 with U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.token_bytes(id, special, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn ids(&self) -> Ids<'_> {
        Ids { tokens: &self.tokens, order: &self.order }
    }

    fn fragments<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = alloc::vec![Fragment::Text(text)];
        // User-defined tokens (Gemma's runs of spaces and newlines) are
        // always whole tokens, as in the reference engine; control tokens
        // only when special text is parsed.
        let wanted = |id: &&u32| parse_special || self.kinds[**id as usize] == TokenKind::UserDefined;
        for &id in self.specials.iter().filter(wanted) {
            let pat = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = t.find(pat) {
                    if at > 0 {
                        next.push(Fragment::Text(&t[..at]));
                    }
                    next.push(Fragment::Special(id));
                    t = &t[at + pat.len()..];
                }
                if !t.is_empty() {
                    next.push(Fragment::Text(t));
                }
            }
            frags = next;
        }
        frags
    }
}

#[derive(Debug, Clone, Copy)]
enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}
