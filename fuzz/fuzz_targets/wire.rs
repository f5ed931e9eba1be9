//! Bytes from a hostile peer: the frame decoder, fed in arbitrary pieces,
//! and a ring node reading them must error, never panic or allocate what
//! the peer asks for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prima_core::ring::node::{Node, RingPlan};
use prima_core::ring::wire::{ActType, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let cut = (cut as usize).max(1);
    let mut dec = FrameDecoder::default();
    for piece in rest.chunks(cut) {
        dec.push(piece);
        while let Ok(Some(_)) = dec.next_frame() {}
    }
    // A worker in the middle of a 3-device ring, 2 rounds, 4 slots, 8-wide activations.
    let Ok(plan) = RingPlan::from_windows(&[1, 1, 1], 2).map(|p| p.with_slots(4)) else { return };
    let act = if cut % 2 == 0 { ActType::F16 } else { ActType::F32 };
    let mut node = Node::new(1, plan, 8, act, 1_000_000);
    for (i, piece) in rest.chunks(cut).enumerate() {
        node.handle_bytes(i as u64, piece);
        while let Some(ev) = node.poll_event() {
            if let prima_core::ring::node::Event::Compute { hidden, .. } = ev {
                node.handle_computed(i as u64, hidden);
            }
        }
        while node.poll_transmit().is_some() {}
    }
    node.handle_timeout(u64::MAX / 2);
});
