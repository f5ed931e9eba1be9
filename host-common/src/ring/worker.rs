//! A ring worker: it answers link probes, and serves one ring session at a
//! time: handshake, its layers (from its cache or the head), connections to
//! its ring neighbours, then the compute loop until the ring ends.

use anyhow::{anyhow, bail, Context};
use prima_core::kernels::Kernels;
use prima_core::profile::DeviceProfile;
use prima_core::ring::node::{Node, RingPlan};
use prima_core::ring::wire::{encode_control, ActType, Control, FrameDecoder};
use prima_core::{KvCache, KvType, Model, Parts, Workspace};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::conn::{self, error_frame, read_control, send_control, Inbound, HANDSHAKE_TIMEOUT};
use super::driver::{layer_bytes, Driver, LocalLayers, Step};
use super::weights;
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::profiler::probe;

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
}

#[derive(Default)]
struct Shared {
    busy: AtomicBool,
    probes: AtomicUsize,
    /// The running session's id and where its predecessor's stream goes.
    pred: Mutex<Option<(u64, oneshot::Sender<TcpStream>)>>,
}

/// Serves on `listen` until the process is stopped.
pub fn serve(listen: &str, cfg: WorkerConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("prima worker listening on {}", listener.local_addr()?);
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

async fn handle(mut s: TcpStream, shared: &Shared, cfg: &WorkerConfig) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut first = [0u8; 1];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, s.peek(&mut first)).await.map_err(|_| anyhow!("sent nothing"))??;
    if first[0] != b'P' {
        return serve_probe(s, shared).await;
    }
    let mut dec = FrameDecoder::default();
    match read_control(&mut s, &mut dec, "peer").await? {
        Control::Hello { .. } => {
            if shared.busy.swap(true, Ordering::SeqCst) {
                send_control(&mut s, &Control::Error { reason: conn::BUSY.try_into().unwrap_or_default() }, "peer")
                    .await?;
                return Ok(());
            }
            let r = session(s, dec, shared, cfg).await;
            shared.pred.lock().map_err(|_| anyhow!("poisoned"))?.take();
            shared.busy.store(false, Ordering::SeqCst);
            r
        }
        Control::Pred { session } => {
            let slot = shared.pred.lock().map_err(|_| anyhow!("poisoned"))?.take_if(|p| p.0 == session);
            match slot {
                Some((_, tx)) => tx.send(s).map_err(|_| anyhow!("the session ended before its predecessor joined")),
                None => {
                    let _ = send_control(
                        &mut s,
                        &Control::Error { reason: "no such ring session".try_into().unwrap_or_default() },
                        "peer",
                    )
                    .await;
                    bail!("a predecessor joined unknown session {session}")
                }
            }
        }
        other => {
            let _ = send_control(
                &mut s,
                &Control::Error { reason: "expected Hello".try_into().unwrap_or_default() },
                "peer",
            )
            .await;
            bail!("first message was {other:?}, not Hello")
        }
    }
}

/// Link probes, served on a blocking thread with the probe module's limits.
async fn serve_probe(s: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let mut s = s.into_std()?;
    s.set_nonblocking(false)?;
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
    kv: KvType,
    model: [u8; 32],
}

fn assignment(plan: Control) -> anyhow::Result<Assignment> {
    let Control::Plan { session, index, devices, k, windows, next, f32_activations, n_ctx, kv_f32, model } = plan
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
    Ok(Assignment {
        session,
        index: index as usize,
        devices: devices as usize,
        windows,
        next: next.to_string(),
        act: if f32_activations { ActType::F32 } else { ActType::F16 },
        n_ctx: n_ctx as usize,
        kv: if kv_f32 { KvType::F32 } else { KvType::F16 },
        model,
    })
}

