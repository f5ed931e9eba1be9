//! The head of a ring: it greets the workers, plans the windows (given, or
//! Halda's from the profiles), sends each worker its layers, and then
//! evaluates tokens by sending hidden states round the ring.

use anyhow::{anyhow, bail, Context};
use prima_core::cost::ModelCost;
use prima_core::halda::{self, solve, Problem};
use prima_core::profile::{DeviceProfile, LinkProfile, PROFILE_VERSION};
use prima_core::ring::node::{Node, RingPlan};
use prima_core::ring::wire::{encode_control, ActType, Control, FrameDecoder, LayerRange, Span, Spans, MAX_SLOTS};
use prima_core::{Gguf, KvCache, KvType, Model, Parts, Workspace};
use std::ops::Range;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::conn::{self, read_control, send_control, BUSY, HANDSHAKE_TIMEOUT};
use super::driver::{layer_memory, Driver, LocalLayers, Step, Times, POLL};
use super::weights;
use crate::forward::{check_steps, Step as SlotStep};
use crate::link::{Link, LinkWriter, RingKey};
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::profiler::calibrate::LayerCheck;
use crate::profiler::probe;
use crate::stream::{self, layer_spans, run_shape, N_BATCH};

/// How the ring is laid out and run.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// Worker addresses, in ring order after the head.
    pub addrs: Vec<String>,
    /// Layers per device per round, head first; `None` asks Halda.
    pub windows: Option<Vec<usize>>,
    pub act: ActType,
    /// Each slot's context.
    pub n_ctx: usize,
    /// Sequences the ring carries at once, each in its own KV slot on
    /// every device.
    pub slots: usize,
    pub kv: KvType,
    pub peer_timeout: Duration,
    /// The head's own profile, for Halda (only needed without `windows`).
    pub head_profile: Option<DeviceProfile>,
    /// The head's model layer against its profile: Halda scales every
    /// device's layer time by its correction.
    pub layer_check: Option<LayerCheck>,
    /// The ring's key: every link is authenticated and encrypted with it.
    pub key: Option<RingKey>,
    /// Bytes the head's process holds besides its share of the ring (a
    /// draft model): its memory plan, and Halda's, leave them alone.
    pub beside: u64,
    /// Measured against predicted layer time, per device (by address; the
    /// head's is ""), which Halda's layer times are multiplied by: how a
    /// serving head re-balances a device that runs slower than planned.
    pub layer_factors: Vec<(String, f64)>,
    /// The head's first layers on its GPU (`-ngl`).
    pub gpu: crate::gpu::GpuChoice,
}

impl RingOptions {
    /// What the run asks of each device besides its layers (threads from
    /// the head's profile: a worker's own differ little in stack).
    pub fn run_shape(&self) -> prima_core::cost::RunShape {
        let threads = self.head_profile.as_ref().map_or(1, |p| p.threads as usize);
        self.run_shape_with(threads)
    }

    /// The run's shape for a device of `threads` threads: every slot's cache.
    fn run_shape_with(&self, threads: usize) -> prima_core::cost::RunShape {
        run_shape(self.n_ctx * self.slots, N_BATCH, self.kv, threads)
    }
}

struct Peer {
    addr: String,
    link: Link,
    dec: FrameDecoder,
    profile: DeviceProfile,
}

/// A ring whose workers have answered, with its plan, before the head loads
/// its own layers.
pub struct Handshake {
    rt: tokio::runtime::Runtime,
    peers: Vec<Peer>,
    /// Ring position → index into the head + `addrs` (0 is the head).
    pub kept: Vec<usize>,
    pub plan: RingPlan,
    /// Halda's plan, when Halda planned (not `--layer-window`).
    pub prediction: Option<halda::Plan>,
    opts: RingOptions,
    /// The model's costs (also what each device's memory is sized from).
    cost: ModelCost,
}

/// A worker that failed while a ring was being set up (unreachable, gone
/// silent, refused its part): attached as context to the error, so a head
/// that re-plans knows which device to leave out.
#[derive(Debug, Clone)]
pub struct DeviceLost {
    pub addr: String,
}

