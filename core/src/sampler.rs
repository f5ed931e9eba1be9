//! Token samplers: greedy, temperature, top-k, top-p, min-p, repetition and
//! presence penalties, driven by a seeded RNG so a seed reproduces a run.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Sampling settings, llama.cpp-compatible in meaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables. Divides positive logits (multiplies negative ones) of recent tokens.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Subtracted once from the logit of every recent token.
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            presence_penalty: 0.0,
            seed: 0x5eed,
        }
    }
}

/// SplitMix64 seeding a xoshiro256** generator: small, fast, reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampler with its own history (for penalties) and RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    recent: VecDeque<u32>,
    candidates: Vec<(u32, f32)>,
    dist: Vec<(u32, f64)>,
}

/// Index of the largest logit; ties go to the lowest id (as the reference does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Self { config, rng: Rng::new(config.seed), recent: VecDeque::new(), candidates: Vec::new(), dist: Vec::new() }
    }

    /// Records a token as part of the sequence (prompt or generated).
    pub fn accept(&mut self, token: u32) {
        if self.config.penalty_last_n == 0 {
            return;
        }
        if self.recent.len() == self.config.penalty_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Picks the next token from `logits` (which the penalties may modify).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let mut dist = core::mem::take(&mut self.dist);
        self.distribution(logits, &mut dist);
        let token = self.draw(&dist);
        self.dist = dist;
        token
    }

    /// The distribution [`Self::sample`] draws from: the penalties,
    /// temperature, top-k, min-p and top-p applied to `logits` (penalized in
    /// place), as `(token, probability)` pairs summing to 1, most likely
    /// first. Greedy sampling is one token with probability 1.
    pub fn distribution(&mut self, logits: &mut [f32], out: &mut Vec<(u32, f64)>) {
        let c = self.config;
        out.clear();
        if c.repeat_penalty != 1.0 || c.presence_penalty != 0.0 {
            let mut seen: Vec<u32> = self.recent.iter().copied().filter(|&t| (t as usize) < logits.len()).collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let l = &mut logits[t as usize];
                *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
                *l -= c.presence_penalty;
            }
        }
        if c.temperature <= 0.0 {
            out.push((argmax(logits), 1.0));
            return;
        }
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // Descending by logit, ties to the lower id.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, by_logit);
            cand.truncate(c.top_k);
        }
        cand.sort_unstable_by(by_logit);
        // Probabilities at the given temperature.
        let max = cand[0].1;
        out.extend(cand.iter().map(|&(t, l)| (t, libm::exp(((l - max) / c.temperature) as f64))));
        let total: f64 = out.iter().map(|p| p.1).sum();
        out.iter_mut().for_each(|p| p.1 /= total);
        let mut keep = out.len();
        if c.min_p > 0.0 {
            let floor = out[0].1 * c.min_p as f64;
            keep = out.iter().take_while(|p| p.1 >= floor).count().max(1);
        }
        if c.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in out.iter().take(keep).enumerate() {
                cum += p.1;
                if cum >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        out.truncate(keep);
        let kept: f64 = out.iter().map(|p| p.1).sum();
        out.iter_mut().for_each(|p| p.1 /= kept);
    }

    /// Draws a token from `dist` (as [`Self::distribution`] makes them).
    pub fn draw(&mut self, dist: &[(u32, f64)]) -> u32 {
        draw(dist, &mut self.rng)
    }

    /// The generator the draws use (speculative decoding's acceptance test
    /// shares it, so a seed reproduces a whole run).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

/// Draws a token from `(token, weight)` pairs; the weights need not sum to 1.
pub fn draw(dist: &[(u32, f64)], rng: &mut Rng) -> u32 {
    let total: f64 = dist.iter().map(|p| p.1).sum();
    let mut r = rng.next_f64() * total;
    for &(t, p) in dist {
        r -= p;
        if r < 0.0 {
            return t;
        }
    }
    dist.last().map_or(0, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1).collect()
    }

    #[test]
    fn greedy_and_top_k_one_pick_the_argmax() {
        let want = argmax(&logits());
        let mut greedy = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() });
        assert_eq!(greedy.sample(&mut logits()), want);
        let mut k1 = Sampler::new(SamplerConfig { top_k: 1, temperature: 1.5, ..Default::default() });
        assert_eq!(k1.sample(&mut logits()), want);
    }

    #[test]
    fn same_seed_reproduces_and_samples_vary() {
        let cfg = SamplerConfig { temperature: 2.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg });
            (0..32).map(|_| s.sample(&mut logits())).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        let distinct: alloc::collections::BTreeSet<u32> = draw(1).into_iter().collect();
        assert!(distinct.len() > 3, "temperature 2 over 50 tokens should vary: {distinct:?}");
    }

    #[test]
    fn top_p_and_min_p_keep_only_likely_tokens() {
        let mut l = alloc::vec![0.0f32; 10];
        l[3] = 10.0;
        l[4] = 9.0;
        let mut s =
            Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.5, min_p: 0.0, ..Default::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut l.clone()), 3);
        }
        let mut s =
            Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.2, ..Default::default() });
        for _ in 0..50 {
            assert!([3, 4].contains(&s.sample(&mut l.clone())));
        }
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let mut l = alloc::vec![0.0f32; 4];
        l[1] = 2.0;
        l[2] = 1.5;
        let mut s = Sampler::new(SamplerConfig { temperature: 0.0, repeat_penalty: 2.0, ..Default::default() });
        s.accept(1);
        assert_eq!(s.sample(&mut l), 2);
        assert_eq!(l[1], 1.0);
    }
}
