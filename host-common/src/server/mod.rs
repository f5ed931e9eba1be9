//! `prima serve`: an OpenAI-compatible HTTP server on one device.
//!
//! Requests are checked ([`api`]), rendered with the model's chat template
//! ([`template`]), and queued for the [`engine`] thread, which decodes up to
//! `--parallel` of them side by side; past the queue's bound a request gets
//! HTTP 503 at once.

pub mod api;
pub mod engine;
mod http;
pub mod template;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Args;
use prima_core::tokenizer::Tokenizer;
use prima_core::{KvType, Model};
use tokio::sync::mpsc;

use crate::cli::draft_args::{draft_bytes, load_draft};
use crate::forward::LocalSlots;
use crate::generate::SessionShape;
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::ring::recover::Resilient;
use engine::Stats;
use template::ChatTemplate;

/// Flags named as llama-server names them.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Path to a GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed when ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Context size in tokens, shared evenly by the slots.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx: usize,
    /// Requests decoded at once (slots); more wait in the queue.
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a slot; past that they get HTTP 503.
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Serve from a ring of workers, as `prima run --ring` runs (`--mem` also
    /// caps memory on one device).
    #[command(flatten)]
    pub(crate) ring: crate::cli::ring_args::RingArgs,
    /// Require `Authorization: Bearer KEY` on /v1 requests.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The model's name in the API (default: the file's name).
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// With `--ring auto`: seconds between looks for new workers on the LAN,
    /// which join between requests (0: never look again).
    #[arg(long = "rediscover", value_name = "SECS", default_value_t = 30.0)]
    pub rediscover: f64,
    /// Layers to run on the GPU, the first ones (llama-server's -ngl; 99:
    /// all); on a ring, the first of the head's windows, and with Halda's
    /// windows at most this many: Halda picks the count.
    #[arg(long = "n-gpu-layers", default_value_t = 0)]
    pub n_gpu_layers: usize,
    /// Which GPU adapter, as `prima devices` numbers them.
    #[arg(long = "gpu-device")]
    pub gpu_device: Option<usize>,
    #[command(flatten)]
    pub(crate) draft: crate::cli::draft_args::DraftArgs,
}

/// What the HTTP handlers share.
pub struct AppState {
    pub model_name: String,
    pub template: ChatTemplate,
    pub tokenizer: Arc<Tokenizer>,
    pub jobs: mpsc::Sender<engine::Job>,
    pub stats: Arc<Stats>,
    pub api_key: Option<String>,
    /// Each slot's context, the longest prompt plus completion served.
    pub slot_ctx: usize,
    pub slots: usize,
    /// This device, and the layers it runs, for the page's cluster view.
    pub device_name: String,
    pub layers: String,
    pub created: u64,
    /// On a ring's head: where `/ring/join` hands the engine a device.
    pub joins: Option<std::sync::mpsc::Sender<String>>,
}

