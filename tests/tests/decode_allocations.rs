//! Decoding allocates nothing once warm: a counting global allocator
//! watches every thread (the pool's included) while warm sessions decode
//! the real models. This binary holds one test, so nothing else allocates
//! meanwhile.

use prima_core::kernels::Kernels;
use prima_core::sampler::argmax;
use prima_core::{Gguf, Model, Session, Want};
use prima_host::mapped::MappedFile;
use prima_tests::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (and reallocations) made by 32 decode steps after 8 warm
/// ones, on 2 threads.
fn allocations_while_decoding(path: &std::path::Path, kernels: Kernels) -> usize {
    let file = MappedFile::open(path).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    let model = Model::load(&g, kernels).unwrap();
    let pool = pool();
    let mut session = Session::new(&model, 256);
    let mut logits = Vec::new();
    pool.enter(|| {
        session.eval_into(&[1, 2, 3, 4, 5, 6, 7, 8], Want::Last, &pool, &mut logits).unwrap();
        let mut next = argmax(&logits);
        for _ in 0..8 {
            session.eval_into(&[next], Want::Last, &pool, &mut logits).unwrap();
            next = argmax(&logits);
        }
        let region = Region::new(GLOBAL);
        for _ in 0..32 {
            session.eval_into(&[next], Want::Last, &pool, &mut logits).unwrap();
            next = argmax(&logits);
        }
        let stats = region.change();
        stats.allocations + stats.reallocations
    })
}

#[test]
fn warm_decode_steps_allocate_nothing() {
    for kernels in [Kernels::detect(), Kernels::scalar()] {
        for path in [smollm2_path(), gemma3_path()] {
            let n = allocations_while_decoding(&path, kernels);
            assert_eq!(n, 0, "{} with {} kernels: {n} allocations in 32 decode steps", path.display(), kernels.name());
        }
    }
}
