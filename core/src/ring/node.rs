//! One device of the ring as a sans-IO state machine, in the quinn-proto
//! style: bytes and completions go in through `handle_*(now, …)`, and what to
//! send, what to compute and when to wake come out of `poll_transmit`,
//! `poll_event` and `poll_timeout`. It does no I/O and reads no clock.
//!
//! A token batch enters at the head, which runs its round-0 window and
//! sends the hidden states on. Each device runs its window for that round
//! and passes them on; the last device hands them back to the head, which
//! starts the next round. After round `k - 1` the head runs the output head.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::ops::Range;

use super::wire::{
    decode_values, encode_activations, encode_control, spans_fit, ActType, Control, Frame, FrameDecoder, Span, Spans,
    WireError,
};

/// Microseconds on the host's clock; the node only compares them.
pub type Micros = u64;

/// Which layers every device runs in every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlan {
    /// `windows[device][round]`.
    pub windows: Vec<Vec<Range<usize>>>,
    pub k: usize,
    pub n_layer: usize,
    /// Sequences carried at once, each in its own KV slot.
    pub slots: usize,
}

/// A plan that does not cover the model's layers exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPlan;

impl RingPlan {
    /// Round `r` gives device `d` the `sizes[d]` layers after those of
    /// devices `0..d` in that round, so rounds run the layers in order.
    pub fn from_windows(sizes: &[usize], k: usize) -> Result<Self, BadPlan> {
        let per_round: usize = sizes.iter().sum();
        if sizes.is_empty() || k == 0 || sizes.contains(&0) {
            return Err(BadPlan);
        }
        let windows = (0..sizes.len())
            .map(|d| {
                (0..k)
                    .map(|r| {
                        let start = r * per_round + sizes[..d].iter().sum::<usize>();
                        start..start + sizes[d]
                    })
                    .collect()
            })
            .collect();
        Ok(Self { windows, k, n_layer: per_round * k, slots: 1 })
    }

    /// Device `index`'s part of a plan, which is all a worker is told: its
    /// windows for each round. The other devices' windows are left empty.
    pub fn for_device(index: usize, devices: usize, own: Vec<Range<usize>>, n_layer: usize) -> Result<Self, BadPlan> {
        let sorted = own.windows(2).all(|w| w[0].end <= w[1].start);
        if index >= devices || own.is_empty() || !sorted || own.iter().any(|w| w.is_empty() || w.end > n_layer) {
            return Err(BadPlan);
        }
        let k = own.len();
        let mut windows = alloc::vec![Vec::new(); devices];
        windows[index] = own;
        Ok(Self { windows, k, n_layer, slots: 1 })
    }

    /// The plan for `slots` sequences at once.
    pub fn with_slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    pub fn devices(&self) -> usize {
        self.windows.len()
    }
}

/// What the host must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Run `layers` on `hidden`, whose rows `spans` assign to sequences,
    /// of batch `seq`, then call [`Node::handle_computed`].
    Compute { seq: u32, round: usize, layers: Range<usize>, spans: Vec<Span>, hidden: Vec<f32> },
    /// Start reading these layers' weights (madvise WILLNEED): they run next.
    Prefetch { layers: Range<usize> },
    /// These layers will not run again this token; drop them if memory is short.
    Release { layers: Range<usize> },
    /// Head only: every layer ran; run the output head on `hidden`.
    Output { seq: u32, hidden: Vec<f32> },
    /// The predecessor sent nothing for the timeout while work was expected.
    PeerSilent { since: Micros },
    /// The stream from the predecessor is broken; close it.
    PeerError(WireError),
    /// The predecessor ended the ring (`Stop`) or refused something (`Error`).
    PeerStopped { reason: alloc::string::String, error: bool },
    /// A control message the ring itself does not act on (such as `Stats`).
    Control(alloc::boxed::Box<Control>),
}

/// Bytes for the successor in the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub bytes: Vec<u8>,
}