impl std::fmt::Display for DeviceLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed while the ring was set up", self.addr)
    }
}

/// Marks an error as `addr`'s failure.
fn lost(addr: &str) -> impl FnOnce(anyhow::Error) -> anyhow::Error + '_ {
    move |e| e.context(DeviceLost { addr: addr.to_string() })
}

impl Handshake {
    /// Connects to every worker, exchanges profiles and plans the ring.
    pub fn connect(opts: RingOptions, g: &Gguf<'_>) -> anyhow::Result<Self> {
        if opts.addrs.is_empty() {
            bail!("--ring needs at least one worker address");
        }
        if !(1..=MAX_SLOTS).contains(&opts.slots) {
            bail!("a ring carries 1 to {MAX_SLOTS} sequences at once, not {}", opts.slots);
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let mut peers = Vec::new();
        for addr in &opts.addrs {
            peers.push(rt.block_on(hello(addr, opts.head_profile.clone(), opts.key.as_ref())).map_err(lost(addr))?);
        }
        let mut cost = ModelCost::from_gguf(g).map_err(anyhow::Error::from)?;
        if opts.act == ActType::F32 {
            cost = cost.with_f32_activations();
        }
        let n_layer = cost.layers.len();
        let (kept, sizes, k, prediction) = match &opts.windows {
            Some(w) => {
                if w.len() != peers.len() + 1 {
                    bail!(
                        "--layer-window gives {} windows for {} devices (the head and {} workers)",
                        w.len(),
                        peers.len() + 1,
                        peers.len()
                    );
                }
                let per_round: usize = w.iter().sum();
                if w.contains(&0) || per_round == 0 || n_layer % per_round != 0 {
                    bail!("--layer-window {w:?}: every window needs a layer, and the model's {n_layer} layers must be a whole number of rounds of {per_round}");
                }
                ((0..w.len()).collect::<Vec<_>>(), w.clone(), n_layer / per_round, None)
            }
            None => {
                let mut head =
                    opts.head_profile.clone().ok_or_else(|| anyhow!("automatic windows need the head's profile"))?;
                head.ram_available_bytes = head.ram_available_bytes.saturating_sub(opts.beside);
                let mut profiles = vec![head];
                for p in &peers {
                    let mut prof = p.profile.clone();
                    // The link as the head sees it, measured now.
                    let (rtt_s, bytes_per_s) = probe::measure(&p.addr, Duration::from_millis(300), opts.key.as_ref())
                        .with_context(|| format!("cannot measure the link to {}", p.addr))?;
                    prof.link = Some(LinkProfile { rtt_s: rtt_s as f32, bytes_per_s: bytes_per_s as f32 });
                    profiles.push(prof);
                }
                let run = opts.run_shape();
                let mut problem = Problem::from_profiles(&profiles, &cost, &run).map_err(anyhow::Error::from)?;
                if let Some(check) = opts.layer_check {
                    let ratio = check.correction();
                    eprintln!(
                        "layer check: this model's layer 0 takes {:.2} ms on the head, its profile predicts {:.2} ms; every device's layer time x{ratio:.2}{}",
                        check.measured_s * 1e3,
                        check.predicted_s * 1e3,
                        if ratio != check.ratio() { " (limited)" } else { "" }
                    );
                    problem.scale_layer_times(ratio);
                }
                for (i, d) in problem.devices.iter_mut().enumerate() {
                    let addr = if i == 0 { "" } else { peers[i - 1].addr.as_str() };
                    if let Some((_, f)) = opts.layer_factors.iter().find(|(a, _)| a == addr) {
                        d.layer_s *= f;
                    }
                }
                let plan = solve(&problem).map_err(|e| anyhow!("no ring plan: {e}"))?;
                if plan.devices.first() != Some(&0) {
                    bail!("Halda's plan leaves out the head");
                }
                let names: Vec<&str> = plan.devices.iter().map(|&i| profiles[i].name.as_str()).collect();
                eprintln!(
                    "Halda: devices {names:?}, windows {:?}, k = {}, predicted {:.1} ms per token",
                    plan.windows,
                    plan.k,
                    plan.tpot_s * 1e3
                );
                for (i, (p, d)) in profiles.iter().zip(&problem.devices).enumerate() {
                    let mib = |b: f64| b / (1u64 << 20) as f64;
                    let link = match i {
                        0 => String::new(),
                        _ => format!(", link to the head {:.2} ms", d.hop_s * 1e3),
                    };
                    let gpu = match (&p.gpu, d.gpu) {
                        (Some(g), Some(c)) => {
                            let planned =
                                plan.devices.iter().position(|&m| m == i).map_or(0, |pos| plan.gpu_layers[pos]);
                            format!(
                                ", GPU {} {:.3} ms per layer, budget {:.0} MiB: {planned} layers",
                                g.name,
                                c.layer_s * 1e3,
                                mib(c.budget_bytes)
                            )
                        }
                        (Some(g), None) => format!(", GPU {} computes not every layer type: no layers", g.name),
                        _ => String::new(),
                    };
                    eprintln!(
                        "  {}: {:.0} MiB available, budget {:.0} MiB of weights and KV, {:.2} ms per layer, disk {:.0} MB/s{link}{gpu}",
                        p.name,
                        mib(p.ram_available_bytes as f64),
                        mib(d.budget_bytes),
                        d.layer_s * 1e3,
                        d.disk_bytes_per_s / 1e6,
                    );
                }
                (plan.devices.clone(), plan.windows.clone(), plan.k, Some(plan))
            }
        };
        if k > MAX_ROUNDS {
            bail!("{k} rounds per token; a plan message carries at most {MAX_ROUNDS} windows per device (use larger windows)");
        }
        let plan = RingPlan::from_windows(&sizes, k).map_err(|_| anyhow!("bad windows {sizes:?} × {k} rounds"))?;
        let plan = plan.with_slots(opts.slots);
        Ok(Self { rt, peers, kept, plan, prediction, opts, cost })
    }

    /// How this ring was asked for.
    pub fn options(&self) -> &RingOptions {
        &self.opts
    }

    /// Halda's GPU layers for the device at ring position `pos`, over all
    /// its windows (`None` with fixed windows: its own `-ngl` decides).
    pub fn planned_gpu_layers(&self, pos: usize) -> Option<usize> {
        self.prediction.as_ref().map(|p| p.gpu_layers.get(pos).copied().unwrap_or(0))
    }

    /// What the head holds: its windows, the embedding and the output head.
    pub fn head_parts(&self) -> Parts {
        Parts { windows: self.plan.windows[0].clone(), embedding: true, output: true }
    }

    /// Names of the ring's devices in ring order.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["the head".to_string()];
        for &i in &self.kept[1..] {
            let p = &self.peers[i - 1];
            names.push(format!("device {i} ({}, {})", p.profile.name, p.addr));
        }
        names
    }

