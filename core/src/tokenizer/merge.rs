//! The merge loop both tokenizers share: symbols in a linked list and the
//! candidate pairs in a heap, so a long text or word costs n log n rather
//! than the n² of rescanning every pair after each merge.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::{Ordering, Reverse};

/// A run of the input's units (`len` of them from `start`, whatever a unit
/// is to the caller) that stands for token `id`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Symbol {
    pub start: usize,
    pub len: usize,
    pub id: u32,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Symbol {
    pub fn new(start: usize, len: usize, id: u32) -> Self {
        Self { start, len, id, prev: None, next: None }
    }
}

/// Adjacent symbols that may merge into token `id`, with priority `p`.
struct Pair<P> {
    key: (P, Reverse<usize>),
    left: usize,
    right: usize,
    /// Both symbols' lengths when queued: a symbol only grows, so a change
    /// means the pair is stale.
    lens: (usize, usize),
    id: u32,
}

impl<P: Ord> Ord for Pair<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl<P: Ord> PartialOrd for Pair<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P: Ord> PartialEq for Pair<P> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<P: Ord> Eq for Pair<P> {}

/// Repeatedly merges the adjacent pair that `pair` ranks highest (the
/// leftmost on ties) into the token it names, until `pair` names none.
/// `syms` are in order; the survivors come back in order.
pub(super) fn merge<P: Ord>(mut syms: Vec<Symbol>, pair: impl Fn(&Symbol, &Symbol) -> Option<(P, u32)>) -> Vec<Symbol> {
    let n = syms.len();
    for (i, s) in syms.iter_mut().enumerate() {
        s.prev = i.checked_sub(1);
        s.next = (i + 1 < n).then_some(i + 1);
    }
    let mut heap = BinaryHeap::new();
    let queue = |heap: &mut BinaryHeap<Pair<P>>, syms: &[Symbol], left: usize| {
        let Some(right) = syms[left].next else { return };
        let (l, r) = (&syms[left], &syms[right]);
        if let Some((p, id)) = pair(l, r) {
            heap.push(Pair { key: (p, Reverse(l.start)), left, right, lens: (l.len, r.len), id });
        }
    };
    for left in 0..n {
        queue(&mut heap, &syms, left);
    }
    while let Some(p) = heap.pop() {
        let (l, r) = (&syms[p.left], &syms[p.right]);
        if l.len == 0 || l.next != Some(p.right) || (l.len, r.len) != p.lens {
            continue;
        }
        let next = r.next;
        syms[p.left].len += syms[p.right].len;
        syms[p.left].id = p.id;
        syms[p.left].next = next;
        syms[p.right].len = 0;
        if let Some(after) = next {
            syms[after].prev = Some(p.left);
        }
        if let Some(before) = syms[p.left].prev {
            queue(&mut heap, &syms, before);
        }
        queue(&mut heap, &syms, p.left);
    }
    let mut out = Vec::new();
    let mut at = (n > 0).then_some(0);
    while let Some(i) = at {
        out.push(syms[i]);
        at = syms[i].next;
    }
    out
}

/// A score ordered as a total order, so it can rank pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Score(pub f32);

impl Eq for Score {}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
