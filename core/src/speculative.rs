//! Speculative decoding's arithmetic, apart from any model: where drafts
//! come from without a draft model (prompt lookup), and the rule by which
//! the target accepts them that leaves its own distribution exactly as it
//! was (Leviathan et al., 2023). At temperature 0 the rule accepts a draft
//! exactly when it is the target's argmax, so the output equals plain
//! greedy decoding token for token.

use alloc::vec::Vec;

use crate::sampler::{draw, Rng};

/// What the target made of one draft token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Rejected; this token (drawn from what the target wants and the
    /// draft over-proposed) takes its place, and the rest of the draft goes.
    Replaced(u32),
}

fn prob(dist: &[(u32, f64)], token: u32) -> f64 {
    dist.iter().find(|p| p.0 == token).map_or(0.0, |p| p.1)
}

/// Judges draft token `draft`, drawn from the draft's distribution `q`,
/// against the target's distribution `p` (both as `Sampler::distribution`
/// makes them; a lookup draft's `q` is the token with probability 1).
/// Accepted with probability `min(1, p/q)`; otherwise replaced by a draw
/// from `max(0, p - q)`, normalized. `scratch` is reused.
pub fn judge(p: &[(u32, f64)], q: &[(u32, f64)], draft: u32, rng: &mut Rng, scratch: &mut Vec<(u32, f64)>) -> Verdict {
    let (pd, qd) = (prob(p, draft), prob(q, draft));
    if pd >= qd || (qd > 0.0 && rng.next_f64() < pd / qd) {
        return Verdict::Accepted;
    }
    scratch.clear();
    scratch.extend(p.iter().map(|&(t, pt)| (t, (pt - prob(q, t)).max(0.0))).filter(|r| r.1 > 0.0));
    if scratch.is_empty() {
        // p ≤ q everywhere yet p(draft) < q(draft): only rounding gets here.
        return Verdict::Replaced(draw(p, rng));
    }
    Verdict::Replaced(draw(scratch, rng))
}

/// Prompt lookup: the tokens that followed the latest earlier occurrence
/// of the context's last `n` tokens, for the longest `n` from `n_max` down
/// to `n_min` that occurs, up to `max` of them, into `out` (empty if none).
pub fn lookup(context: &[u32], n_min: usize, n_max: usize, max: usize, out: &mut Vec<u32>) {
    out.clear();
    for n in (n_min.max(1)..=n_max.min(context.len().saturating_sub(1))).rev() {
        let tail = &context[context.len() - n..];
        // Latest match first; the match must end before the tail starts.
        let found = (0..context.len() - n).rev().find(|&i| &context[i..i + n] == tail);
        if let Some(i) = found {
            let follow = &context[i + n..];
            out.extend_from_slice(&follow[..follow.len().min(max)]);
            return;
        }
    }
}

/// How many tokens to draft next: after a pass whose drafts all stood,
/// twice as many (up to `max`); after a rejection, one more than stood
/// (at least `min`). Drafts that will be rejected cost the target work.
pub fn next_draft_len(current: usize, drafted: usize, accepted: usize, min: usize, max: usize) -> usize {
    let next = if drafted > 0 && accepted == drafted {
        current.max(1) * 2
    } else if drafted == 0 {
        current
    } else {
        accepted + 1
    };
    next.clamp(min.max(1), max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn draft_length_grows_while_drafts_stand_and_shrinks_after_a_rejection() {
        assert_eq!(next_draft_len(4, 4, 4, 1, 16), 8);
        assert_eq!(next_draft_len(12, 12, 12, 1, 16), 16);
        assert_eq!(next_draft_len(8, 8, 2, 1, 16), 3);
        assert_eq!(next_draft_len(8, 8, 0, 2, 16), 2);
        assert_eq!(next_draft_len(5, 0, 0, 1, 16), 5);
    }

    #[test]
    fn greedy_drafts_are_accepted_exactly_when_they_are_the_argmax() {
        let mut rng = Rng::new(1);
        let mut s = Vec::new();
        let p = [(7, 1.0)];
        assert_eq!(judge(&p, &[(7, 1.0)], 7, &mut rng, &mut s), Verdict::Accepted);
        assert_eq!(judge(&p, &[(3, 1.0)], 3, &mut rng, &mut s), Verdict::Replaced(7));
    }

    /// Draws a token from the speculative scheme: a draft from `q`, judged
    /// against `p`.
    fn speculative_draw(p: &[(u32, f64)], q: &[(u32, f64)], rng: &mut Rng) -> u32 {
        let d = draw(q, rng);
        match judge(p, q, d, rng, &mut Vec::new()) {
            Verdict::Accepted => d,
            Verdict::Replaced(t) => t,
        }
    }

    #[test]
    fn accepted_or_replaced_tokens_follow_the_target_distribution() {
        // A draft that over- and under-proposes: chi-square over 40,000 draws.
        let p = [(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)];
        let q = [(0, 0.1), (1, 0.6), (2, 0.05), (4, 0.25)];
        let mut rng = Rng::new(42);
        let n = 40_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[speculative_draw(&p, &q, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[4], 0, "token 4 has no target probability");
        let chi2: f64 =
            p.iter().map(|&(t, pt)| (counts[t as usize] as f64 - pt * n as f64).powi(2) / (pt * n as f64)).sum();
        // 3 degrees of freedom: 16.27 is the 0.1% critical value.
        assert!(chi2 < 16.27, "chi-square {chi2:.2}: {counts:?}");
    }

    #[test]
    fn lookup_continues_the_latest_match_of_the_longest_tail() {
        let mut out = Vec::new();
        // "a b c d x a b c" → the tail "a b c" last occurred at 0, then "d x".
        lookup(&[1, 2, 3, 4, 9, 1, 2, 3], 1, 3, 4, &mut out);
        assert_eq!(out, vec![4, 9, 1, 2]);
        lookup(&[1, 2, 3, 4, 9, 1, 2, 3], 1, 3, 1, &mut out);
        assert_eq!(out, vec![4]);
        // Only a one-token tail matches: 5 followed the earlier 7, unless
        // two tokens must match.
        lookup(&[7, 5, 8, 7], 1, 3, 2, &mut out);
        assert_eq!(out, vec![5, 8]);
        lookup(&[7, 5, 8, 7], 2, 3, 2, &mut out);
        assert!(out.is_empty());
        lookup(&[1, 2, 3], 1, 3, 4, &mut out);
        assert!(out.is_empty());
        lookup(&[], 1, 3, 4, &mut out);
        assert!(out.is_empty());
    }
}