async fn session(mut s: TcpStream, mut dec: FrameDecoder, shared: &Shared, cfg: &WorkerConfig) -> anyhow::Result<()> {
    send_control(&mut s, &Control::Hello { profile: cfg.profile.clone() }, "the head").await?;
    let a = match read_control(&mut s, &mut dec, "the head").await.and_then(assignment) {
        Ok(a) => a,
        Err(e) => {
            let _ = send_control(&mut s, &error_control(&e), "the head").await;
            return Err(e);
        }
    };
    let (pred_tx, pred_rx) = oneshot::channel();
    *shared.pred.lock().map_err(|_| anyhow!("poisoned"))? = Some((a.session, pred_tx));
    let path = weights::cache_path(&cfg.cache_dir, &a.model, &a.windows);
    let have = path.exists();
    send_control(&mut s, &Control::Need { weights: !have }, "the head").await?;
    if !have {
        eprintln!("worker: receiving layers {:?} into {}", a.windows, path.display());
        if let Err(e) = weights::receive(&mut s, &mut dec, &path).await {
            let _ = tokio::fs::remove_file(path.with_extension("part")).await;
            let _ = send_control(&mut s, &error_control(&e), "the head").await;
            return Err(e);
        }
    }

    let (tx, rx) = mpsc::channel::<Inbound>();
    let (head_rd, head_wr) = s.into_split();
    let to_head = conn::spawn_writer(head_wr, 0, tx.clone());
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let succ_index = (a.index + 1) % a.devices;
    // The compute thread loads the layers while the neighbours connect.
    let (cfg2, path2, windows) = (cfg.clone(), path.clone(), a.windows.clone());
    let (index, devices, act, n_ctx, kv) = (a.index, a.devices, a.act, a.n_ctx, a.kv);
    let (succ_tx, succ_rx) = std::sync::mpsc::channel::<UnboundedSender<Vec<u8>>>();
    let stats_to = to_head.clone();
    let compute = tokio::task::spawn_blocking(move || {
        let job = Job { path: path2, windows, index, devices, act, n_ctx, kv, cfg: cfg2 };
        job.run(rx, succ_rx, loaded_tx, stats_to)
    });

    let setup = async {
        match loaded_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the compute thread ended while loading"),
        }
        let succ = if a.next.is_empty() {
            to_head.clone()
        } else {
            let mut n = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&a.next))
                .await
                .map_err(|_| anyhow!("cannot reach the next device {}: timed out", a.next))?
                .with_context(|| format!("cannot reach the next device {}", a.next))?;
            n.set_nodelay(true)?;
            send_control(&mut n, &Control::Pred { session: a.session }, &a.next).await?;
            let (_rd, wr) = n.into_split();
            conn::spawn_writer(wr, succ_index, tx.clone())
        };
        let _ = succ_tx.send(succ);
        if a.index == 1 {
            conn::spawn_raw_reader(head_rd, 0, dec.take_buffered(), tx.clone());
        } else {
            let p = tokio::time::timeout(HANDSHAKE_TIMEOUT, pred_rx)
                .await
                .map_err(|_| anyhow!("the previous device did not connect within {HANDSHAKE_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("the previous device did not connect"))?;
            let (rd, _wr) = p.into_split();
            conn::spawn_raw_reader(rd, a.index - 1, Vec::new(), tx.clone());
            conn::spawn_control_reader(head_rd, 0, dec, tx.clone());
        }
        to_head.send(encode_control(&Control::Ready).map_err(|e| anyhow!("{e}"))?).ok();
        conn::spawn_heartbeat(to_head.clone());
        Ok(())
    };
    if let Err(e) = setup.await {
        let _ = to_head.send(error_frame(&format!("{e:#}")));
        drop(tx);
        return Err(e);
    }
    drop(tx);
    let end = compute.await.map_err(|e| anyhow!("compute thread: {e}"))?;
    // Tell the head why the ring ended here, so it can tell a neighbour's
    // failure from this device's.
    let why = match &end {
        Ok(why) => why.clone(),
        Err(e) => format!("{e:#}"),
    };
    let _ = to_head.send(error_frame(&why));
    tokio::time::sleep(Duration::from_millis(50)).await;
    end.map(|why| eprintln!("worker: ring ended: {why}"))
}

fn error_control(e: &anyhow::Error) -> Control {
    let text = format!("{e:#}");
    let mut reason = heapless::String::new();
    for c in text.chars() {
        if reason.push(c).is_err() {
            break;
        }
    }
    Control::Error { reason }
}

/// The compute side of a session, on its own thread.
struct Job {
    path: PathBuf,
    windows: Vec<Range<usize>>,
    index: usize,
    devices: usize,
    act: ActType,
    n_ctx: usize,
    kv: KvType,
    cfg: WorkerConfig,
}

impl Job {
    fn run(
        self,
        inbound: mpsc::Receiver<Inbound>,
        succ: mpsc::Receiver<UnboundedSender<Vec<u8>>>,
        loaded: oneshot::Sender<anyhow::Result<()>>,
        to_head: UnboundedSender<Vec<u8>>,
    ) -> anyhow::Result<String> {
        let file = match MappedFile::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                let _ = loaded.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let model = file.gguf().and_then(|g| {
            let parts = Parts::layers(self.windows.clone());
            let model = Model::load_parts(&g, parts, Kernels::detect()).map_err(|e| anyhow!("{e}"));
            model.map(|m| (m, layer_bytes(&g)))
        });
        let (model, layer_bytes) = match model {
            Ok(m) => m,
            Err(e) => {
                // A damaged cache file must not poison the next session.
                let _ = std::fs::remove_file(&self.path);
                let e = e.context(format!("cached layer file {} is unusable (removed)", self.path.display()));
                let _ = loaded.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let pool = Pool::new(self.cfg.threads)?;
        let c = &model.config;
        let held: usize =
            self.windows.iter().flat_map(|w| w.clone()).filter_map(|l| layer_bytes.get(&l)).map(|r| r.len()).sum();
        let budget = crate::profiler::system::memory().map(|m| m.available).unwrap_or(u64::MAX) as f64
            * prima_core::halda::RAM_SHARE;
        let mut layers = LocalLayers {
            model: &model,
            kv: KvCache::with_type(self.windows.clone(), self.n_ctx, c.kv_dim(), self.kv),
            ws: Workspace::default(),
            pool: &pool,
            file: &file,
            layer_bytes,
            release: held as f64 > budget,
        };
        let n_layer = c.n_layer;
        let plan = RingPlan::for_device(self.index, self.devices, self.windows.clone(), n_layer)
            .map_err(|_| anyhow!("bad windows {:?} for {n_layer} layers", self.windows))?;
        let node = Node::new(self.index, plan, c.n_embd, self.act, self.cfg.peer_timeout.as_micros() as u64);
        let _ = loaded.send(Ok(()));
        let succ = succ.recv().map_err(|_| anyhow!("the ring was not set up"))?;
        let mut names = vec!["the head".to_string()];
        names.extend((1..self.devices).map(|i| format!("device {i}")));
        let mut driver = Driver {
            node,
            pred: self.index - 1,
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
