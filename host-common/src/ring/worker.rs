//! A ring worker: it answers link probes, and serves one ring session at a
//! time: handshake, its layers (from its cache or the head), connections to
//! its ring neighbours, then the compute loop until the ring ends.

use anyhow::{anyhow, bail, Context};
use prima_core::profile::DeviceProfile;
use prima_core::ring::node::{Node, RingPlan};
use prima_core::ring::wire::{encode_control, ActType, Control, FrameDecoder, MAX_SLOTS};
use prima_core::{KvCache, KvType, Model, Parts, Workspace};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::conn::{self, error_frame, read_control, send_control, Inbound, HANDSHAKE_TIMEOUT};
use super::driver::{available_memory, layer_memory, Driver, LocalLayers, Step, POLL};
use super::weights;
use crate::link::{turn_away, Link, LinkWriter, Reader, RingKey, SECURE_MAGIC};
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::profiler::probe;
use crate::stream::{self, run_shape, N_BATCH};
use prima_core::cost::ModelCost;

/// Probe connections served at once.
const MAX_PROBES: usize = 32;
/// Largest context a head may ask a worker to allocate.
const MAX_CTX: u32 = 1 << 20;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub threads: usize,
    pub cache_dir: PathBuf,
    pub profile: DeviceProfile,
    pub peer_timeout: Duration,
    /// With a key, only peers that hold it are served, over secure links.
    pub key: Option<RingKey>,
    /// Announce this worker on the LAN (mDNS) under this name.
    pub announce_as: Option<String>,
    /// The first layers of this worker's window run on a GPU.
    pub gpu: crate::gpu::GpuChoice,
}

/// A predecessor's link, and what was read of it past its `Pred`.
type Joined = (Link, FrameDecoder);

#[derive(Default)]
struct Shared {
    busy: AtomicBool,
    probes: AtomicUsize,
    /// The running session's id and where its predecessor's stream goes.
    pred: Mutex<Option<(u64, oneshot::Sender<Joined>)>>,
}

/// Called once with the address the worker listens on (such as to ask a
/// head to take it in).
pub type OnListening = Box<dyn FnOnce(std::net::SocketAddr) + Send>;

/// Serves on `listen` until the process is stopped.
pub fn serve(listen: &str, cfg: WorkerConfig, on_listening: Option<OnListening>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        eprintln!("prima worker listening on {local}");
        if let Some(tell) = on_listening {
            tell(local);
        }
        let _announcement = announce(&cfg, local);
        let shared = Arc::new(Shared::default());
        let cfg = Arc::new(cfg);
        loop {
            let (s, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("worker: accept failed: {e}");
                    continue;
                }
            };
            let (shared, cfg) = (Arc::clone(&shared), Arc::clone(&cfg));
            tokio::spawn(async move {
                if let Err(e) = handle(s, &shared, &cfg).await {
                    eprintln!("worker: {addr}: {e:#}");
                }
            });
        }
    })
}

async fn handle(s: TcpStream, shared: &Shared, cfg: &WorkerConfig) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut first = [0u8; 1];
    let n =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, s.peek(&mut first)).await.map_err(|_| anyhow!("sent nothing"))??;
    if n == 0 {
        return Ok(()); // closed without a byte: nothing to serve
    }
    let mut link = if first[0] == SECURE_MAGIC {
        Link::respond(s, cfg.key.as_ref(), HANDSHAKE_TIMEOUT).await?
    } else if cfg.key.is_some() {
        let why = "authentication required: this worker serves only peers with its ring key (--key)";
        let mut refusal = Vec::new();
        if first[0] == b'P' {
            refusal = error_frame(why);
        } else {
            probe::write_frame(&mut refusal, probe::ERROR, why.as_bytes())?;
        }
        turn_away(s, &refusal).await;
        bail!("authentication required: a peer connected without the ring key");
    } else {
        Link::plain(s)
    };
    // Ring frames start with `P`; anything else is a link probe.
    let mut read = Vec::new();
    let got = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.read_plain(&mut read)).await;
    if got.map_err(|_| anyhow!("sent nothing"))?? == 0 {
        return Ok(());
    }
    if read[0] != b'P' {
        return serve_probe(link.into_sync(read)?, shared).await;
    }
    let mut dec = FrameDecoder::default();
    dec.push(&read);
    match read_control(&mut link, &mut dec, "peer").await? {
        Control::Hello { .. } => {
            if shared.busy.swap(true, Ordering::SeqCst) {
                refuse(&mut link, conn::BUSY).await;
                return Ok(());
            }
            let r = session(link, dec, shared, cfg).await;
            shared.pred.lock().map_err(|_| anyhow!("poisoned"))?.take();
            shared.busy.store(false, Ordering::SeqCst);
            r
        }
        Control::Pred { session } => {
            let slot = shared.pred.lock().map_err(|_| anyhow!("poisoned"))?.take_if(|p| p.0 == session);
            match slot {
                Some((_, tx)) => {
                    tx.send((link, dec)).map_err(|_| anyhow!("the session ended before its predecessor joined"))
                }
                None => {
                    refuse(&mut link, "no such ring session").await;
                    bail!("a predecessor joined an unknown session")
                }
            }
        }
        other => {
            refuse(&mut link, "expected Hello").await;
            bail!("first message was {other:?}, not Hello")
        }
    }
}

