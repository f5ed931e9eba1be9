//! Text and token ids from a user or a request body: encoding any text and
//! decoding any ids with a real BPE tokenizer (SmolLM2's, from
//! PRIMA_FUZZ_MODEL, else the repository's model cache) must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prima_core::tokenizer::Tokenizer;
use prima_core::Gguf;
use std::sync::OnceLock;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = std::env::var("PRIMA_FUZZ_MODEL")
            .unwrap_or_else(|_| "../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = BYTES.get_or_init(|| std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")));
        Tokenizer::from_gguf(&Gguf::parse(bytes).expect("a GGUF")).expect("a tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let text = String::from_utf8_lossy(data);
    let parse_special = data.first().is_some_and(|b| b & 1 == 1);
    let ids = tok.encode(&text, true, parse_special);
    let _ = tok.decode(&ids, true);
    let raw: Vec<u32> = data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let _ = tok.decode(&raw, parse_special);
});