/// A device's ring state.
#[derive(Debug)]
pub struct Node {
    index: usize,
    plan: RingPlan,
    n_embd: usize,
    act: ActType,
    timeout: Micros,
    decoder: FrameDecoder,
    pending_meta: Option<(u32, Spans)>,
    /// The batch being computed here: (seq, round, spans).
    computing: Option<(u32, usize, Spans)>,
    /// When activations were last expected from the predecessor, if they are.
    waiting_since: Option<Micros>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Node {
    /// Device `index` of `plan` (0 is the head), for hidden states `n_embd` wide.
    pub fn new(index: usize, plan: RingPlan, n_embd: usize, act: ActType, timeout: Micros) -> Self {
        let mut node = Self {
            index,
            plan,
            n_embd,
            act,
            timeout,
            decoder: FrameDecoder::default(),
            pending_meta: None,
            computing: None,
            waiting_since: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        let first = node.plan.windows[index][0].clone();
        node.events.push_back(Event::Prefetch { layers: first });
        node
    }

    fn is_head(&self) -> bool {
        self.index == 0
    }

    /// Head only: starts batch `seq` of embedded tokens, whose rows `spans`
    /// assign to sequences.
    pub fn submit(&mut self, now: Micros, seq: u32, spans: Spans, hidden: Vec<f32>) {
        debug_assert!(self.is_head());
        let _ = now;
        self.start(seq, 0, spans, hidden);
    }

    fn start(&mut self, seq: u32, round: usize, spans: Spans, hidden: Vec<f32>) {
        let layers = self.plan.windows[self.index][round].clone();
        let listed = spans.to_vec();
        self.computing = Some((seq, round, spans));
        self.waiting_since = None;
        self.events.push_back(Event::Compute { seq, round, layers, spans: listed, hidden });
    }

    /// The host finished the last `Compute` event with these hidden states.
    pub fn handle_computed(&mut self, now: Micros, hidden: Vec<f32>) {
        let Some((seq, round, spans)) = self.computing.take() else { return };
        let done = self.plan.windows[self.index][round].clone();
        if let Some(next) = self.plan.windows[self.index].get(round + 1) {
            self.events.push_back(Event::Prefetch { layers: next.clone() });
        }
        self.events.push_back(Event::Release { layers: done.clone() });
        if self.is_head() && self.plan.devices() == 1 {
            // Alone: every round is ours.
            return if round + 1 < self.plan.k {
                self.start(seq, round + 1, spans, hidden)
            } else {
                self.events.push_back(Event::Output { seq, hidden })
            };
        }
        let meta = Control::TokenMeta { seq, spans, want_all: false };
        // The successor needs the meta before the activations it describes.
        match (encode_control(&meta), encode_activations(seq, round as u16, self.act, self.n_embd as u32, &hidden)) {
            (Ok(m), Ok(a)) => {
                self.transmits.push_back(Transmit { bytes: m });
                self.transmits.push_back(Transmit { bytes: a });
            }
            (Err(e), _) | (_, Err(e)) => self.events.push_back(Event::PeerError(e)),
        }
        // More work will come back round unless this was our last window.
        let last_round = round + 1 == self.plan.k;
        if !last_round || self.is_head() {
            self.waiting_since = Some(now);
        }
    }

    /// Bytes from the predecessor.
    pub fn handle_bytes(&mut self, now: Micros, bytes: &[u8]) {
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(Frame::Control(c))) => match *c {
                    Control::TokenMeta { seq, spans, .. } => self.pending_meta = Some((seq, spans)),
                    Control::Heartbeat { .. } => self.waiting_since = self.waiting_since.map(|_| now),
                    Control::Stop { reason } => {
                        self.events.push_back(Event::PeerStopped { reason: reason.as_str().into(), error: false })
                    }
                    Control::Error { reason } => {
                        self.events.push_back(Event::PeerStopped { reason: reason.as_str().into(), error: true })
                    }
                    other => self.events.push_back(Event::Control(alloc::boxed::Box::new(other))),
                },
                Ok(Some(Frame::Activations(h, raw))) => {
                    let meta = self.pending_meta.take().filter(|m| m.0 == h.seq);
                    let refused = if h.n_embd as usize != self.n_embd {
                        Some("activations of the wrong width")
                    } else if h.round as usize >= self.plan.k {
                        Some("activations for a round the plan does not have")
                    } else if meta.is_none() {
                        Some("activations without their token meta")
                    } else if !meta.as_ref().is_some_and(|m| spans_fit(&m.1, h.n_tokens as usize, self.plan.slots)) {
                        Some("token meta whose spans do not fit the activations or the plan's slots")
                    } else {
                        None
                    };
                    if let Some(why) = refused {
                        self.events.push_back(Event::PeerError(WireError::Unexpected(why)));
                        return;
                    }
                    let Some((seq, spans)) = meta else { return };
                    let mut hidden = Vec::new();
                    decode_values(&h, &raw, &mut hidden);
                    let round = h.round as usize;
                    // The last device hands back to the head, which starts the next round.
                    let round = if self.is_head() { round + 1 } else { round };
                    if round >= self.plan.k {
                        self.waiting_since = None;
                        self.events.push_back(Event::Output { seq, hidden });
                    } else {
                        self.start(seq, round, spans, hidden);
                    }
                }
                Err(e) => {
                    self.events.push_back(Event::PeerError(e));
                    return;
                }
            }
        }
    }

    /// When the host should call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.waiting_since.map(|t| t + self.timeout)
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        if let Some(since) = self.waiting_since {
            if now >= since + self.timeout {
                self.waiting_since = None;
                self.events.push_back(Event::PeerSilent { since });
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