    /// Sends the plan and layers, waits until every worker is ready, and
    /// returns the running ring.
    pub fn start<'m, 'a>(
        self,
        (model, gpu): (&'m Model<'a>, Vec<Box<dyn prima_core::LayerBackend>>),
        file: &'m MappedFile,
        pool: &'m Pool,
        g: &Gguf<'_>,
    ) -> anyhow::Result<Ring<'m, 'a>> {
        let names = self.names();
        let planned_gpu: Vec<Option<u16>> = (0..self.kept.len())
            .map(|pos| self.planned_gpu_layers(pos).map(|g| g.min(u16::MAX.into()) as u16))
            .collect();
        let Self { rt, mut peers, kept, plan, opts, prediction, cost } = self;
        let n = kept.len();
        let session = session_id()?;
        let model_id = weights::fingerprint(g);
        // Workers that are not in the plan are let go.
        for (i, p) in peers.iter_mut().enumerate() {
            if !kept.contains(&(i + 1)) {
                let stop = Control::Stop { reason: conn::reason("left out of the plan") };
                let _ = rt.block_on(send_control(&mut p.link, &stop, &p.addr));
            }
        }
        let mut ring: Vec<Peer> = Vec::new();
        let mut by_pos: Vec<Option<Peer>> = peers.into_iter().map(Some).collect();
        for &i in &kept[1..] {
            ring.push(by_pos[i - 1].take().ok_or_else(|| anyhow!("device {i} planned twice"))?);
        }
        let addrs: Vec<String> = ring.iter().map(|p| p.addr.clone()).collect();
        // What each device keeps resident: the head's own choice below, and
        // each worker's by the same rule from its profile (workers decide
        // for themselves; this is for the report).
        let spans = layer_spans(g);
        let held = |pos: usize| -> Vec<usize> { plan.windows[pos].iter().flat_map(|w| w.clone()).collect() };
        let mut residency = vec![(0, held(0).len())];
        for (pos, p) in ring.iter().enumerate().map(|(j, p)| (j + 1, p)) {
            let run = opts.run_shape_with(p.profile.threads as usize);
            let memory = layer_memory(Some(&p.profile), &cost, &run, false, 0);
            let held = held(pos);
            residency.push((held.len() - memory.streamed(&held, &spans).len(), held.len()));
        }
        rt.block_on(async {
            // Last first: a worker's successor is waiting for it before it connects.
            let mut need = vec![false; ring.len()];
            for pos in (1..n).rev() {
                let p = &mut ring[pos - 1];
                let windows: heapless::Vec<LayerRange, 64> =
                    plan.windows[pos].iter().map(|w| LayerRange { start: w.start as u16, end: w.end as u16 }).collect();
                let msg = Control::Plan {
                    session,
                    index: pos as u16,
                    devices: n as u16,
                    k: plan.k as u16,
                    windows,
                    next: addrs
                        .get(pos)
                        .map(|a| a.as_str())
                        .unwrap_or("")
                        .try_into()
                        .map_err(|_| anyhow!("address too long"))?,
                    f32_activations: opts.act == ActType::F32,
                    n_ctx: opts.n_ctx as u32,
                    kv_f32: opts.kv == KvType::F32,
                    model: model_id,
                    slots: opts.slots as u16,
                    gpu_layers: planned_gpu[pos],
                };
                let answer = async {
                    send_control(&mut p.link, &msg, &names[pos]).await?;
                    match read_control(&mut p.link, &mut p.dec, &names[pos]).await? {
                        Control::Need { weights } => anyhow::Ok(weights),
                        Control::Error { reason } => bail!("{} refused the plan: {reason}", names[pos]),
                        other => bail!("{} answered the plan with {other:?}", names[pos]),
                    }
                };
                need[pos - 1] = answer.await.map_err(lost(&addrs[pos - 1]))?;
            }
            // Every worker at once, each over its own link: one after another,
            // the last waited for the others' transfers and could time out.
            let sends = ring.iter_mut().enumerate().filter(|(j, _)| need[*j]).map(|(j, p)| {
                let (windows, name) = (&plan.windows[j + 1], &names[j + 1]);
                async move {
                    let t = Instant::now();
                    let bytes = weights::send(&mut p.link, g, windows, name).await.map_err(lost(&p.addr))?;
                    let secs = t.elapsed().as_secs_f64();
                    eprintln!("sent {:.1} MB of layers to {name} in {secs:.1} s", bytes as f64 / 1e6);
                    anyhow::Ok(())
                }
            });
            futures_util::future::try_join_all(sends).await?;
            for pos in 1..n {
                let p = &mut ring[pos - 1];
                let ready = match read_control(&mut p.link, &mut p.dec, &names[pos]).await {
                    Ok(Control::Ready) => Ok(()),
                    Ok(Control::Error { reason }) => Err(anyhow!("{}: {reason}", names[pos])),
                    Ok(other) => Err(anyhow!("{} sent {other:?} instead of Ready", names[pos])),
                    Err(e) => Err(e),
                };
                ready.map_err(lost(&p.addr))?;
            }
            anyhow::Ok(())
        })?;

        let (tx, rx) = mpsc::channel();
        let mut outs = Vec::new();
        let mut pred = None;
        for (j, mut p) in ring.into_iter().enumerate() {
            let pos = j + 1;
            let (out, reader) = p.link.into_std(opts.peer_timeout)?;
            outs.push(out);
            if pos == n - 1 {
                reader.socket().set_read_timeout(Some(POLL))?;
                pred = Some((reader, p.dec.take_buffered()));
            } else {
                conn::spawn_control_reader(reader, pos, p.dec, tx.clone());
            }
        }
        let (pred_link, pending) = pred.ok_or_else(|| anyhow!("a ring needs a worker"))?;
        let c = &model.config;
        let mut node = Node::new(0, plan.clone(), c.n_embd, opts.act, opts.peer_timeout.as_micros() as u64);
        node.handle_bytes(0, &pending);
        let now = Instant::now();
        let driver = Driver {
            node,
            pred: n - 1,
            pred_link,
            inbound: rx,
            succ: outs[0].clone(),
            epoch: now,
            heard: (0..n).map(|i| (i > 0).then_some(now)).collect(),
            peer_timeout: opts.peer_timeout,
            times: Times::default(),
            names,
            is_head: true,
            stats_to: None,
            peer_times: vec![Times::default(); n],
        };
        let memory = layer_memory(opts.head_profile.as_ref(), &cost, &opts.run_shape(), true, opts.beside);
        let stream = stream::open(file, g, &model.parts, &memory, "the head")?;
        residency[0].0 = stream.resident_count();
        let layers = LocalLayers {
            model,
            kv: (0..opts.slots)
                .map(|_| KvCache::with_type(model.parts.windows.clone(), opts.n_ctx, c.kv_dim(), opts.kv))
                .collect(),
            ws: Workspace::default(),
            pool,
            stream,
            gpu,
        };
        Ok(Ring {
            driver,
            layers,
            addrs,
            outs,
            plan,
            prediction,
            decode_from: None,
            decode_steps: 0,
            seq: 0,
            pos: vec![0; opts.slots],
            n_ctx: opts.n_ctx,
            n_batch: 512,
            hidden: Vec::new(),
            residency,
        })
    }
}

