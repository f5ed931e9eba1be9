use alloc::collections::BTreeMap;

use super::ids::Ids;
use alloc::string::String;
use alloc::vec::Vec;

use super::bytes::byte_to_char;
use super::merge::{merge, Symbol};
use super::pretok::{split, Split};
use core::cmp::Reverse;

/// Byte-level BPE: pre-split, map bytes to characters, merge by rank.
#[derive(Debug)]
pub(super) struct Bpe {
    steps: &'static [Split],
    /// llama3-style vocabularies take a word that is itself a token as is.
    ignore_merges: bool,
    /// (left id, right id) -> (rank, merged id)
    merges: BTreeMap<(u32, u32), (u32, u32)>,
    byte_ids: [Option<u32>; 256],
}

impl Bpe {
    pub(super) fn new<'a>(steps: &'static [Split], merges: impl Iterator<Item = &'a str>, ids: Ids<'_>) -> Self {
        let mut map = BTreeMap::new();
        for (rank, m) in merges.enumerate() {
            let Some((l, r)) = m.split_once(' ') else { continue };
            let mut joined = String::with_capacity(m.len());
            joined.push_str(l);
            joined.push_str(r);
            if let (Some(a), Some(b), Some(c)) = (ids.get(l), ids.get(r), ids.get(&joined)) {
                map.entry((a, b)).or_insert((rank as u32, c));
            }
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let mut s = String::new();
            s.push(byte_to_char(b as u8));
            *slot = ids.get(&s);
        }
        let ignore_merges = steps.contains(&Split::Llama3 { max_digits: 3 });
        Self { steps, ignore_merges, merges: map, byte_ids }
    }

    pub(super) fn encode(&self, text: &str, ids: Ids<'_>, out: &mut Vec<u32>) {
        let chars: Vec<char> = text.chars().collect();
        let mut word = String::new();
        for r in split(&chars, self.steps) {
            word.clear();
            word.extend(&chars[r]);
            if self.ignore_merges {
                let mapped: String = word.bytes().map(byte_to_char).collect();
                if let Some(id) = ids.get(&mapped) {
                    out.push(id);
                    continue;
                }
            }
            let bytes = word.bytes().filter_map(|b| self.byte_ids[b as usize]);
            let syms = bytes.enumerate().map(|(at, id)| Symbol::new(at, 1, id)).collect();
            // The lowest rank first (the leftmost on ties).
            let ranked = |l: &Symbol, r: &Symbol| self.merges.get(&(l.id, r.id)).map(|&(rank, id)| (Reverse(rank), id));
            out.extend(merge(syms, ranked).iter().map(|s| s.id));
        }
    }
}
