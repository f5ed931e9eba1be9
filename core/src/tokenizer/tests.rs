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