/// Most rounds per token: the capacity of `Control::Plan`'s window list.
const MAX_ROUNDS: usize = 64;

/// How long a head waits for a worker that is still closing its last ring.
const BUSY_WAIT: Duration = Duration::from_secs(5);

async fn hello(addr: &str, profile: Option<DeviceProfile>, key: Option<&RingKey>) -> anyhow::Result<Peer> {
    let start = Instant::now();
    loop {
        match try_hello(addr, profile.clone(), key).await {
            Err(e) if e.to_string().contains(BUSY) && start.elapsed() < BUSY_WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn try_hello(addr: &str, profile: Option<DeviceProfile>, key: Option<&RingKey>) -> anyhow::Result<Peer> {
    let mut link = Link::connect(addr, key, HANDSHAKE_TIMEOUT).await.map_err(|e| reach_error(addr, e))?;
    let profile = profile.unwrap_or_else(placeholder_profile);
    send_control(&mut link, &Control::Hello { profile }, addr).await?;
    let mut dec = FrameDecoder::default();
    match read_control(&mut link, &mut dec, addr).await? {
        Control::Hello { profile } => Ok(Peer { addr: addr.to_string(), link, dec, profile }),
        Control::Error { reason } => bail!("worker {addr} refused: {reason}"),
        other => bail!("worker {addr} answered with {other:?} instead of Hello"),
    }
}

/// Why a worker could not be reached: the network, or the secure handshake
/// (a refusal, or a worker that does not hold the ring's key).
fn reach_error(addr: &str, e: std::io::Error) -> anyhow::Error {
    let link = e.get_ref().and_then(|inner| inner.downcast_ref::<crate::link::LinkError>());
    match link {
        Some(crate::link::LinkError::Refused(why)) => anyhow!("worker {addr} refused: {why}"),
        Some(crate::link::LinkError::WrongKey) => {
            anyhow!("worker {addr}: authentication failed: it does not hold this ring's key")
        }
        _ => anyhow::Error::new(e).context(format!("cannot reach worker {addr}")),
    }
}

/// The head's Hello when it did not profile itself (fixed windows).
fn placeholder_profile() -> DeviceProfile {
    DeviceProfile { version: PROFILE_VERSION, name: "head".try_into().unwrap_or_default(), ..Default::default() }
}

/// A ring session's id: random, so no peer can guess it and join a ring
/// as a predecessor.
fn session_id() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no randomness for a session id: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

/// A running ring, evaluated from the head like a single-device session.
pub struct Ring<'m, 'a> {
    driver: Driver,
    layers: LocalLayers<'m, 'a>,
    /// The workers' addresses in ring order (position 1 first).
    pub addrs: Vec<String>,
    outs: Vec<LinkWriter>,
    pub plan: RingPlan,
    /// Halda's plan and its prediction, when Halda planned.
    pub prediction: Option<halda::Plan>,
    /// Every device's times when the first one-token eval began, so decode
    /// can be told apart from the prompt.
    decode_from: Option<Vec<Times>>,
    decode_steps: usize,
    seq: u32,
    /// Each slot's next position.
    pos: Vec<usize>,
    /// Each slot's context.
    n_ctx: usize,
    /// Largest number of tokens sent round the ring at once.
    pub n_batch: usize,
    hidden: Vec<f32>,
    /// Per ring position: layers kept resident, and layers held.
    residency: Vec<(usize, usize)>,
}

/// One device's share of the work so far.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub name: String,
    pub layers: Vec<Range<usize>>,
    /// Everything so far, prompt included.
    pub times: Times,
    /// Per one-token eval (decode step), when there were any.
    pub per_decode_step: Option<Times>,
    /// Halda's per-token prediction for this device, when Halda planned.
    pub predicted: Option<halda::DeviceTime>,
    /// Layers it keeps resident (the rest stream from disk), and layers it holds.
    pub resident_layers: usize,
    pub held_layers: usize,
}

/// Part of a step sent round the ring in one pass: `tokens` of `slot`, of
/// which the last `rows` need logits.
struct Piece<'t> {
    slot: usize,
    tokens: &'t [u32],
    rows: usize,
}

/// Splits `steps` into passes of at most `n_batch` tokens, in order: steps
/// share a pass while they fit, and a step longer than `n_batch` goes in
/// chunks of its own. Each step's logits thus come out in step order.
fn passes<'t>(steps: &[SlotStep<'t>], n_batch: usize) -> Vec<Vec<Piece<'t>>> {
    let n_batch = n_batch.max(1);
    let mut passes: Vec<Vec<Piece<'t>>> = vec![Vec::new()];
    let mut filled = 0;
    for s in steps {
        let mut at = 0;
        for chunk in s.tokens.chunks(n_batch) {
            if filled + chunk.len() > n_batch {
                passes.push(Vec::new());
                filled = 0;
            }
            at += chunk.len();
            // The step's last `rows` tokens that fall in this chunk.
            let rows = chunk.len().min((at + s.rows).saturating_sub(s.tokens.len()));
            let piece = Piece { slot: s.slot, tokens: chunk, rows };
            match passes.last_mut() {
                Some(pass) => pass.push(piece),
                None => passes.push(vec![piece]),
            }
            filled += chunk.len();
        }
    }
    passes.retain(|p| !p.is_empty());
    passes
}

