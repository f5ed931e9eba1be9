//! Causal multi-head attention over the f16 KV cache, with grouped KV heads.

use alloc::vec;
use alloc::vec::Vec;

use super::kv::RowsRef;
use crate::kernels::Kernels;
use crate::parallel::{for_each_chunk_mut, Parallel};

/// Prompts of at least this many tokens take the blocked path.
const TOKEN_BLOCK: usize = 16;
/// Query heads of a group scored against the keys together (the AVX2
/// kernel's most).
const QUERIES_AT_ONCE: usize = 4;
/// Key rows per scoring task in decode.
const KEY_CHUNK: usize = 256;
/// Output columns per weighted-sum task in decode (four vectors of eight
/// for each of three queries fit the AVX2 registers).
const COLUMN_PART: usize = 32;

/// The attention problem of one layer for `n_tok` new tokens at `pos0..`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub pos0: usize,
    /// Scores are scaled by this.
    pub scale: f32,
    /// A token sees only the latest `window` positions, when set.
    pub window: Option<usize>,
}

impl Heads {
    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    #[cfg(test)]
    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }
    /// The first cache row a token at `pos` sees.
    fn first_seen(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
    /// The cache rows new token `t` sees, `first..n_ctx`.
    fn seen(&self, t: usize) -> (usize, usize) {
        let n_ctx = self.pos0 + t + 1;
        (self.first_seen(n_ctx - 1), n_ctx)
    }
    /// The most rows any of `n_tok` new tokens sees.
    fn most_seen(&self, n_tok: usize) -> usize {
        (0..n_tok).map(|t| self.seen(t)).map(|(first, n_ctx)| n_ctx - first).max().unwrap_or(1)
    }
}

/// One sequence's share of a batched attention: its problem and its
/// layer's cache.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeqAttn<'a> {
    pub heads: Heads,
    pub n_tok: usize,
    pub kc: RowsRef<'a>,
    pub vc: RowsRef<'a>,
}

/// The most sequences one batched attention dispatch takes.
pub(super) const SEQS_AT_ONCE: usize = 32;

impl SeqAttn<'_> {
    /// Whether [`attend_short`] serves it: every token sees at most KEY_CHUNK rows.
    pub(super) fn is_short(&self) -> bool {
        self.n_tok < TOKEN_BLOCK && self.heads.most_seen(self.n_tok) <= KEY_CHUNK
    }
}

/// `out` (`n_tok * q_dim`) = attention of `seq`'s queries `q` over cache
/// rows `0 .. pos0 + t + 1` for token `t`. `scratch` is reused between calls.
pub(super) fn attend(
    k: &Kernels,
    seq: &SeqAttn<'_>,
    q: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    debug_assert_eq!(q.len(), seq.n_tok * seq.heads.q_dim());
    let SeqAttn { heads: h, kc, vc, .. } = *seq;
    if seq.n_tok >= TOKEN_BLOCK {
        attend_blocked(k, h, q, kc, vc, out, scratch, par);
    } else if seq.is_short() {
        attend_short(k, core::slice::from_ref(seq), q, out, scratch, par);
    } else {
        attend_per_head(k, h, q, kc, vc, out, scratch, par);
    }
}

/// A KV head's group of query heads in sets of at most QUERIES_AT_ONCE:
/// (first head in the group, heads in the set).
fn query_sets(group: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..group).step_by(QUERIES_AT_ONCE).map(move |h0| (h0, QUERIES_AT_ONCE.min(group - h0)))
}

/// A query head, rounded to f16 precision when the keys are f16: the
/// reference engine multiplies f16 keys by f16-rounded queries.
fn rounded_query(k: &Kernels, q: &[f32], keys: RowsRef<'_>, out: &mut [f32]) {
    out.copy_from_slice(q);
    if keys.is_f16() {
        k.round_to_f16(out);
    }
}

/// Scaled scores → probabilities, rounded to f16 when the values are f16, as
/// the reference engine keeps them.
fn probabilities(k: &Kernels, scores: &mut [f32], scale: f32, values: RowsRef<'_>) {
    scores.iter_mut().for_each(|s| *s *= scale);
    k.softmax(scores);
    if values.is_f16() {
        k.round_to_f16(scores);
    }
}

