//! A deterministic simulator: N ring nodes in virtual time, with seeded
//! delays and byte streams cut at random points. After every step it checks
//! that each batch's layers run exactly once, in order, and at the end that
//! every batch came out of the output head: no activation is lost.

use prima_core::ring::node::{Event, Node, RingPlan};
use prima_core::ring::wire::{ActType, Span, Spans};
use prima_core::sampler::Rng;
use std::collections::{BTreeMap, VecDeque};

/// Bytes in flight to device `to`, arriving at `at`.
struct Delivery {
    at: u64,
    to: usize,
    bytes: Vec<u8>,
}

struct Sim {
    nodes: Vec<Node>,
    rng: Rng,
    now: u64,
    inflight: Vec<Delivery>,
    /// Layers computed per batch, in order.
    trace: BTreeMap<u32, Vec<usize>>,
    outputs: Vec<(u32, Vec<f32>)>,
    silent: Vec<usize>,
    /// Devices whose outgoing bytes vanish (a dead link).
    dead: Option<usize>,
}

/// Batch `seq`'s one row: slot 0's token at position `seq`.
fn at(seq: u32) -> Spans {
    Spans::from_slice(&[Span { slot: 0, pos0: seq, n_tokens: 1 }]).unwrap()
}

impl Sim {
    fn new(sizes: &[usize], k: usize, seed: u64, act: ActType) -> Self {
        let plan = RingPlan::from_windows(sizes, k).unwrap();
        let nodes = (0..sizes.len()).map(|i| Node::new(i, plan.clone(), 4, act, 50_000)).collect();
        Self {
            nodes,
            rng: Rng::new(seed),
            now: 0,
            inflight: Vec::new(),
            trace: BTreeMap::new(),
            outputs: Vec::new(),
            silent: Vec::new(),
            dead: None,
        }
    }

    /// Drains every node's events and transmits; compute is instant.
    fn pump(&mut self) {
        let n = self.nodes.len();
        let mut progress = true;
        while progress {
            progress = false;
            for i in 0..n {
                while let Some(ev) = self.nodes[i].poll_event() {
                    progress = true;
                    match ev {
                        Event::Compute { seq, layers, spans, mut hidden, .. } => {
                            assert_eq!(spans[..], at(seq)[..], "batch {seq}: its spans changed on the way");
                            let trace = self.trace.entry(seq).or_default();
                            for l in layers {
                                // The hidden state counts the layers run so far.
                                assert_eq!(hidden[0] as usize, l, "batch {seq}: layer {l} out of order");
                                assert_eq!(trace.len(), l, "batch {seq}: layer {l} ran twice or was skipped");
                                trace.push(l);
                                hidden[0] += 1.0;
                            }
                            let now = self.now;
                            self.nodes[i].handle_computed(now, hidden);
                        }
                        Event::Output { seq, hidden } => self.outputs.push((seq, hidden)),
                        Event::PeerSilent { .. } => self.silent.push(i),
                        Event::PeerError(e) => panic!("device {i}: {e}"),
                        Event::PeerStopped { reason, .. } => panic!("device {i}: peer stopped: {reason}"),
                        Event::Prefetch { .. } | Event::Release { .. } | Event::Control(_) => {}
                    }
                }
                while let Some(t) = self.nodes[i].poll_transmit() {
                    progress = true;
                    if self.dead == Some(i) {
                        continue;
                    }
                    let to = (i + 1) % n;
                    // Cut the stream at random points; each piece has its own delay,
                    // but pieces of one stream stay in order (TCP).
                    let mut at = self.inflight.iter().filter(|d| d.to == to).map(|d| d.at).max().unwrap_or(self.now);
                    let mut rest = &t.bytes[..];
                    while !rest.is_empty() {
                        let cut = 1 + (self.rng.next_u64() as usize % rest.len().min(64));
                        at = at.max(self.now) + self.rng.next_u64() % 2_000;
                        self.inflight.push(Delivery { at, to, bytes: rest[..cut].to_vec() });
                        rest = &rest[cut..];
                    }
                }
            }
        }
    }

    /// Delivers the earliest piece in flight, or fires timeouts; false when idle.
    fn step(&mut self) -> bool {
        self.pump();
        let next_delivery = self.inflight.iter().enumerate().min_by_key(|(_, d)| d.at).map(|(i, d)| (i, d.at));
        let next_timeout = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
        match (next_delivery, next_timeout) {
            (Some((i, at)), t) if t.is_none_or(|t| at <= t) => {
                let d = self.inflight.remove(i);
                self.now = self.now.max(d.at);
                let now = self.now;
                self.nodes[d.to].handle_bytes(now, &d.bytes);
                true
            }
            (_, Some(t)) => {
                self.now = self.now.max(t);
                let now = self.now;
                self.nodes.iter_mut().for_each(|n| n.handle_timeout(now));
                true
            }
            _ => false,
        }
    }

    /// Runs `batches` batches one after another, as decoding does.
    fn run(&mut self, batches: u32) {
        for seq in 0..batches {
            let now = self.now;
            self.nodes[0].submit(now, seq, at(seq), vec![0.0, 1.0, 2.0, 3.0]);
            while self.outputs.len() <= seq as usize && self.step() {}
        }
    }
}

