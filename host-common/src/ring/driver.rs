//! The loop that drives a ring node: it runs the node's compute events on
//! this device's layers, passes its frames to the successor, and feeds it
//! what the predecessor sent, with the clock the node itself lacks.

use anyhow::bail;
use prima_core::cost::{ModelCost, RunShape};
use prima_core::profile::DeviceProfile;
use prima_core::ring::node::{Event, Node};
use prima_core::ring::wire::{encode_control, Control, Span};
use prima_core::{KvCache, LayerBackend, LayerHook, Model, SeqRows, SeqSpan, Workspace};
use std::ops::Range;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::conn::Inbound;
use crate::link::{LinkWriter, Reader};
use crate::pool::Pool;
use crate::stream::{LayerMemory, LayerStream};

/// Where this device's time went.
#[derive(Debug, Default, Clone, Copy)]
pub struct Times {
    pub compute: Duration,
    /// Waiting for the predecessor while work was due.
    pub network: Duration,
    /// Faulting in weights that were not resident before a window ran.
    pub disk: Duration,
}

/// This device's layers: the weights, their KV cache for each slot and the
/// stream that reads the ones that do not stay resident.
pub struct LocalLayers<'m, 'a> {
    pub model: &'m Model<'a>,
    pub kv: Vec<KvCache>,
    pub ws: Workspace,
    pub pool: &'m Pool,
    pub stream: LayerStream<'m>,
    /// The first layers of windows, on a GPU (`-ngl`), one backend each.
    pub gpu: Vec<Box<dyn LayerBackend>>,
}

impl LocalLayers<'_, '_> {
    /// Runs `layers` on `hidden`, whose rows `spans` assign to slots (in
    /// increasing order, as the node checked).
    fn compute(
        &mut self,
        layers: Range<usize>,
        spans: &[Span],
        hidden: &mut [f32],
        times: &mut Times,
    ) -> anyhow::Result<()> {
        let (model, ws, pool, stream) = (self.model, &mut self.ws, self.pool, &mut self.stream);
        let n_slots = self.kv.len();
        let mut caches = self.kv.iter_mut().enumerate();
        let mut seqs = Vec::with_capacity(spans.len());
        for s in spans {
            let Some((_, kv)) = caches.find(|(i, _)| *i == s.slot as usize) else {
                bail!("a batch names slot {} of {n_slots}, or names slots out of order", s.slot);
            };
            seqs.push(SeqRows { kv, pos0: s.pos0 as usize, n_tok: s.n_tokens as usize });
        }
        let disk_before = stream.disk;
        let t = Instant::now();
        let mut layers = layers;
        if let Some(gpu) = self.gpu.iter_mut().find(|g| g.layers().start == layers.start && !layers.is_empty()) {
            let on_gpu: Vec<SeqSpan> = spans
                .iter()
                .map(|s| SeqSpan { slot: s.slot as usize, pos0: s.pos0 as usize, n_tok: s.n_tokens as usize })
                .collect();
            gpu.forward(&on_gpu, hidden)?;
            layers = gpu.layers().end.min(layers.end)..layers.end;
        }
        if stream.streams() {
            for l in layers {
                stream.before(l);
                pool.enter(|| model.forward_seqs(l..l + 1, &mut seqs, hidden, ws, pool))
                    .map_err(anyhow::Error::from)?;
                stream.after(l);
                stream.take_error()?;
            }
        } else {
            pool.enter(|| model.forward_seqs(layers, &mut seqs, hidden, ws, pool)).map_err(anyhow::Error::from)?;
        }
        let disk = stream.disk - disk_before;
        times.disk += disk;
        times.compute += t.elapsed().saturating_sub(disk);
        Ok(())
    }
}

/// This device's memory for a run, as Halda planned it: from the memory its
/// profile found available. Measuring again now would count this run's own
/// mapped weights as used (seen on the emulated cluster: the head streamed
/// a layer Halda had planned resident). Without a profile, what is
/// available now. `beside` is what the process holds besides the run (a
/// draft model on the head), left alone.
pub fn layer_memory(
    profile: Option<&DeviceProfile>,
    cost: &ModelCost,
    run: &RunShape,
    head: bool,
    beside: u64,
) -> LayerMemory {
    LayerMemory::new(cost, run, available_memory(profile).saturating_sub(beside), head)
}