/// Announces the worker by mDNS when asked and built with discovery; a
/// failure only costs discovery, so it is a warning.
#[cfg(feature = "discovery")]
fn announce(cfg: &WorkerConfig, local: std::net::SocketAddr) -> Option<super::discover::Announcement> {
    let name = cfg.announce_as.as_deref()?;
    match super::discover::announce(name, local, cfg.key.as_ref()) {
        Ok(Some(a)) => {
            eprintln!("announced on the LAN as {name} (mDNS, _prima-ring._tcp)");
            Some(a)
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("warning: {e:#}; heads must name this worker's address");
            None
        }
    }
}

#[cfg(not(feature = "discovery"))]
fn announce(_: &WorkerConfig, _: std::net::SocketAddr) -> Option<()> {
    None
}

/// Tells the peer why it is turned away (best effort: the stream is closing).
async fn refuse(s: &mut Link, why: &str) {
    let _ = send_control(s, &Control::Error { reason: conn::reason(why) }, "peer").await;
}

/// Link probes, served on a blocking thread with the probe module's limits.
async fn serve_probe(mut s: crate::link::SyncLink, shared: &Shared) -> anyhow::Result<()> {
    if shared.probes.fetch_add(1, Ordering::SeqCst) >= MAX_PROBES {
        shared.probes.fetch_sub(1, Ordering::SeqCst);
        let _ = probe::write_frame(&mut s, probe::ERROR, b"worker busy: too many connections");
        return Ok(());
    }
    let r = tokio::task::spawn_blocking(move || probe::serve(s)).await;
    shared.probes.fetch_sub(1, Ordering::SeqCst);
    r?
}

/// What a worker is told to do.
struct Assignment {
    session: u64,
    index: usize,
    devices: usize,
    windows: Vec<Range<usize>>,
    next: String,
    act: ActType,
    n_ctx: usize,
    slots: usize,
    kv: KvType,
    model: [u8; 32],
    /// Halda's GPU layers per window, when it planned.
    gpu_layers: Option<usize>,
}

fn assignment(plan: Control) -> anyhow::Result<Assignment> {
    let Control::Plan {
        session,
        index,
        devices,
        k,
        windows,
        next,
        f32_activations,
        n_ctx,
        kv_f32,
        model,
        slots,
        gpu_layers,
    } = plan
    else {
        bail!("expected a plan from the head, got {plan:?}");
    };
    let windows: Vec<Range<usize>> = windows.iter().map(|w| w.start as usize..w.end as usize).collect();
    let sorted = windows.windows(2).all(|w| w[0].end <= w[1].start);
    if index == 0 || index >= devices || windows.len() != k as usize || !sorted || windows.iter().any(|w| w.is_empty())
    {
        bail!("the head's plan is inconsistent (device {index} of {devices}, {k} rounds, windows {windows:?})");
    }
    if n_ctx == 0 || n_ctx > MAX_CTX {
        bail!("the head asked for a context of {n_ctx} tokens (limit {MAX_CTX})");
    }
    if !(1..=MAX_SLOTS).contains(&(slots as usize)) {
        bail!("the head asked for {slots} sequences at once (1 to {MAX_SLOTS})");
    }
    Ok(Assignment {
        session,
        index: index as usize,
        devices: devices as usize,
        windows,
        next: next.to_string(),
        act: if f32_activations { ActType::F32 } else { ActType::F16 },
        n_ctx: n_ctx as usize,
        slots: slots as usize,
        kv: if kv_f32 { KvType::F32 } else { KvType::F16 },
        model,
        gpu_layers: gpu_layers.map(usize::from),
    })
}

