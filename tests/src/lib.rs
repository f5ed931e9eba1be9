//! Shared helpers for prima-rs's integration tests: where the real model and
//! the reference engine's outputs live, and how to run a model in-process.

use prima_core::kernels::Kernels;
use prima_core::{Gguf, KvType, Model, Session, Want};
use prima_host::mapped::MappedFile;
use prima_host::pool::Pool;
use serde_json::Value;
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `../shared/reference` next to the checkout, or `$PRIMA_REFERENCE_DIR`.
pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("PRIMA_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference"));
    assert!(
        dir.join("README.md").exists(),
        "reference outputs not found at {} (set PRIMA_REFERENCE_DIR)",
        dir.display()
    );
    dir
}

/// The SmolLM2 test model fetched by `scripts/setup.sh`, or `$PRIMA_TEST_MODEL`.
pub fn smollm2_path() -> PathBuf {
    let p = std::env::var_os("PRIMA_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(p.exists(), "test model not found at {}: run scripts/setup.sh first", p.display());
    p
}

/// Gemma3-270M Q4_K_M (`scripts/setup.sh` fetches it), or `$PRIMA_TEST_GEMMA`.
pub fn gemma3_path() -> PathBuf {
    let p = std::env::var_os("PRIMA_TEST_GEMMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/models/gemma-3-270m-q4_k_m.gguf"));
    assert!(p.exists(), "Gemma 3 model not found at {}: run scripts/setup.sh first", p.display());
    p
}

pub fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("an id array").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

pub fn pool() -> Pool {
    Pool::new(2).expect("thread pool")
}

/// Teacher-forced logits (one row of `n_vocab` per position) for `seq`.
pub fn teacher_forced(file: &MappedFile, seq: &[u32], kernels: Kernels, pool: &Pool) -> (Vec<f32>, usize) {
    teacher_forced_kv(file, seq, kernels, KvType::F16, pool)
}

/// [`teacher_forced`] with a KV cache of `kv_type`.
pub fn teacher_forced_kv(
    file: &MappedFile,
    seq: &[u32],
    kernels: Kernels,
    kv_type: KvType,
    pool: &Pool,
) -> (Vec<f32>, usize) {
    let g = Gguf::parse(file.bytes()).expect("valid GGUF");
    let model = Model::load(&g, kernels).expect("model loads");
    let mut s = Session::with_kv_type(&model, 512, kv_type);
    let logits = s.eval(seq, Want::All, pool).expect("eval");
    (logits, model.config.n_vocab)
}

/// Differences between our logits and one reference engine's top-10 lists.
#[derive(Debug, Default)]
pub struct Agreement {
    pub positions: usize,
    pub top1_agree: usize,
    /// Positions whose reference top-1/top-2 margin is at least the threshold.
    pub confident: usize,
    pub confident_agree: usize,
    pub abs_dlogit_sum: f64,
    pub abs_dlogit_max: f64,
    pub n_logits: usize,
}

impl Agreement {
    /// Adds one position: `row` is ours, `top10` the reference's `[id, logit]` list.
    pub fn add(&mut self, row: &[f32], top10: &[Value], margin_threshold: f64) {
        let refs: Vec<(usize, f64)> =
            top10.iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap())).collect();
        let ours = prima_core::sampler::argmax(row) as usize;
        self.positions += 1;
        self.top1_agree += usize::from(ours == refs[0].0);
        if refs[0].1 - refs[1].1 >= margin_threshold {
            self.confident += 1;
            self.confident_agree += usize::from(ours == refs[0].0);
        }
        for &(id, logit) in &refs {
            let d = (row[id] as f64 - logit).abs();
            self.abs_dlogit_sum += d;
            self.abs_dlogit_max = self.abs_dlogit_max.max(d);
            self.n_logits += 1;
        }
    }

    pub fn mean_abs_dlogit(&self) -> f64 {
        self.abs_dlogit_sum / self.n_logits.max(1) as f64
    }
}

/// Whether the test binaries run under an emulator (`PRIMA_TEST_RUNNER`),
/// where every token costs about 20 times more: tests whose logic does not
/// depend on the CPU run a smaller sample there.
pub fn emulated() -> bool {
    std::env::var_os("PRIMA_TEST_RUNNER").is_some()
}

/// A command for a program built for the test target. When the target's
/// binaries need an emulator (aarch64 under qemu-user in CI), the
/// `PRIMA_TEST_RUNNER` environment variable names it, with its arguments.
pub fn target_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let runner = std::env::var("PRIMA_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut c = std::process::Command::new(emulator);
            c.args(words).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// The C compiler for the test target: `PRIMA_TEST_CC`, else `cc`.
pub fn target_cc() -> std::process::Command {
    std::process::Command::new(std::env::var("PRIMA_TEST_CC").unwrap_or_else(|_| "cc".into()))
}

/// The address a `prima worker` child (spawned with piped stderr) listens
/// on, read from its log; the rest of the log is drained on a thread so the
/// worker never blocks on a full pipe.
pub fn worker_address(child: &mut std::process::Child) -> String {
    worker_address_and_log(child).0
}

/// [`worker_address`], and the worker's log lines as they come.
pub fn worker_address_and_log(
    child: &mut std::process::Child,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("the worker's stderr is piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = loop {
        let line = lines.next().expect("worker exited before listening").unwrap();
        log.lock().unwrap().push(line.clone());
        if let Some(a) = line.strip_prefix("prima worker listening on ") {
            break a.to_string();
        }
    };
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
    (addr, log)
}

/// A new empty directory for one test, unique within this process.
pub fn scratch_dir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("prima-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
