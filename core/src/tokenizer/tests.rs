use super::pretok::{split, Split};
use super::stream::StreamDecoder;
use alloc::string::String;
use alloc::vec::Vec;

fn words(text: &str, steps: &[Split]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    split(&chars, steps).into_iter().map(|r| chars[r].iter().collect()).collect()
}

#[test]
fn gpt2_split_keeps_leading_spaces_and_contractions() {
    assert_eq!(words("I'm here  now!", &[Split::Gpt2]), ["I", "'m", " here", " ", " now", "!"]);
}

#[test]
fn each_digit_split_isolates_numbers() {
    assert_eq!(words("a12 b", &[Split::EachDigit, Split::Gpt2]), ["a", "1", "2", " b"]);
}

#[test]
fn llama3_split_groups_digits_by_three_and_keeps_newlines() {
    assert_eq!(words("12345 x\n\n y", &[Split::Llama3 { max_digits: 3 }]), ["123", "45", " x", "\n\n", " y"]);
}

#[test]
fn default_split_cuts_digit_triples() {
    let steps = super::splits_for("default").unwrap();
    assert_eq!(words("1234567", steps), ["123", "456", "7"]);
}

#[test]
fn stream_decoder_holds_back_partial_utf8() {
    let mut d = StreamDecoder::default();
    let robot = "🤖".as_bytes();
    assert_eq!(d.push(&robot[..2]), "");
    assert_eq!(d.push(&robot[2..]), "🤖");
    assert_eq!(d.push(&[0xFF, b'a']), "\u{FFFD}a");
    assert_eq!(d.push(&robot[..1]), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn spm_merges_best_scoring_pairs_and_falls_back_to_bytes() {
    use alloc::string::ToString;
    let vocab = ["<unk>", "\u{2581}", "h", "i", "\u{2581}h", "hi", "\u{2581}hi", "<0x21>"];
    let scores = alloc::vec![0.0, -1.0, -2.0, -2.0, -1.5, -0.5, -0.1, -3.0];
    let tokens: Vec<String> = vocab.iter().map(|s| s.to_string()).collect();
    let order = super::ids::TextOrder::new(&tokens);
    let ids = super::ids::Ids { tokens: &tokens, order: &order };
    let spm = super::spm::Spm::new(scores, true, &tokens);
    let mut out = Vec::new();
    // "▁hi" is reached via "hi" (score -0.5) beating "▁h" (-1.5); "!" falls back to <0x21>.
    spm.encode("hi!", true, ids, &mut out);
    assert_eq!(out, [6, 7]);
    let mut bytes = Vec::new();
    for id in out {
        super::spm::piece_bytes(&tokens[id as usize], &mut bytes);
    }
    assert_eq!(bytes, b" hi!");
}

/// The merge as first written (each round scans every pair, n² in all):
/// the oracle for the heap-based one.
fn spm_pieces_by_scanning(s: &str, scores: &[f32], ids: super::ids::Ids<'_>) -> Vec<String> {
    let mut syms: Vec<String> = s.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let joined = [syms[i].as_str(), syms[i + 1].as_str()].concat();
            if let Some(id) = ids.get(&joined) {
                let score = scores[id as usize];
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    syms
}

proptest::proptest! {
    /// Random vocabularies over a small alphabet (scores drawn from a few
    /// values, so ties are common) and random texts: the heap merge gives
    /// the scanning merge's tokens.
    #[test]
    fn spm_heap_merge_equals_the_scanning_merge(
        pieces in proptest::collection::vec("[ab▁é]{2,4}", 1..40),
        score_picks in proptest::collection::vec(0usize..4, 40),
        text in "[ab é]{0,60}",
    ) {
        use alloc::string::ToString;
        let mut tokens: Vec<String> = ["a", "b", "\u{2581}", "é"].iter().map(|s| s.to_string()).collect();
        tokens.extend(pieces);
        let levels = [-1.0f32, -2.0, -2.0, -0.5];
        let scores: Vec<f32> = (0..tokens.len()).map(|i| levels[score_picks[i % score_picks.len()]]).collect();
        let order = super::ids::TextOrder::new(&tokens);
        let ids = super::ids::Ids { tokens: &tokens, order: &order };
        let spm = super::spm::Spm::new(scores.clone(), true, &tokens);
        let mut got = Vec::new();
        spm.encode(&text, true, ids, &mut got);
        let spaced: String =
            core::iter::once('\u{2581}').chain(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c })).collect();
        // Every character is a token here, so every piece is one.
        let want: Vec<u32> = spm_pieces_by_scanning(&spaced, &scores, ids).iter().filter_map(|p| ids.get(p)).collect();
        proptest::prop_assert_eq!(got, want);
    }

    /// Random merge tables and words: the heap merge gives the tokens of
    /// the scan that BPE first used (the lowest rank, the leftmost on ties).
    #[test]
    fn bpe_heap_merge_equals_the_scanning_merge(
        table in proptest::collection::vec(((0u32..6, 0u32..6), 0u32..10), 0..30),
        word in proptest::collection::vec(0u32..6, 0..50),
    ) {
        use super::merge::{merge, Symbol};
        let mut merges = alloc::collections::BTreeMap::new();
        for (rank, (pair, id)) in table.into_iter().enumerate() {
            merges.entry(pair).or_insert((rank as u32, id));
        }
        let mut want = word.clone();
        while let Some((_, i, id)) = want
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| merges.get(&(w[0], w[1])).map(|&(rank, id)| (rank, i, id)))
            .min()
        {
            want[i] = id;
            want.remove(i + 1);
        }
        let syms = word.iter().enumerate().map(|(at, &id)| Symbol::new(at, 1, id)).collect();
        let ranked = |l: &Symbol, r: &Symbol| merges.get(&(l.id, r.id)).map(|&(rank, id)| (core::cmp::Reverse(rank), id));
        let got: Vec<u32> = merge(syms, ranked).iter().map(|s| s.id).collect();
        proptest::prop_assert_eq!(got, want);
    }
}