#[test]
fn every_layer_runs_once_in_order_for_many_plans_and_seeds() {
    let plans: [(&[usize], usize); 6] =
        [(&[8], 1), (&[8], 3), (&[3, 5], 1), (&[2, 1, 1], 2), (&[1, 1, 1, 1], 3), (&[5, 2, 3], 4)];
    for (sizes, k) in plans {
        let n_layer = sizes.iter().sum::<usize>() * k;
        for seed in 0..25 {
            for act in [ActType::F32, ActType::F16] {
                let mut sim = Sim::new(sizes, k, seed, act);
                sim.run(5);
                assert_eq!(sim.outputs.len(), 5, "{sizes:?} k={k} seed {seed}: a batch was lost");
                for (seq, hidden) in &sim.outputs {
                    assert_eq!(hidden[0] as usize, n_layer, "batch {seq} skipped layers");
                    assert_eq!(&hidden[1..], &[1.0, 2.0, 3.0], "batch {seq}: activations changed in transit");
                    assert_eq!(sim.trace[seq], (0..n_layer).collect::<Vec<_>>());
                }
                assert!(sim.silent.is_empty());
                assert!(sim.inflight.is_empty());
            }
        }
    }
}

#[test]
fn a_dead_link_is_reported_by_the_head_after_the_timeout() {
    let mut sim = Sim::new(&[2, 2, 2], 1, 7, ActType::F16);
    sim.dead = Some(1);
    let now = sim.now;
    sim.nodes[0].submit(now, 0, at(0), vec![0.0, 1.0, 2.0, 3.0]);
    while sim.step() {}
    assert!(sim.outputs.is_empty());
    assert_eq!(sim.silent, [0], "the head, which waits for the ring to come back, notices");
    assert!(sim.now >= 50_000 && sim.now < 60_000, "reported at the timeout, not later: {}", sim.now);
}

#[test]
fn prefetch_comes_before_compute_and_release_after() {
    let plan = RingPlan::from_windows(&[2, 2], 2).unwrap();
    let mut head = Node::new(0, plan, 4, ActType::F32, 1_000);
    head.submit(0, 0, at(0), vec![0.0; 4]);
    let mut seen = VecDeque::new();
    while let Some(e) = head.poll_event() {
        seen.push_back(e);
    }
    assert!(matches!(seen[0], Event::Prefetch { ref layers } if *layers == (0..2)));
    assert!(matches!(seen[1], Event::Compute { ref layers, .. } if *layers == (0..2)));
    head.handle_computed(1, vec![0.0; 4]);
    let next: Vec<Event> = std::iter::from_fn(|| head.poll_event()).collect();
    assert_eq!(next, [Event::Prefetch { layers: 4..6 }, Event::Release { layers: 0..2 }]);
}

#[test]
fn hostile_bytes_from_a_peer_become_an_error_event() {
    let plan = RingPlan::from_windows(&[1, 1], 1).unwrap();
    for bytes in
        [b"garbage!!".to_vec(), prima_core::ring::wire::encode_activations(0, 0, ActType::F32, 4, &[0.0; 4]).unwrap()]
    {
        // Activations with no token meta before them are refused too.
        let mut worker = Node::new(1, plan.clone(), 4, ActType::F32, 1_000);
        worker.handle_bytes(0, &bytes);
        let events: Vec<Event> = std::iter::from_fn(|| worker.poll_event()).collect();
        assert!(matches!(events.last(), Some(Event::PeerError(_))), "{events:?}");
        assert!(!events.iter().any(|e| matches!(e, Event::Compute { .. })));
    }
}

/// Well-formed frames that do not fit the plan are refused by name, and never
/// index past it: a round the plan lacks, the wrong width, no token meta.
#[test]
fn frames_outside_the_plan_become_an_error_event() {
    use prima_core::ring::wire::{encode_activations, encode_control, Control, WireError};
    let plan = RingPlan::from_windows(&[1, 1], 2).unwrap();
    let span = |slot, n_tokens| Span { slot, pos0: 0, n_tokens };
    let meta = |spans: &[Span]| {
        let spans = spans.iter().copied().collect();
        encode_control(&Control::TokenMeta { seq: 0, spans, want_all: false }).unwrap()
    };
    let one = meta(&[span(0, 1)]);
    let row = encode_activations(0, 0, ActType::F32, 4, &[0.0; 4]).unwrap();
    let cases = [
        (one.clone(), encode_activations(0, 2, ActType::F32, 4, &[0.0; 4]).unwrap(), "round the plan does not have"),
        (one.clone(), encode_activations(0, 0, ActType::F32, 2, &[0.0; 2]).unwrap(), "wrong width"),
        (one.clone(), encode_activations(9, 0, ActType::F32, 4, &[0.0; 4]).unwrap(), "without their token meta"),
        (meta(&[span(0, 2)]), row.clone(), "spans do not fit"),
        (meta(&[span(0, 1), span(1, 1)]), row.clone(), "spans do not fit"),
        (meta(&[span(2, 1)]), row.clone(), "spans do not fit"),
    ];
    for (meta, activations, why) in cases {
        let mut worker = Node::new(1, plan.clone().with_slots(2), 4, ActType::F32, 1_000);
        worker.handle_bytes(0, &meta);
        worker.handle_bytes(0, &activations);
        let events: Vec<Event> = std::iter::from_fn(|| worker.poll_event()).collect();
        match events.last() {
            Some(Event::PeerError(e @ WireError::Unexpected(_))) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("{why}: {other:?}"),
        }
        assert!(!events.iter().any(|e| matches!(e, Event::Compute { .. })));
    }
}

#[test]
fn plans_must_cover_every_layer() {
    assert!(RingPlan::from_windows(&[], 1).is_err());
    assert!(RingPlan::from_windows(&[2, 0], 1).is_err());
    assert!(RingPlan::from_windows(&[2, 2], 0).is_err());
    let p = RingPlan::from_windows(&[2, 3], 2).unwrap();
    assert_eq!(p.windows, vec![vec![0..2, 5..7], vec![2..5, 7..10]]);
    assert_eq!(p.n_layer, 10);
}