async fn session(mut s: Link, mut dec: FrameDecoder, shared: &Shared, cfg: &WorkerConfig) -> anyhow::Result<()> {
    send_control(&mut s, &Control::Hello { profile: cfg.profile.clone() }, "the head").await?;
    let a = match read_control(&mut s, &mut dec, "the head").await.and_then(assignment) {
        Ok(a) => a,
        Err(e) => {
            refuse(&mut s, &format!("{e:#}")).await;
            return Err(e);
        }
    };
    let (pred_tx, pred_rx) = oneshot::channel();
    *shared.pred.lock().map_err(|_| anyhow!("poisoned"))? = Some((a.session, pred_tx));
    let path = weights::cache_path(&cfg.cache_dir, &a.model, &a.windows);
    let check = path.clone();
    let cached = tokio::task::spawn_blocking(move || weights::use_cached(&check)).await?;
    send_control(&mut s, &Control::Need { weights: cached.is_none() }, "the head").await?;
    let in_use = match cached {
        Some(held) => held,
        None => {
            eprintln!("worker: receiving layers {:?} into {}", a.windows, path.display());
            match weights::receive(&mut s, &mut dec, &path).await {
                Ok(held) => held,
                Err(e) => {
                    refuse(&mut s, &format!("{e:#}")).await;
                    // The head is still sending: read it out, so it finishes and
                    // reads the reason instead of a reset connection.
                    let mut sink = Vec::new();
                    let drain = async {
                        while matches!(s.read_plain(&mut sink).await, Ok(n) if n > 0) {
                            sink.clear();
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
                    return Err(e);
                }
            }
        }
    };

    let (to_head, head) = s.into_std(cfg.peer_timeout)?;
    let (tx, rx) = mpsc::channel::<Inbound>();
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let (links_tx, links_rx) = mpsc::channel::<Links>();
    // The compute thread loads the layers while the neighbours connect.
    let job = Job {
        path: path.clone(),
        _in_use: in_use,
        windows: a.windows.clone(),
        index: a.index,
        devices: a.devices,
        act: a.act,
        n_ctx: a.n_ctx,
        slots: a.slots,
        kv: a.kv,
        gpu_layers: a.gpu_layers,
        cfg: cfg.clone(),
    };
    let stats_to = to_head.clone();
    let compute = tokio::task::spawn_blocking(move || job.run(rx, links_rx, loaded_tx, stats_to));
    let stop_heartbeat = Arc::new(AtomicBool::new(false));

    let setup = async {
        match loaded_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the compute thread ended while loading"),
        }
        let succ = if a.next.is_empty() {
            to_head.clone()
        } else {
            let mut n = Link::connect(&a.next, cfg.key.as_ref(), HANDSHAKE_TIMEOUT)
                .await
                .with_context(|| format!("cannot reach the next device {}", a.next))?;
            send_control(&mut n, &Control::Pred { session: a.session }, &a.next).await?;
            n.into_std(cfg.peer_timeout)?.0
        };
        let (pred, pending) = if a.index == 1 {
            (head, dec.take_buffered())
        } else {
            let (p, mut p_dec) = tokio::time::timeout(HANDSHAKE_TIMEOUT, pred_rx)
                .await
                .map_err(|_| anyhow!("the previous device did not connect within {HANDSHAKE_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("the previous device did not connect"))?;
            conn::spawn_control_reader(head, 0, std::mem::take(&mut dec), tx.clone());
            (p.into_std(cfg.peer_timeout)?.1, p_dec.take_buffered())
        };
        to_head.send(&encode_control(&Control::Ready).map_err(anyhow::Error::from)?)?;
        conn::spawn_heartbeat(to_head.clone(), Arc::clone(&stop_heartbeat));
        links_tx.send(Links { pred, succ, pending }).map_err(|_| anyhow!("the compute thread ended"))?;
        Ok(())
    };
    let setup = setup.await;
    drop((tx, links_tx));
    if let Err(e) = setup {
        let _ = to_head.send(&error_frame(&format!("{e:#}")));
        to_head.shutdown();
        return Err(e);
    }
    let end = compute.await.map_err(|e| anyhow!("compute thread: {e}"))?;
    stop_heartbeat.store(true, Ordering::Relaxed);
    // Tell the head why the ring ended here, so it can tell a neighbour's
    // failure from this device's.
    let why = match &end {
        Ok(why) => why.clone(),
        Err(e) => format!("{e:#}"),
    };
    let _ = to_head.send(&error_frame(&why));
    to_head.shutdown();
    end.map(|why| eprintln!("worker: ring ended: {why}"))
}

/// A worker's ring connections, handed to the compute thread once set up.
struct Links {
    pred: Reader,
    succ: LinkWriter,
    /// Bytes the handshake read past its last message.
    pending: Vec<u8>,
}

/// The compute side of a session, on its own thread.
struct Job {
    path: PathBuf,
    /// Keeps the layer file from other workers' clean-up while it runs.
    _in_use: weights::InUse,
    windows: Vec<Range<usize>>,
    index: usize,
    devices: usize,
    act: ActType,
    n_ctx: usize,
    slots: usize,
    kv: KvType,
    /// Halda's GPU layers for this device, when it planned.
    gpu_layers: Option<usize>,
    cfg: WorkerConfig,
}

impl Job {
    fn run(
        self,
        inbound: mpsc::Receiver<Inbound>,
        links: mpsc::Receiver<Links>,
        loaded: oneshot::Sender<anyhow::Result<()>>,
        to_head: LinkWriter,
    ) -> anyhow::Result<String> {
        let file = match MappedFile::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                let _ = loaded.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let model = file.gguf().and_then(|g| {
            let cost = ModelCost::from_gguf(&g).map_err(anyhow::Error::from)?;
            let choice = self.cfg.gpu.within(self.gpu_layers);
            let (cpu_windows, gpu) = crate::gpu::split_windows(&g, &self.windows, choice, (self.slots, self.n_ctx));
            let parts = Parts::layers(cpu_windows);
            let model = Model::load_parts(&g, parts, crate::detect_kernels()).map_err(anyhow::Error::from)?;
            Ok((g, model, cost, gpu))
        });
        let (g, model, cost, gpu) = match model {
            Ok(m) => m,
            Err(e) => {
                // A damaged cache file must not poison the next session.
                let _ = std::fs::remove_file(&self.path);
                let e = e.context(format!("cached layer file {} is unusable (removed)", self.path.display()));
                let _ = loaded.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let c = &model.config;
        let cpu_windows = model.parts.windows.clone();
        let kv_bytes = KvCache::bytes_for(&cpu_windows, self.n_ctx, c.kv_dim(), self.kv) * self.slots as u64;
        let available = available_memory(Some(&self.cfg.profile));
        if kv_bytes > available {
            let e = anyhow!(
                "the head asked for a {}-token context for each of {} sequences, whose KV caches here need {} MiB; this device has {} MiB",
                self.n_ctx,
                self.slots,
                kv_bytes >> 20,
                available >> 20
            );
            let _ = loaded.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
        let pool = Pool::new(self.cfg.threads)?;
        let run = run_shape(self.n_ctx * self.slots, N_BATCH, self.kv, self.cfg.threads);
        let memory = layer_memory(Some(&self.cfg.profile), &cost, &run, false, 0);
        let stream = stream::open(&file, &g, &model.parts, &memory, "this worker")?;
        let mut layers = LocalLayers {
            model: &model,
            kv: (0..self.slots)
                .map(|_| KvCache::with_type(cpu_windows.clone(), self.n_ctx, c.kv_dim(), self.kv))
                .collect(),
            ws: Workspace::default(),
            pool: &pool,
            stream,
            gpu,
        };
        let n_layer = c.n_layer;
        let plan = RingPlan::for_device(self.index, self.devices, self.windows.clone(), n_layer)
            .map_err(|_| anyhow!("bad windows {:?} for {n_layer} layers", self.windows))?
            .with_slots(self.slots);
        let mut node = Node::new(self.index, plan, c.n_embd, self.act, self.cfg.peer_timeout.as_micros() as u64);
        let _ = loaded.send(Ok(()));
        let Links { pred, succ, pending } = links.recv().map_err(|_| anyhow!("the ring was not set up"))?;
        pred.socket().set_read_timeout(Some(POLL))?;
        node.handle_bytes(0, &pending);
        let mut names = vec!["the head".to_string()];
        names.extend((1..self.devices).map(|i| format!("device {i}")));
        let mut driver = Driver {
            node,
            pred: self.index - 1,
            pred_link: pred,
            inbound,
            succ,
            epoch: Instant::now(),
            heard: Vec::new(),
            peer_timeout: self.cfg.peer_timeout,
            times: Default::default(),
            names,
            is_head: false,
            stats_to: Some(to_head),
            peer_times: Vec::new(),
        };
        match driver.run(&mut layers)? {
            Step::Ended(why) => Ok(why),
            Step::Output { .. } => bail!("a worker was handed the output stage"),
        }
    }
}
