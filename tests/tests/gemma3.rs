//! Gemma3-270M Q4_K_M against the reference engine: tokenization (with and
//! without special tokens), teacher-forced top tokens along the reference's
//! greedy continuations, and greedy generation while margins hold.

use prima_core::kernels::Kernels;
use prima_core::sampler::argmax;
use prima_core::tokenizer::Tokenizer;
use prima_core::{Gguf, Model, Session, Want};
use prima_host::mapped::MappedFile;
use prima_tests::*;

fn reference() -> serde_json::Value {
    read_json(reference_dir().join("gemma3-270m-q4_k_m.json"))
}

/// Reference margins under this are too close to call (its README's rule).
const CONFIDENT: f64 = 0.5;

/// Where the reference's margin is under `DECIDED`, its token may rank
/// second here, at most `SPREAD` logits behind our top. Each engine rounds
/// its own way, and Gemma3 amplifies it at a few steps: 2 of the ~100
/// confident steps (reference margins 0.64 and 0.85) flip with the summation
/// order of the products, the reference's token 0.72 and 0.23 behind; the
/// scalar oracle keeps them by margins of only 0.12 and 0.19.
const DECIDED: f64 = 1.0;
const SPREAD: f32 = 1.0;

/// Our `top` of `logits` agrees with the reference's confident `want`.
fn agrees(top: u32, want: u32, margin: f64, logits: &[f32]) -> bool {
    top == want || (margin < DECIDED && logits[top as usize] - logits[want as usize] <= SPREAD)
}

/// The reference's continuations: all four natively, the first under an
/// emulator (each step's output head reads 171 MB of Q8_0 weights).
fn continuations() -> Vec<serde_json::Value> {
    let all = reference()["generation"].as_array().unwrap().clone();
    let n = if emulated() { 1 } else { all.len() };
    all.into_iter().take(n).collect()
}

#[test]
fn tokenization_matches_reference_with_and_without_special_tokens() {
    let file = MappedFile::open(&gemma3_path()).unwrap();
    let tok = Tokenizer::from_gguf(&Gguf::parse(file.bytes()).unwrap()).unwrap();
    let cases = reference()["tokenization"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, true, true), ids(&case["ids_special"]), "special parsing on: {text:?}");
        let plain = ids(&case["ids_plain"]);
        assert_eq!(tok.encode(text, false, false), plain, "special parsing off: {text:?}");
        assert_eq!(tok.decode(&plain, true), text);
    }
}

/// Along each reference continuation, fed whole: the top token at every
/// step where the reference was confident, and the margins close to its.
#[test]
fn teacher_forced_top_tokens_match_reference_where_it_is_confident() {
    let file = MappedFile::open(&gemma3_path()).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    let model = Model::load(&g, Kernels::detect()).unwrap();
    let n_vocab = model.config.n_vocab;
    let pool = pool();
    let (mut confident, mut margin_gap, mut steps_seen) = (0, 0.0, 0);
    let gens = continuations();
    for gen in &gens {
        let prompt = ids(&gen["prompt_ids"]);
        let seq: Vec<u32> = prompt.iter().copied().chain(ids(&gen["generated_ids"])).collect();
        let mut s = Session::new(&model, seq.len());
        let logits = s.eval(&seq, Want::All, &pool).unwrap();
        for step in gen["steps"].as_array().unwrap() {
            let i = step["step"].as_u64().unwrap() as usize;
            let row = &logits[(prompt.len() - 1 + i) * n_vocab..][..n_vocab];
            let top = argmax(row);
            let mut sorted = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let margin = step["margin"].as_f64().unwrap();
            margin_gap += ((sorted[0] - sorted[1]) as f64 - margin).abs();
            steps_seen += 1;
            if margin >= CONFIDENT {
                let want = step["token"].as_u64().unwrap() as u32;
                assert!(
                    agrees(top, want, margin, row),
                    "prompt {:?} step {i}: top {top}, reference {want} (margin {margin})",
                    gen["prompt"]
                );
                confident += 1;
            }
        }
    }
    let mean_gap = margin_gap / steps_seen as f64;
    eprintln!("{confident} confident steps agree; mean |margin - reference margin| {mean_gap:.3}");
    assert!(confident >= 20 * gens.len(), "only {confident} confident steps");
    // Measured 0.142 on x86 (AVX-512); the engines' kernels round differently.
    assert!(mean_gap < 0.25, "margins drift from the reference's: mean gap {mean_gap:.3}");
}

#[test]
fn greedy_continuations_match_reference_while_margins_hold() {
    let file = MappedFile::open(&gemma3_path()).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    let model = Model::load(&g, Kernels::detect()).unwrap();
    let pool = pool();
    let mut compared = 0;
    for gen in &continuations() {
        let mut s = Session::new(&model, 128);
        let mut logits = s.eval(&ids(&gen["prompt_ids"]), Want::Last, &pool).unwrap();
        for step in gen["steps"].as_array().unwrap() {
            let margin = step["margin"].as_f64().unwrap();
            if margin < CONFIDENT {
                break;
            }
            let want = step["token"].as_u64().unwrap() as u32;
            let top = argmax(&logits);
            assert!(
                agrees(top, want, margin, &logits),
                "prompt {:?} step {}: top {top}, reference {want} (margin {margin})",
                gen["prompt"],
                step["step"]
            );
            compared += 1;
            logits = s.eval(&[want], Want::Last, &pool).unwrap();
        }
    }
    assert!(compared >= 1, "no step had a margin >= {CONFIDENT}");
}
