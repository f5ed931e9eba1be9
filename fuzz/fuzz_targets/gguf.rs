//! A hostile or truncated GGUF file: parsing, and everything read from its
//! header (config, costs, tokenizer, model load), must error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prima_core::cost::ModelCost;
use prima_core::kernels::Kernels;
use prima_core::model::Config;
use prima_core::tokenizer::Tokenizer;
use prima_core::{Gguf, Model};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    for t in g.tensors() {
        let _ = (t.name, t.n_bytes);
    }
    let _ = Config::from_gguf(&g);
    let _ = ModelCost::from_gguf(&g);
    let _ = Tokenizer::from_gguf(&g);
    let _ = Model::load(&g, Kernels::scalar());
});
