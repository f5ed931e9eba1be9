//! A peer's device profile (postcard in its `Hello`, or JSON from a file),
//! and the plan Halda makes with it: hostile numbers must give an error or
//! a plan, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prima_core::cost::{ModelCost, RunShape};
use prima_core::halda::{solve, Problem};
use prima_core::profile::DeviceProfile;
use prima_core::Gguf;
use std::sync::OnceLock;

/// The costs of a small synthetic Llama (PRIMA_FUZZ_COST_MODEL, else the
/// shared reference's), so plans are made for a real model's shape.
fn cost() -> &'static ModelCost {
    static COST: OnceLock<ModelCost> = OnceLock::new();
    COST.get_or_init(|| {
        let path = std::env::var("PRIMA_FUZZ_COST_MODEL")
            .unwrap_or_else(|_| "../../shared/reference/models/synth-llama-Q4_0.gguf".into());
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = BYTES.get_or_init(|| std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")));
        ModelCost::from_gguf(&Gguf::parse(bytes).expect("a GGUF")).expect("a model's costs")
    })
}

fuzz_target!(|data: &[u8]| {
    let from_wire = postcard::from_bytes::<DeviceProfile>(data).ok();
    let from_json = serde_json::from_slice::<DeviceProfile>(data).ok();
    for p in [from_wire, from_json].into_iter().flatten() {
        let run = RunShape { n_ctx: 256, n_batch: 32, kv_elem_bytes: 2, threads: 2 };
        let head = DeviceProfile { name: "head".try_into().unwrap(), ..p.clone() };
        if let Ok(problem) = Problem::from_profiles(&[head, p], cost(), &run) {
            let _ = solve(&problem);
        }
    }
});
