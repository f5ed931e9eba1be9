//! Core's engine speculating, driven as a host drives it, over scripted
//! models whose next token is a function of what their cache holds: a
//! cache the host rewinds wrongly gives other tokens. With greedy
//! sampling, every slot's outputs must be plain decoding's exactly, for
//! prompt lookup and for a draft model that is sometimes wrong, and the
//! draft's cache must only ever hold a prefix of the sequence.

use prima_core::engine::{DraftSource, Engine, Output, Request, Speculation, SpeculationStats};
use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use prima_host::mapped::MappedFile;
use prima_tests::smollm2_path;

/// A scripted model: the next token follows from the last two in the cache.
struct Script {
    words: Vec<u32>,
    eos: u32,
    /// Every how many hashes the draft model guesses wrong.
    wrong_every: Option<u64>,
}

impl Script {
    fn next(&self, cache: &[u32]) -> u32 {
        let tail = &cache[cache.len().saturating_sub(2)..];
        let h = tail.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &t| (h ^ t as u64).wrapping_mul(0x100_0000_01b3));
        if self.wrong_every.is_some_and(|k| h % k == 0) {
            return self.words[(h / 7) as usize % self.words.len()] + 1;
        }
        if h % 61 == 0 {
            return self.eos;
        }
        self.words[(h >> 11) as usize % self.words.len()]
    }

    fn logits(&self, cache: &[u32], n_vocab: usize) -> Vec<f32> {
        let mut row = vec![0.0; n_vocab];
        row[self.next(cache) as usize] = 10.0;
        row
    }
}

/// Runs `requests` to the end, one per slot, as a host would; returns each
/// slot's outputs (rewinds apart) and what speculation did.
fn drive(
    tok: &Tokenizer,
    requests: &[Request],
    target: &Script,
    speculation: Option<(Speculation, Option<&Script>)>,
) -> (Vec<Vec<Output>>, SpeculationStats) {
    let n_vocab = tok.n_vocab();
    let mut engine = Engine::new(requests.len(), 160, 16);
    let mut draft = None;
    if let Some((s, d)) = speculation {
        engine = engine.with_speculation(s);
        draft = d;
    }
    let mut caches: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
    let mut draft_caches: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
    let mut outputs: Vec<Vec<Output>> = vec![Vec::new(); requests.len()];
    for (slot, r) in requests.iter().enumerate() {
        engine.admit(slot, r.clone());
    }
    while engine.busy() > 0 {
        if let Some(d) = draft {
            for slot in engine.draft_wanted() {
                let context = engine.context(slot).to_vec();
                let cache = &mut draft_caches[slot];
                assert!(context.starts_with(cache), "the draft's cache holds what the sequence does not");
                cache.extend_from_slice(&context[cache.len()..]);
                while let Some(t) = engine.draft(slot, &mut d.logits(cache, n_vocab)) {
                    cache.push(t);
                }
            }
        }
        let inputs = engine.inputs();
        let mut logits = Vec::new();
        for input in &inputs {
            let cache = &mut caches[input.slot];
            assert!(engine.context(input.slot).starts_with(cache), "the cache holds what the sequence does not");
            cache.extend_from_slice(&input.tokens);
            for end in cache.len() + 1 - input.rows..=cache.len() {
                logits.extend(target.logits(&cache[..end], n_vocab));
            }
        }
        engine.absorb(tok, &inputs, &logits, &mut |slot, out| match out {
            Output::Rewind(pos) => {
                assert!(pos < caches[slot].len(), "a rewind that forgets nothing");
                caches[slot].truncate(pos);
                draft_caches[slot].truncate(pos);
            }
            out => outputs[slot].push(out),
        });
    }
    (outputs, engine.speculation_stats())
}

#[test]
fn speculating_slots_give_plain_decodings_outputs() {
    let file = MappedFile::open(&smollm2_path()).unwrap();
    let tok = Tokenizer::from_gguf(&file.gguf().unwrap()).unwrap();
    let words = tok.encode(" one two three four five six seven eight", false, false);
    let eos = tok.encode("<|im_end|>", false, true)[0];
    assert!(tok.is_eog(eos));
    let target = Script { words: words.clone(), eos, wrong_every: None };
    let draft = Script { words, eos, wrong_every: Some(3) };
    let request = |text: &str, max_tokens, stop: &[&str]| Request {
        prompt: tok.encode(text, true, false),
        sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        ignore_eos: false,
    };
    let requests = [
        request("Count: one two three", Some(90), &[]),
        request("Numbers, said twice: five six seven", Some(7), &[]),
        request("A long list of numbers follows, in words, until the word eight:", None, &[" eight five"]),
        request("one one one one one", Some(120), &[]),
    ];
    let (plain, _) = drive(&tok, &requests, &target, None);
    let generated = |outs: &[Output]| outs.iter().filter(|o| matches!(o, Output::Token(_))).count();
    assert!(plain.iter().all(|o| matches!(o.last(), Some(Output::Done { .. }))));
    assert!(plain.iter().map(|o| generated(o)).sum::<usize>() > 100, "too few tokens to test: {plain:?}");
    for (what, spec, drafter) in [
        ("lookup", Speculation { source: DraftSource::Lookup, max: 4, min: 1 }, None),
        ("lookup, at least 3", Speculation { source: DraftSource::Lookup, max: 8, min: 3 }, None),
        ("draft model", Speculation { source: DraftSource::Model, max: 5, min: 1 }, Some(&draft)),
        ("draft model, one at a time", Speculation { source: DraftSource::Model, max: 1, min: 1 }, Some(&draft)),
    ] {
        let (got, stats) = drive(&tok, &requests, &target, Some((spec, drafter)));
        assert_eq!(got, plain, "{what}: outputs differ from plain decoding");
        assert!(stats.accepted > 0 && stats.drafted >= stats.accepted, "{what}: {stats:?}");
        if drafter.is_some() {
            assert!(stats.drafted > stats.accepted, "{what}: a draft that is wrong now and then: {stats:?}");
        }
        let tokens: usize = got.iter().map(|o| generated(o)).sum();
        assert!(stats.target_passes < tokens, "{what}: {stats:?} for {tokens} tokens");
    }
}