/// Decode where every token sees at most KEY_CHUNK rows, for one or more
/// sequences (each [`SeqAttn::is_short`]; `q` and `out` hold their rows one
/// sequence after another): one task per (token, KV head) scores the
/// group's query heads together, then weighs the values for them together,
/// all in one dispatch (a server's many short sequences share one hand-off
/// per layer). Each result equals one query head's alone.
pub(super) fn attend_short(
    k: &Kernels,
    seqs: &[SeqAttn<'_>],
    q: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let Some(first_seq) = seqs.first() else { return };
    let h0 = first_seq.heads;
    let (hd, q_dim, group, n_kv) = (h0.head_dim, h0.q_dim(), h0.group(), h0.n_head_kv);
    debug_assert!(seqs.iter().all(|s| s.is_short() && s.heads.q_dim() == q_dim && s.heads.n_head_kv == n_kv));
    // [rounded queries][sums][scores], group × (hd, hd, KEY_CHUNK)
    let per_task = group * (2 * hd + KEY_CHUNK);
    let total = q.len() / q_dim * n_kv * per_task;
    if scratch.len() < total {
        scratch.resize(total, 0.0);
    }
    for_each_chunk_mut(par, &mut scratch[..total], per_task, &|start, buf| {
        // The task's sequence, the token's row among all rows, and the KV head.
        let (mut task, mut row0) = (start / per_task, 0);
        let mut seq = first_seq;
        for s in seqs {
            seq = s;
            if task < s.n_tok * n_kv {
                break;
            }
            task -= s.n_tok * n_kv;
            row0 += s.n_tok;
        }
        let (h, kc, vc) = (seq.heads, seq.kc, seq.vc);
        let (t, g) = (task / n_kv, task % n_kv);
        let q = &q[(row0 + t) * q_dim..][..q_dim];
        let (first, n_ctx) = h.seen(t);
        let m = n_ctx - first;
        let (qs, rest) = buf.split_at_mut(group * hd);
        let (sums, scores) = rest.split_at_mut(group * hd);
        for (i, r) in qs.chunks_exact_mut(hd).enumerate() {
            rounded_query(k, &q[(g * group + i) * hd..][..hd], kc, r);
        }
        for (h0, nq) in query_sets(group) {
            let s = &mut scores[h0 * m..(h0 + nq) * m];
            kc.dots_multi(k, g, first, &qs[h0 * hd..(h0 + nq) * hd], s);
            for row in s.chunks_exact_mut(m) {
                probabilities(k, row, h.scale, vc);
            }
            let s = &*s;
            let ps: [&[f32]; QUERIES_AT_ONCE] = core::array::from_fn(|i| &s[i.min(nq - 1) * m..][..m]);
            vc.weighted_multi(k, (g, first), 0..hd, &ps[..nq], &mut sums[h0 * hd..(h0 + nq) * hd]);
        }
    });
    for (task, o) in out.chunks_exact_mut(group * hd).enumerate() {
        o.copy_from_slice(&scratch[task * per_task + group * hd..][..group * hd]);
    }
}

/// Decode and short batches, in three parallel passes over the cache as it
/// is. Scores: one task per (token, KV head, KEY_CHUNK rows) scores the
/// group's query heads together, so each key row is read once for the
/// group. Softmax: one task per (token, head). Sums: one task per (token, KV
/// head, COLUMN_PART columns) reads each value row's columns once for the
/// group. Each result equals one query head's alone, and so the blocked
/// path's. `scratch` is sized once for the whole cache, so decoding
/// allocates nothing.
#[allow(clippy::too_many_arguments)]
fn attend_per_head(
    k: &Kernels,
    h: Heads,
    q: &[f32],
    kc: RowsRef<'_>,
    vc: RowsRef<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let (hd, q_dim, group) = (h.head_dim, h.q_dim(), h.group());
    let n_tok = q.len() / q_dim;
    let m_max = h.most_seen(n_tok);
    let part = if hd.is_multiple_of(COLUMN_PART) { COLUMN_PART } else { hd };
    let n_parts = hd / part;
    let (score_task, sum_task) = (group * KEY_CHUNK, group * part);
    // [rounded queries][scores: token, kv head, chunk, group × rows][probabilities: token, head, m_max][sums]
    let sizes = |m: usize| {
        let chunks = m.div_ceil(KEY_CHUNK);
        [
            n_tok * q_dim,
            n_tok * h.n_head_kv * chunks * score_task,
            n_tok * h.n_head * m,
            n_tok * h.n_head_kv * n_parts * sum_task,
        ]
    };
    let need = sizes(m_max);
    let total = need.iter().sum();
    if scratch.len() < total {
        let capacity: usize = sizes(kc.n_ctx()).iter().sum();
        scratch.resize(capacity.max(total), 0.0);
    }
    let (qr, rest) = scratch[..total].split_at_mut(need[0]);
    let (scores, rest) = rest.split_at_mut(need[1]);
    let (probs, sums) = rest.split_at_mut(need[2]);
    for (r, qh) in qr.chunks_exact_mut(hd).zip(q.chunks_exact(hd)) {
        rounded_query(k, qh, kc, r);
    }
    let qr = &*qr;
    let n_chunks = m_max.div_ceil(KEY_CHUNK);
    for_each_chunk_mut(par, scores, score_task, &|start, piece| {
        let task = start / score_task;
        let (tg, c) = (task / n_chunks, task % n_chunks);
        let (t, g) = (tg / h.n_head_kv, tg % h.n_head_kv);
        let (first, n_ctx) = h.seen(t);
        let r0 = first + c * KEY_CHUNK;
        if r0 >= n_ctx {
            return;
        }
        let len = KEY_CHUNK.min(n_ctx - r0);
        for (h0, nq) in query_sets(group) {
            let qs = &qr[t * q_dim + (g * group + h0) * hd..][..nq * hd];
            kc.dots_multi(k, g, r0, qs, &mut piece[h0 * len..(h0 + nq) * len]);
        }
    });
    let scores = &*scores;
    for_each_chunk_mut(par, probs, m_max, &|start, row| {
        let task = start / m_max;
        let (t, head) = (task / h.n_head, task % h.n_head);
        let (g, hi) = (head / group, head % group);
        let (first, n_ctx) = h.seen(t);
        let m = n_ctx - first;
        for (c, dst) in row[..m].chunks_mut(KEY_CHUNK).enumerate() {
            let from = ((t * h.n_head_kv + g) * n_chunks + c) * score_task + hi * dst.len();
            dst.copy_from_slice(&scores[from..from + dst.len()]);
        }
        probabilities(k, &mut row[..m], h.scale, vc);
    });
    let probs = &*probs;
    for_each_chunk_mut(par, sums, sum_task, &|start, o| {
        let task = start / sum_task;
        let (tg, p) = (task / n_parts, task % n_parts);
        let (t, g) = (tg / h.n_head_kv, tg % h.n_head_kv);
        let (first, n_ctx) = h.seen(t);
        let m = n_ctx - first;
        for (h0, nq) in query_sets(group) {
            let ps: [&[f32]; QUERIES_AT_ONCE] =
                core::array::from_fn(|i| &probs[(t * h.n_head + g * group + h0 + i.min(nq - 1)) * m_max..][..m]);
            let cols = p * part..(p + 1) * part;
            vc.weighted_multi(k, (g, first), cols, &ps[..nq], &mut o[h0 * part..(h0 + nq) * part]);
        }
    });
    for t in 0..n_tok {
        for head in 0..h.n_head {
            let (g, hi) = (head / group, head % group);
            for p in 0..n_parts {
                let from = ((t * h.n_head_kv + g) * n_parts + p) * sum_task + hi * part;
                out[t * q_dim + head * hd + p * part..][..part].copy_from_slice(&sums[from..from + part]);
            }
        }
    }
}

/// Two passes. First every KV head's keys and values the prompt sees are
/// widened to f32 once, for all tasks; then one task per (KV head, block of
/// tokens) scores the group's query heads together, so each key and value is
/// read once for all of them. Results land in `scratch` after the widened
/// rows, as `[kv head][token][group * hd]`, and are then scattered into `out`.
/// The widened rows take twice one layer's cache in f32: a layer's share of
/// the cache's own size.
#[allow(clippy::too_many_arguments)]
fn attend_blocked(
    k: &Kernels,
    h: Heads,
    q: &[f32],
    kc: RowsRef<'_>,
    vc: RowsRef<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let (hd, q_dim, group) = (h.head_dim, h.q_dim(), h.group());
    let n_tok = q.len() / q_dim;
    let n_blocks = n_tok.div_ceil(TOKEN_BLOCK);
    let per_task = TOKEN_BLOCK * group * hd;
    // Rows `lo..ctx` are all any token of the prompt sees.
    let (lo, ctx) = (h.first_seen(h.pos0), h.pos0 + n_tok);
    let head_rows = (ctx - lo) * hd;
    scratch.clear();
    scratch.resize(2 * h.n_head_kv * head_rows + h.n_head_kv * n_blocks * per_task, 0.0);
    let (widened, results) = scratch.split_at_mut(2 * h.n_head_kv * head_rows);
    for_each_chunk_mut(par, widened, head_rows, &|start, rows| {
        let i = start / head_rows;
        let (src, g) = if i < h.n_head_kv { (kc, i) } else { (vc, i - h.n_head_kv) };
        src.widen(k, g, lo..ctx, rows);
    });
    let (keys, values) = widened.split_at(h.n_head_kv * head_rows);
    for_each_chunk_mut(par, results, per_task, &|start, res| {
        let task = start / per_task;
        let (g, t0) = (task / n_blocks, task % n_blocks * TOKEN_BLOCK);
        let t1 = (t0 + TOKEN_BLOCK).min(n_tok);
        let (keys, values) = (&keys[g * head_rows..][..head_rows], &values[g * head_rows..][..head_rows]);
        // The group's query heads go through the keys and values together,
        // up to QUERIES_AT_ONCE at a time.
        let mut scores = vec![0.0f32; QUERIES_AT_ONCE * (h.pos0 + t1 - lo)];
        let mut qh = vec![0.0f32; QUERIES_AT_ONCE * hd];
        for t in t0..t1 {
            let (first, n_ctx) = h.seen(t);
            let m = n_ctx - first;
            let seen = (first - lo) * hd..(n_ctx - lo) * hd;
            for (h0, nq) in query_sets(group) {
                for (i, qi) in qh.chunks_exact_mut(hd).take(nq).enumerate() {
                    let head = g * group + h0 + i;
                    rounded_query(k, &q[t * q_dim + head * hd..][..hd], kc, qi);
                }
                let scores = &mut scores[..nq * m];
                k.dot_rows_multi(&qh[..nq * hd], hd, &keys[seen.clone()], scores);
                for s in scores.chunks_exact_mut(m) {
                    probabilities(k, s, h.scale, vc);
                }
                let o = &mut res[((t - t0) * group + h0) * hd..][..nq * hd];
                k.weighted_sum_multi(scores, &values[seen.clone()], hd, o);
            }
        }
    });
    for t in 0..n_tok {
        for head in 0..h.n_head {
            let (g, hi) = (head / group, head % group);
            let from = (g * n_blocks * TOKEN_BLOCK + t) * group * hd + hi * hd;
            out[t * q_dim + head * hd..][..hd].copy_from_slice(&results[from..from + hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::Serial;
    use crate::sampler::Rng;
    use alloc::format;
    use half::f16;

    /// The blocked prompt path and the per-head decode path compute exactly
    /// the same attention, for f16 and f32 caches and a prefix already in the
    /// cache, so how a prompt is batched never changes the result.
    #[test]
    fn blocked_and_per_head_paths_agree() {
        let mut rng = Rng::new(9);
        // Groups of 3, 4 and 5 query heads, a head size that is no multiple
        // of the column part, and caches longer than one key chunk.
        let shapes = [(6, 2, 64, 7, 37), (8, 2, 64, 600, 17), (10, 2, 80, 300, 18), (4, 1, 128, 270, 16)];
        for (n_head, n_head_kv, head_dim, pos0, n_tok) in shapes {
            let h = Heads { n_head, n_head_kv, head_dim, pos0, scale: 0.125, window: None };
            let ctx = h.pos0 + n_tok;
            let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect() };
            let q = rand(n_tok * h.q_dim());
            let (kf, vf) = (rand(ctx * h.kv_dim()), rand(ctx * h.kv_dim()));
            let (kh, vh): (Vec<f16>, Vec<f16>) =
                (kf.iter().map(|&x| f16::from_f32(x)).collect(), vf.iter().map(|&x| f16::from_f32(x)).collect());
            for window in [None, Some(5), Some(290)] {
                let h = Heads { window, ..h };
                for k in [Kernels::detect(), Kernels::scalar()] {
                    let f16s = (RowsRef::f16(&kh, head_dim, ctx), RowsRef::f16(&vh, head_dim, ctx));
                    for (kc, vc) in [f16s, (RowsRef::f32(&kf, head_dim, ctx), RowsRef::f32(&vf, head_dim, ctx))] {
                        let mut per_head = vec![0.0; q.len()];
                        attend_per_head(&k, h, &q, kc, vc, &mut per_head, &mut Vec::new(), &Serial);
                        let mut blocked = vec![0.0; q.len()];
                        attend_blocked(&k, h, &q, kc, vc, &mut blocked, &mut Vec::new(), &Serial);
                        let what = format!("{} f16={} {h:?}", k.name(), kc.is_f16());
                        assert_eq!(per_head, blocked, "{what}");
                        let whole = SeqAttn { heads: h, n_tok, kc, vc };
                        if whole.is_short() {
                            let mut short = vec![0.0; q.len()];
                            attend_short(&k, &[whole], &q, &mut short, &mut Vec::new(), &Serial);
                            assert_eq!(short, blocked, "{what}");
                            // Batched behind another sequence (the first
                            // token alone), each gets its rows as alone.
                            let first = SeqAttn { n_tok: 1, ..whole };
                            let both_q: Vec<f32> = q[..h.q_dim()].iter().chain(&q).copied().collect();
                            let mut both = vec![0.0; both_q.len()];
                            attend_short(&k, &[first, whole], &both_q, &mut both, &mut Vec::new(), &Serial);
                            assert_eq!(both[..h.q_dim()], blocked[..h.q_dim()], "{what}, batched");
                            assert_eq!(both[h.q_dim()..], blocked[..], "{what}, batched");
                        }
                        // One token at a time through the decode path, as
                        // generation feeds it, gives the same rows again.
                        let mut scratch = Vec::new();
                        for t in 0..n_tok {
                            let one = Heads { pos0: h.pos0 + t, ..h };
                            let mut row = vec![0.0; h.q_dim()];
                            let qt = &q[t * h.q_dim()..(t + 1) * h.q_dim()];
                            let seq = SeqAttn { heads: one, n_tok: 1, kc, vc };
                            attend(&k, &seq, qt, &mut row, &mut scratch, &Serial);
                            assert_eq!(row, blocked[t * h.q_dim()..(t + 1) * h.q_dim()], "{what}, token {t}");
                        }
                    }
                }
            }
        }
    }

    /// A token attending through a window of w sees exactly what it would
    /// see in a cache holding only the latest w rows.
    #[test]
    fn a_window_sees_only_the_latest_rows() {
        let mut rng = Rng::new(4);
        let (w, pos0) = (6, 20);
        let h = Heads { n_head: 4, n_head_kv: 2, head_dim: 32, pos0, scale: 0.2, window: Some(w) };
        let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect() };
        let q = rand(h.q_dim());
        let ctx = pos0 + 1;
        let (kf, vf) = (rand(ctx * h.kv_dim()), rand(ctx * h.kv_dim()));
        let k = Kernels::scalar();
        let mut windowed = vec![0.0; q.len()];
        let (kc, vc) = (RowsRef::f32(&kf, h.head_dim, ctx), RowsRef::f32(&vf, h.head_dim, ctx));
        attend_per_head(&k, h, &q, kc, vc, &mut windowed, &mut Vec::new(), &Serial);
        // Each head's latest w rows, as a cache of w positions holds them.
        let latest = |rows: &[f32]| -> Vec<f32> {
            rows.chunks_exact(ctx * h.head_dim).flat_map(|head| head[(ctx - w) * h.head_dim..].to_vec()).collect()
        };
        let (ks, vs) = (latest(&kf), latest(&vf));
        let short = Heads { pos0: w - 1, window: None, ..h };
        let mut expect = vec![0.0; q.len()];
        let (kc, vc) = (RowsRef::f32(&ks, h.head_dim, w), RowsRef::f32(&vs, h.head_dim, w));
        attend_per_head(&k, short, &q, kc, vc, &mut expect, &mut Vec::new(), &Serial);
        assert_eq!(windowed, expect);
    }
}
