//! GPT-2's reversible byte <-> printable-character mapping.

use alloc::vec::Vec;

/// The character byte `b` is written as in a byte-level BPE vocabulary.
pub(crate) fn byte_to_char(b: u8) -> char {
    let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable {
        return b as char;
    }
    // Non-printable bytes map, in order, to U+0100 onwards.
    let rank = (0..b).filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('\u{FFFD}')
}

fn char_to_byte(c: char) -> Option<u8> {
    let v = c as u32;
    if v < 256 {
        let b = v as u8;
        return matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF).then_some(b);
    }
    let rank = v.checked_sub(256)? as usize;
    (0u8..=255).filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)).nth(rank)
}

/// Decodes a byte-level BPE token's text back to raw bytes.
pub(crate) fn unicode_to_bytes(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}
