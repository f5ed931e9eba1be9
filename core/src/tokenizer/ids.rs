//! Token text → id, without a second copy of every string: ids sorted by
//! their text, searched by bisection. A 262k vocabulary (Gemma 3) saved
//! about 18 MB over a map keyed by owned strings.

use alloc::string::String;
use alloc::vec::Vec;

/// The ids of a vocabulary in the order of their texts; for a text held by
/// several tokens, only the lowest id (as the reference engine keeps).
#[derive(Debug)]
pub(super) struct TextOrder(Vec<u32>);

impl TextOrder {
    pub(super) fn new(tokens: &[String]) -> Self {
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by(|&a, &b| tokens[a as usize].cmp(&tokens[b as usize]).then(a.cmp(&b)));
        order.dedup_by(|later, earlier| tokens[*later as usize] == tokens[*earlier as usize]);
        Self(order)
    }
}

/// A lookup over a vocabulary and its [`TextOrder`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids<'t> {
    pub tokens: &'t [String],
    pub order: &'t TextOrder,
}

impl Ids<'_> {
    pub(super) fn get(&self, text: &str) -> Option<u32> {
        let i = self.order.0.binary_search_by(|&id| self.tokens[id as usize].as_str().cmp(text)).ok()?;
        Some(self.order.0[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn every_text_finds_its_lowest_id() {
        let tokens: Vec<String> = ["b", "a", "c", "a", "", "ab"].iter().map(|s| s.to_string()).collect();
        let order = TextOrder::new(&tokens);
        let ids = Ids { tokens: &tokens, order: &order };
        assert_eq!(ids.get("a"), Some(1));
        assert_eq!(ids.get("b"), Some(0));
        assert_eq!(ids.get("ab"), Some(5));
        assert_eq!(ids.get(""), Some(4));
        assert_eq!(ids.get("d"), None);
    }
}