/// The memory a device has for a run: its profile's figure, else what is
/// available now.
pub fn available_memory(profile: Option<&DeviceProfile>) -> u64 {
    match profile {
        Some(p) if p.ram_available_bytes > 0 => p.ram_available_bytes,
        _ => crate::profiler::system::memory().map(|m| m.available).unwrap_or(u64::MAX),
    }
}

/// A ring device that died, went silent or broke the protocol: the ring
/// cannot go on with it, and the head may plan a new one without it.
#[derive(Debug)]
pub struct PeerLost {
    /// Its ring position.
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for PeerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerLost {}

/// How a run of the loop ended.
pub enum Step {
    /// Head only: a batch came back round; run the output head on it.
    Output { seq: u32, hidden: Vec<f32> },
    /// Worker only: the ring ended, for this reason.
    Ended(String),
}

/// How often a waiting device looks at its timers and control streams.
pub const POLL: Duration = Duration::from_millis(20);

pub struct Driver {
    pub node: Node,
    /// Ring position of the device whose bytes feed the node.
    pub pred: usize,
    /// The predecessor's link, read here directly (with a `POLL` read timeout).
    pub pred_link: Reader,
    /// Reports from the threads watching the other control streams.
    pub inbound: Receiver<Inbound>,
    pub succ: LinkWriter,
    pub epoch: Instant,
    /// Head only: when each device was last heard from (index = ring position).
    pub heard: Vec<Option<Instant>>,
    pub peer_timeout: Duration,
    pub times: Times,
    /// Names of ring positions, for errors.
    pub names: Vec<String>,
    pub is_head: bool,
    /// Worker only: where to send this device's `Stats` after each window.
    pub stats_to: Option<LinkWriter>,
    /// Head only: each worker's latest totals (index = ring position).
    pub peer_times: Vec<Times>,
}

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("a peer", String::as_str)
    }

    /// Runs until the head has an output, or a worker's ring ends.
    pub fn run(&mut self, layers: &mut LocalLayers<'_, '_>) -> anyhow::Result<Step> {
        loop {
            while let Some(ev) = self.node.poll_event() {
                match ev {
                    Event::Compute { layers: range, spans, mut hidden, .. } => {
                        layers.compute(range, &spans, &mut hidden, &mut self.times)?;
                        // Before the activations, so the head has them when the batch returns.
                        self.send_stats();
                        let now = self.now();
                        self.node.handle_computed(now, hidden);
                    }
                    // The layer stream reads ahead and releases layer by layer.
                    Event::Prefetch { .. } | Event::Release { .. } => {}
                    Event::Output { seq, hidden } => {
                        self.flush()?;
                        return Ok(Step::Output { seq, hidden });
                    }
                    Event::PeerSilent { since } => {
                        let quiet = Duration::from_micros(self.now().saturating_sub(since));
                        return Err(self.lost(self.pred, format!("sent nothing for {:.1} s", quiet.as_secs_f64())));
                    }
                    Event::PeerError(e) => return Err(self.lost(self.pred, format!("sent a bad frame: {e}"))),
                    Event::PeerStopped { reason, error: true } if self.is_head => {
                        return Err(self.blame(self.pred, reason, true))
                    }
                    Event::PeerStopped { reason, error: true } => bail!("{}: {reason}", self.name(self.pred)),
                    Event::PeerStopped { reason, error: false } => return Ok(Step::Ended(reason)),
                    Event::Control(c) => {
                        if let Control::Stats { compute_us, network_us, disk_us } = *c {
                            let times = [compute_us, network_us, disk_us].map(Duration::from_micros);
                            self.record(self.pred, times);
                        }
                    }
                }
            }
            self.flush()?;
            if let Some(step) = self.wait()? {
                return Ok(step);
            }
        }
    }

    /// With no work under way: handles what the others sent for up to one
    /// poll, so their heartbeats do not pile up while the head waits for a
    /// request, and a device that died is noticed then.
    pub fn idle(&mut self) -> anyhow::Result<()> {
        match self.wait()? {
            None => Ok(()),
            Some(Step::Ended(why)) => bail!("the ring ended: {why}"),
            Some(Step::Output { .. }) => bail!("the ring ended: an output arrived unasked"),
        }
    }

    /// Handles every report already waiting (workers' stats, liveness).
    pub fn drain_inbound(&mut self) -> anyhow::Result<()> {
        match self.handle_waiting()? {
            None => Ok(()),
            Some(Step::Ended(why)) => bail!("the ring ended: {why}"),
            Some(Step::Output { .. }) => bail!("the ring ended: an output arrived early"),
        }
    }

    /// Handles the reports already waiting, up to the first that ends a step.
    fn handle_waiting(&mut self) -> anyhow::Result<Option<Step>> {
        while let Ok(ev) = self.inbound.try_recv() {
            if let Some(step) = self.on_inbound(ev)? {
                return Ok(Some(step));
            }
        }
        Ok(None)
    }

    /// Waits for bytes from the predecessor, a control report, the node's
    /// timeout or a liveness check, whichever comes first.
    fn wait(&mut self) -> anyhow::Result<Option<Step>> {
        if let Some(step) = self.handle_waiting()? {
            return Ok(Some(step));
        }
        let start = Instant::now();
        let busy = self.node.poll_timeout().is_some();
        let got = self.pred_link.read();
        if busy {
            self.times.network += start.elapsed();
        }
        let now = Instant::now();
        let t = self.epoch.elapsed().as_micros() as u64;
        let pred = self.pred;
        let closed = |why: String| Inbound::Closed { from: pred, why, said: false };
        match got {
            Ok(None) => return self.on_inbound(closed("closed the connection".into())),
            Ok(Some(bytes)) => {
                self.node.handle_bytes(t, bytes);
                self.mark_heard(pred, now);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return self.on_inbound(closed(format!("connection failed: {e}"))),
        }
        let t = self.now();
        self.node.handle_timeout(t);
        self.check_heard(now)?;
        Ok(None)
    }

    fn on_inbound(&mut self, ev: Inbound) -> anyhow::Result<Option<Step>> {
        let now = Instant::now();
        match ev {
            Inbound::Alive { from } => self.mark_heard(from, now),
            Inbound::Stats { from, times } => {
                self.mark_heard(from, now);
                self.record(from, times);
            }
            Inbound::Closed { from, why, said } => {
                if !self.is_head {
                    return Ok(Some(Step::Ended(format!("{} {why}", self.name(from)))));
                }
                return Err(self.blame(from, why, said));
            }
        }
        Ok(None)
    }

    fn record(&mut self, from: usize, [compute, network, disk]: [Duration; 3]) {
        if let Some(t) = self.peer_times.get_mut(from) {
            *t = Times { compute, network, disk };
        }
    }

    fn send_stats(&mut self) {
        let Some(to) = &self.stats_to else { return };
        let t = self.times;
        let msg = Control::Stats {
            compute_us: t.compute.as_micros() as u64,
            network_us: t.network.as_micros() as u64,
            disk_us: t.disk.as_micros() as u64,
        };
        if let Ok(f) = encode_control(&msg) {
            let _ = to.send(&f);
        }
    }

    fn mark_heard(&mut self, from: usize, now: Instant) {
        if let Some(h) = self.heard.get_mut(from) {
            *h = Some(now);
        }
    }

    fn check_heard(&self, now: Instant) -> anyhow::Result<()> {
        for (i, h) in self.heard.iter().enumerate() {
            if let Some(h) = h {
                let quiet = now.duration_since(*h);
                if quiet > self.peer_timeout {
                    let why = format!("sent nothing for {:.1} s; it is hung or unreachable", quiet.as_secs_f64());
                    return Err(self.lost(i, why));
                }
            }
        }
        Ok(())
    }

    /// Names the device that failed. When one dies, its neighbours close
    /// too and say why; the one that closed without a word is the culprit.
    fn blame(&self, from: usize, why: String, said: bool) -> anyhow::Error {
        let mut closed = vec![(from, why, said)];
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(ev) = self.inbound.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if let Inbound::Closed { from, why, said } = ev {
                closed.push((from, why, said));
            }
        }
        let pick = closed.iter().position(|c| !c.2).unwrap_or(0);
        let (from, why, said) = &closed[pick];
        let what = if *said { format!("reported: {why}") } else { why.clone() };
        self.lost(*from, format!("{what}; the ring cannot go on without it"))
    }

    /// The device at ring position `position` is lost, for `why`.
    fn lost(&self, position: usize, why: String) -> anyhow::Error {
        anyhow::Error::new(PeerLost { position, message: format!("{} {why}", self.name(position)) })
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        while let Some(t) = self.node.poll_transmit() {
            if let Err(e) = self.succ.send(&t.bytes) {
                let next = (self.pred + 2) % self.names.len().max(1);
                return Err(self.lost(next, format!("is unreachable: sending to it failed: {e}")));
            }
        }
        Ok(())
    }
}