impl Ring<'_, '_> {
    /// Sequences carried at once.
    pub fn slots(&self) -> usize {
        self.pos.len()
    }

    /// One-token evals (decode steps) so far.
    pub fn decode_steps(&self) -> usize {
        self.decode_steps
    }

    /// Starts a new sequence in `slot` at position 0. The devices' caches
    /// need no message: attention reads only the positions before each
    /// token, and evaluating from 0 again overwrites the old ones.
    pub fn clear(&mut self, slot: usize) {
        self.pos[slot] = 0;
    }

    /// Takes `slot` back to position `pos` (never forward); as with
    /// [`Self::clear`], the devices need no message.
    pub fn truncate(&mut self, slot: usize, pos: usize) {
        self.pos[slot] = self.pos[slot].min(pos);
    }

    /// Between requests: see [`Driver::idle`].
    pub fn idle(&mut self) -> anyhow::Result<()> {
        self.driver.idle()
    }

    /// Appends each step's tokens to its slot and returns the logits of each
    /// step's last `rows` tokens, as [`crate::forward::Evaluate::step`] says.
    /// The slots' tokens travel round the ring together.
    pub fn step(&mut self, steps: &[SlotStep<'_>]) -> anyhow::Result<Vec<f32>> {
        let model = self.layers.model;
        let c = &model.config;
        check_steps(steps, self.pos.len())?;
        if let Some(s) = steps.iter().find(|s| self.pos[s.slot] + s.tokens.len() > self.n_ctx) {
            bail!(
                "context overflow: {} tokens do not fit a context of {}",
                self.pos[s.slot] + s.tokens.len(),
                self.n_ctx
            );
        }
        let decoding = !steps.is_empty() && steps.iter().all(|s| s.tokens.len() == 1);
        if decoding {
            if self.decode_from.is_none() {
                self.driver.drain_inbound()?;
                self.decode_from = Some(self.all_times());
            }
            self.decode_steps += 1;
        }
        // A later request's prompt: its time is not a decode step's.
        let prompt_from = (!decoding && self.decode_from.is_some())
            .then(|| self.driver.drain_inbound().map(|()| self.all_times()))
            .transpose()?;
        let mut logits = Vec::new();
        for pass in passes(steps, self.n_batch) {
            let n_tokens: usize = pass.iter().map(|p| p.tokens.len()).sum();
            self.hidden.clear();
            self.hidden.resize(n_tokens * c.n_embd, 0.0);
            let mut at = 0;
            let mut spans = Spans::new();
            for p in &pass {
                model.embed(p.tokens, &mut self.hidden[at * c.n_embd..(at + p.tokens.len()) * c.n_embd])?;
                at += p.tokens.len();
                let span = Span { slot: p.slot as u16, pos0: self.pos[p.slot] as u32, n_tokens: p.tokens.len() as u32 };
                spans.push(span).map_err(|_| anyhow!("more than {MAX_SLOTS} sequences in one pass"))?;
            }
            self.seq = self.seq.wrapping_add(1);
            let now = self.driver.epoch.elapsed().as_micros() as u64;
            self.driver.node.submit(now, self.seq, spans, std::mem::take(&mut self.hidden));
            let hidden = match self.driver.run(&mut self.layers)? {
                Step::Output { seq, hidden } if seq == self.seq => hidden,
                Step::Output { seq, .. } => bail!("batch {seq} came back while {} was due", self.seq),
                Step::Ended(why) => bail!("the ring ended: {why}"),
            };
            // The rows that need logits, gathered.
            let mut rows = Vec::new();
            let mut end = 0;
            for p in &pass {
                self.pos[p.slot] += p.tokens.len();
                end += p.tokens.len();
                rows.extend_from_slice(&hidden[(end - p.rows) * c.n_embd..end * c.n_embd]);
            }
            self.hidden = hidden;
            if rows.is_empty() {
                continue;
            }
            let start = logits.len();
            logits.resize(start + rows.len() / c.n_embd * c.n_vocab, 0.0);
            let (ws, pool) = (&mut self.layers.ws, self.layers.pool);
            // The output head is the head's compute too (Halda's prediction counts it).
            let t = Instant::now();
            pool.enter(|| model.output(&rows, &mut logits[start..], ws, pool)).map_err(anyhow::Error::from)?;
            self.driver.times.compute += t.elapsed();
        }
        if let Some(before) = prompt_from {
            self.driver.drain_inbound()?;
            let after = self.all_times();
            let from = self.decode_from.get_or_insert_default();
            for ((f, b), a) in from.iter_mut().zip(before).zip(after) {
                f.compute += a.compute.saturating_sub(b.compute);
                f.network += a.network.saturating_sub(b.network);
                f.disk += a.disk.saturating_sub(b.disk);
            }
        }
        Ok(logits)
    }

    /// Where each device's time went (workers report every half second).
    pub fn report(&self) -> Vec<DeviceReport> {
        let now = self.all_times();
        (0..self.plan.devices())
            .map(|i| DeviceReport {
                name: self.driver.names[i].clone(),
                layers: self.plan.windows[i].clone(),
                times: now[i],
                per_decode_step: self.decode_from.as_ref().filter(|_| self.decode_steps > 0).map(|from| {
                    let n = self.decode_steps as u32;
                    let d = |a: Duration, b: Duration| a.saturating_sub(b) / n;
                    Times {
                        compute: d(now[i].compute, from[i].compute),
                        network: d(now[i].network, from[i].network),
                        disk: d(now[i].disk, from[i].disk),
                    }
                }),
                predicted: self.prediction.as_ref().and_then(|p| p.times.get(i).copied()),
                resident_layers: self.residency[i].0,
                held_layers: self.residency[i].1,
            })
            .collect()
    }

    /// Halda's predicted seconds per token, when Halda planned.
    pub fn predicted_tpot(&self) -> Option<f64> {
        self.prediction.as_ref().map(|p| p.tpot_s)
    }

    fn all_times(&self) -> Vec<Times> {
        let d = &self.driver;
        (0..self.plan.devices()).map(|i| if i == 0 { d.times } else { d.peer_times[i] }).collect()
    }
}

impl Drop for Ring<'_, '_> {
    fn drop(&mut self) {
        if let Ok(stop) = encode_control(&Control::Stop { reason: conn::reason("the head finished") }) {
            for o in &self.outs {
                let _ = o.send(&stop);
            }
        }
        // Ends the threads watching the workers' control streams.
        for o in &self.outs {
            o.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pass holds at most `n_batch` tokens, the pieces run in step
    /// order, and each step gets exactly the rows it wants, from its end.
    #[test]
    fn passes_keep_step_order_and_each_steps_last_rows() {
        let (a, b, c) = (vec![1; 3], vec![2; 700], vec![3; 1]);
        let steps = [
            SlotStep { slot: 0, tokens: &a, rows: 1 },
            SlotStep { slot: 2, tokens: &b, rows: 300 },
            SlotStep { slot: 5, tokens: &c, rows: 1 },
        ];
        let got = passes(&steps, 512);
        let shape: Vec<Vec<(usize, usize, usize)>> =
            got.iter().map(|p| p.iter().map(|x| (x.slot, x.tokens.len(), x.rows)).collect()).collect();
        assert_eq!(shape, [vec![(0, 3, 1)], vec![(2, 512, 112)], vec![(2, 188, 188), (5, 1, 1)]]);
        // Decode steps share one pass.
        let one = [7u32];
        let decode: Vec<SlotStep<'_>> = (0..8).map(|slot| SlotStep { slot, tokens: &one, rows: 1 }).collect();
        assert_eq!(passes(&decode, 512).len(), 1);
        // Rows wanted: none, and every token of a chunked step.
        assert!(passes(&[SlotStep { slot: 0, tokens: &b, rows: 0 }], 512).iter().flatten().all(|p| p.rows == 0));
        let all = passes(&[SlotStep { slot: 0, tokens: &b, rows: 700 }], 512);
        assert!(all.iter().flatten().all(|p| p.rows == p.tokens.len()));
    }
}
