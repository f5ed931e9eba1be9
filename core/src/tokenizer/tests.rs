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