/// What the engine serves, once loaded.
struct Serving {
    slots: usize,
    slot_ctx: usize,
    /// The layers this device runs, for the cluster view.
    layers: String,
    /// Whether this is a ring's head, which devices may ask to join.
    ring: bool,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if a.parallel == 0 || a.queue == 0 {
        anyhow::bail!("--parallel and --queue must be at least 1");
    }
    let slot_ctx = a.ctx / a.parallel;
    if slot_ctx < 16 {
        anyhow::bail!(
            "--ctx-size {} leaves {} tokens to each of {} slots; give at least 16 each",
            a.ctx,
            slot_ctx,
            a.parallel
        );
    }
    let threads = a.threads.unwrap_or_else(Pool::default_threads);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    let file = MappedFile::open(&a.model)?;
    let speculation = a.draft.settings()?;
    let draft_file = a.draft.open()?;
    let (tokenizer, template) = {
        let g = file.gguf()?;
        let tokenizer = Tokenizer::from_gguf(&g).context("cannot load tokenizer")?;
        let special = |key: &str| {
            g.get_u64(key).ok().and_then(|id| tokenizer.token_text(id as u32)).unwrap_or_default().to_owned()
        };
        let (bos, eos) = (special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id"));
        let arch = g.get_str("general.architecture").unwrap_or_default();
        let template = ChatTemplate::new(g.get_str("tokenizer.chat_template").ok(), arch, &bos, &eos)
            .context("the model's chat template does not compile")?;
        (Arc::new(tokenizer), template)
    };
    let model_name = a
        .alias
        .clone()
        .unwrap_or_else(|| a.model.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()));
    let stats = Arc::new(Stats::default());
    let (jobs_tx, jobs_rx) = mpsc::channel(a.queue);
    let pool = Pool::new(threads)?;
    let engine_stats = Arc::clone(&stats);
    let engine_tok = Arc::clone(&tokenizer);
    if !(a.rediscover.is_finite() && a.rediscover >= 0.0) {
        anyhow::bail!("--rediscover must be a number of seconds (0: never)");
    }
    let looking = match a.rediscover > 0.0 {
        true => a.ring.keeps_discovering()?,
        false => None,
    };
    let (parallel, path, ring) = (a.parallel, a.model.clone(), a.ring);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Serving>>();
    let (joins_tx, joins_rx) = std::sync::mpsc::channel::<String>();
    let engine = std::thread::Builder::new().name("prima-engine".into()).spawn(move || {
        let fail = |e: anyhow::Error| drop(ready_tx.send(Err(e.context(format!("cannot serve {}", path.display())))));
        let g = match file.gguf() {
            Ok(g) => g,
            Err(e) => return fail(e),
        };
        let n_vocab = match prima_core::model::Config::from_gguf(&g) {
            Ok(c) => c.n_vocab,
            Err(e) => return fail(e.into()),
        };
        // The draft model runs here, on the head, in slots matching the target's.
        let draft_g = match draft_file.as_ref().map(|f| f.gguf()).transpose() {
            Ok(g) => g,
            Err(e) => return fail(e),
        };
        let draft_model = match draft_g.as_ref().map(|dg| load_draft(dg, n_vocab)).transpose() {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        // What the draft holds (at most `parallel` caches of a slot and a
        // draft each), which the target's memory plan leaves alone.
        let draft_max = speculation.map_or(0, |s| s.max);
        let draft_bytes = match (&draft_file, &draft_g) {
            (Some(f), Some(dg)) => match draft_bytes(f, dg, parallel, slot_ctx + draft_max) {
                Ok(b) => b,
                Err(e) => return fail(e),
            },
            _ => 0,
        };
        let run = |forward: &mut dyn engine::Evaluate, ready: Serving| {
            let slot_ctx = ready.slot_ctx;
            let mut draft = draft_model
                .as_ref()
                .map(|m| LocalSlots::new(m, &pool, (ready.slots, slot_ctx + draft_max, KvType::F16), None));
            let speculating = speculation.map(|settings| engine::Speculating {
                settings,
                draft: draft.as_mut().map(|d| d as &mut dyn engine::Evaluate),
            });
            let _ = ready_tx.send(Ok(ready));
            engine::run(forward, speculating, &engine_tok, slot_ctx, jobs_rx, joins_rx, engine_stats);
        };
        // Every slot's KV cache, and a prompt chunk per slot at most; on a
        // ring the slots' tokens travel together.
        let shape = SessionShape {
            n_ctx: slot_ctx,
            n_batch: engine::PREFILL_CHUNK,
            kv: KvType::F16,
            beside: draft_bytes,
            slots: parallel,
        };
        let models = crate::ring::recover::Models::new();
        let gpu = crate::gpu::GpuChoice { layers: a.n_gpu_layers, device: a.gpu_device };
        match ring.handshake((&file, &g, &path), &shape, gpu, &pool) {
            Err(e) => fail(e),
            Ok(Some(hs)) => match Resilient::new(hs, &models, &file, &pool, &g, shape) {
                Ok(mut forward) => {
                    let devices = engine::Evaluate::devices(&forward).map_or(1, |d| d.len());
                    let layers = format!("a ring of {devices} devices");
                    run(&mut forward, Serving { slots: parallel, slot_ctx, layers, ring: true })
                }
                Err(e) => fail(e),
            },
            Ok(None) => {
                let loaded = crate::gpu::split(&g, gpu, (parallel, slot_ctx)).context("cannot load the model");
                let slots = loaded.and_then(|(model, offload)| {
                    let model: &Model = models.alloc(model);
                    let slots = LocalSlots::planned(model, &file, &g, shape, &pool)?;
                    let slots = match offload {
                        Some(b) => slots.with_offload(b)?,
                        None => slots,
                    };
                    Ok((model, slots))
                });
                match slots {
                    Ok((model, mut forward)) => {
                        let layers = format!("0-{}", model.config.n_layer.saturating_sub(1));
                        run(&mut forward, Serving { slots: parallel, slot_ctx, layers, ring: false })
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })?;
    let serving = ready_rx.recv().map_err(|_| anyhow!("the engine thread ended while loading"))??;
    #[cfg(feature = "discovery")]
    if let (Some((key, wait)), true) = (looking, serving.ring) {
        let every = std::time::Duration::from_secs_f64(a.rediscover);
        crate::ring::discover::keep_looking(key, wait, every, joins_tx.clone());
    }
    #[cfg(not(feature = "discovery"))]
    let _ = looking;
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let state = Arc::new(AppState {
        model_name,
        template,
        tokenizer,
        jobs: jobs_tx,
        stats,
        api_key: a.api_key.clone(),
        slot_ctx: serving.slot_ctx,
        slots: serving.slots,
        device_name: crate::profiler::system::host_name(),
        layers: serving.layers,
        joins: serving.ring.then_some(joins_tx),
        created,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let addr = format!("{}:{}", a.host, a.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "serving {} on http://{local} ({} of {} tokens, chat template: {})",
            state.model_name,
            match state.slots {
                1 => "1 slot".to_owned(),
                n => format!("{n} slots"),
            },
            state.slot_ctx,
            state.template.source
        );
        let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the server failed")
    })?;
    drop(rt);
    engine.join().map_err(|_| anyhow!("the engine thread panicked"))
}
