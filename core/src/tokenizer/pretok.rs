//! Pre-tokenizers: the splits that byte-level BPE applies before merging,
//! written as small state machines with the exact semantics of the regexes
//! the reference engine uses for each `tokenizer.ggml.pre` value.

use alloc::vec::Vec;
use core::ops::Range;
use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The character classes the split patterns use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Letter,
    Number,
    Whitespace,
    Other,
}

pub(crate) fn class(c: char) -> Class {
    if c.is_whitespace() {
        return Class::Whitespace;
    }
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => {
            Class::Letter
        }
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

fn is_punct(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

/// One pattern step; each further splits every piece the previous made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// The llama3 pattern with `\p{N}{1,max_digits}`; qwen2 uses 1.
    Llama3 { max_digits: usize },
    /// `\p{N}`: every number character alone.
    EachDigit,
    /// `[\p{P}\$\+<=>\^~\|]+`
    PunctRuns,
    /// `\p{N}+`
    NumberRuns,
    /// `[0-9][0-9][0-9]`
    AsciiDigitTriples,
}

/// The split steps for a `tokenizer.ggml.pre` value, or `None` if unknown.
pub fn splits_for(pre: &str) -> Option<&'static [Split]> {
    use Split::*;
    Some(match pre {
        "default" | "gpt-2" | "gpt2" => &[PunctRuns, Gpt2, NumberRuns, AsciiDigitTriples],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => &[EachDigit, Gpt2],
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            &[Llama3 { max_digits: 3 }]
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => &[Llama3 { max_digits: 1 }],
        _ => return None,
    })
}

/// Splits `text` into words, returned as char ranges into `chars`.
pub fn split(chars: &[char], steps: &[Split]) -> Vec<Range<usize>> {
    let mut pieces = alloc::vec![0..chars.len()];
    for &step in steps {
        let mut next = Vec::with_capacity(pieces.len());
        for p in pieces {
            split_piece(chars, p, step, &mut next);
        }
        pieces = next;
    }
    pieces.retain(|r| !r.is_empty());
    pieces
}

fn split_piece(chars: &[char], r: Range<usize>, step: Split, out: &mut Vec<Range<usize>>) {
    match step {
        Split::Gpt2 => gpt2(&chars[r.clone()], r.start, out),
        Split::Llama3 { max_digits } => llama3(&chars[r.clone()], r.start, max_digits, out),
        Split::EachDigit => runs(chars, r, |c| class(c) == Class::Number, Some(1), out),
        Split::PunctRuns => runs(chars, r, |c| is_punct(c) || "$+<=>^~|".contains(c), None, out),
        Split::NumberRuns => runs(chars, r, |c| class(c) == Class::Number, None, out),
        Split::AsciiDigitTriples => triples(chars, r, out),
    }
}

/// Splits out maximal runs of `pred` (cut into pieces of at most `max`),
/// keeping the text between them as pieces too.
fn runs(chars: &[char], r: Range<usize>, pred: impl Fn(char) -> bool, max: Option<usize>, out: &mut Vec<Range<usize>>) {
    let mut gap = r.start;
    let mut i = r.start;
    while i < r.end {
        if !pred(chars[i]) {
            i += 1;
            continue;
        }
        if gap < i {
            out.push(gap..i);
        }
        let mut j = i;
        while j < r.end && pred(chars[j]) && max.is_none_or(|m| j - i < m) {
            j += 1;
        }
        out.push(i..j);
        i = j;
        gap = j;
    }
    if gap < r.end {
        out.push(gap..r.end);
    }
}

fn triples(chars: &[char], r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut gap = r.start;
    let mut i = r.start;
    while i + 3 <= r.end {
        if chars[i..i + 3].iter().all(|c| c.is_ascii_digit()) {
            if gap < i {
                out.push(gap..i);
            }
            out.push(i..i + 3);
            i += 3;
            gap = i;
        } else {
            i += 1;
        }
    }
    if gap < r.end {
        out.push(gap..r.end);
    }
}

/// Class of the char at `i`, or `None` past the piece's end.
fn at(s: &[char], i: usize) -> Option<Class> {
    s.get(i).map(|&c| class(c))
}

fn contraction(s: &[char], i: usize, ignore_case: bool) -> usize {
    if s[i] != '\'' {
        return 0;
    }
    let lower = |j: usize| s.get(j).map(|c| if ignore_case { c.to_ascii_lowercase() } else { *c });
    match (lower(i + 1), lower(i + 2)) {
        (Some('s' | 't' | 'm' | 'd'), _) => 2,
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
        _ => 0,
    }
}

fn whitespace_len(s: &[char], i: usize) -> usize {
    s[i..].iter().take_while(|&&c| class(c) == Class::Whitespace).count()
}

/// `\s+(?!\S)|\s+` at `i`, given a whitespace run of `n` chars.
fn trailing_space(s: &[char], i: usize, n: usize) -> usize {
    if n > 1 && i + n < s.len() {
        n - 1
    } else {
        n
    }
}

fn gpt2(s: &[char], base: usize, out: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < s.len() {
        let start = i;
        let c = contraction(s, i, false);
        if c > 0 {
            i += c;
        } else {
            let lead = usize::from(s[i] == ' ');
            let cls = at(s, i + lead);
            match cls {
                Some(Class::Letter) | Some(Class::Number) => {
                    i += lead;
                    while at(s, i) == cls {
                        i += 1;
                    }
                }
                Some(Class::Other) => {
                    i += lead;
                    while at(s, i) == Some(Class::Other) {
                        i += 1;
                    }
                }
                _ => {
                    let n = whitespace_len(s, i);
                    i += if n > 0 { trailing_space(s, i, n) } else { 1 };
                }
            }
        }
        out.push(base + start..base + i);
    }
}

fn llama3(s: &[char], base: usize, max_digits: usize, out: &mut Vec<Range<usize>>) {
    let is_crlf = |c: char| c == '\r' || c == '\n';
    let mut i = 0;
    while i < s.len() {
        let start = i;
        let cls = class(s[i]);
        let c = contraction(s, i, true);
        if c > 0 {
            i += c;
        } else if cls == Class::Letter
            || (!is_crlf(s[i]) && cls != Class::Number && at(s, i + 1) == Some(Class::Letter))
        {
            // [^\r\n\p{L}\p{N}]?\p{L}+
            i += 1;
            while at(s, i) == Some(Class::Letter) {
                i += 1;
            }
        } else if cls == Class::Number {
            while i < s.len() && i - start < max_digits && at(s, i) == Some(Class::Number) {
                i += 1;
            }
        } else if cls == Class::Other || (s[i] == ' ' && at(s, i + 1) == Some(Class::Other)) {
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            i += usize::from(s[i] == ' ');
            while at(s, i) == Some(Class::Other) {
                i += 1;
            }
            while i < s.len() && is_crlf(s[i]) {
                i += 1;
            }
        } else {
            let n = whitespace_len(s, i);
            // `\s*[\r\n]+`: the longest part of the run that ends in a line break.
            match s[i..i + n].iter().rposition(|&c| is_crlf(c)) {
                Some(last) => i += last + 1,
                None if n > 0 => i += trailing_space(s, i, n),
                None => i += 1,
            }
        }
        out.push(base + start..base + i);
    }
}
