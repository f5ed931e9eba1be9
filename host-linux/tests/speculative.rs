//! Speculative decoding: at temperature 0 the tokens of plain decoding, on
//! one device and on a loopback ring, with a draft model and with prompt
//! lookup; with sampling, the same distribution as plain sampling.

mod common;

use common::{prima, ring_flag, Server, Worker};
use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use prima_core::{KvType, Model};
use prima_host::generate::{generate, generate_with, GenerateRun, Local, SessionShape, Speculate};
use prima_host::mapped::MappedFile;
use prima_host::pool::Pool;
use prima_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROMPT: &str =
    "<|im_start|>user\nList the days of the week, then list them again in the same order.<|im_end|>\n<|im_start|>assistant\n";

fn run_json(model: &Path, extra: &[&str]) -> Value {
    let mut cmd: Command = prima();
    cmd.args(["run", "-m"]).arg(model).args(["-p", PROMPT, "-n", "48", "--temp", "0", "-t", "2", "--json"]).args(extra);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A smaller, coarser copy of SmolLM2 as the draft: it disagrees now and
/// then, so rejections happen.
fn draft_model(dir: &Path) -> PathBuf {
    let out = dir.join("draft-q4_0.gguf");
    let status =
        prima().args(["quantize".as_ref(), smollm2_path().as_os_str(), out.as_os_str(), "Q4_0".as_ref()]).status();
    assert!(status.unwrap().success());
    out
}

#[test]
fn greedy_speculation_gives_plain_decodings_tokens_on_one_device_and_a_ring() {
    let dir = scratch_dir("speculative");
    let (model, draft) = (smollm2_path(), draft_model(&dir));
    let plain = run_json(&model, &[]);
    let want = &plain["generated_ids"];
    assert_eq!(want.as_array().unwrap().len(), 48);
    let workers = [Worker::start(), Worker::start()];
    let ring = ring_flag(&workers);
    let draft_flag = draft.to_str().unwrap();
    for (mode, extra) in [
        ("lookup", vec!["--lookup"]),
        ("draft model", vec!["--model-draft", draft_flag, "--draft-max", "6"]),
        ("lookup, ring", vec!["--lookup", "--ring", &ring, "--layer-window", "10,10,10"]),
        ("draft model, ring", vec!["-md", draft_flag, "--ring", &ring, "--layer-window", "10,10,10"]),
    ] {
        let got = run_json(&model, &extra);
        assert_eq!(&got["generated_ids"], want, "{mode}: tokens differ from plain decoding");
        let spec = &got["timings"]["speculative"];
        eprintln!("{mode}: {spec}");
        let (drafted, accepted) = (spec["drafted"].as_u64().unwrap(), spec["accepted"].as_u64().unwrap());
        assert!(accepted > 0 && drafted >= accepted, "{mode}: {spec}");
        // Fewer target passes than tokens: that is the point.
        assert!(spec["tokens_per_target_pass"].as_f64().unwrap() > 1.5, "{mode}: {spec}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `prima serve` speculates too: with a draft model on three slots
/// decoding at once, with prompt lookup, and with a draft model on the head
/// of a ring, every reply is plain decoding's text, and the metrics count
/// drafts that stood.
#[test]
fn speculating_servers_reply_as_plain_decoding() {
    let dir = scratch_dir("speculative-serve");
    let draft = draft_model(&dir);
    let draft = draft.to_str().unwrap();
    let questions = [
        "List the days of the week, then list them again in the same order.",
        "Count from one to ten in words, twice.",
        "Name the four seasons, then name them again.",
    ];
    let n = if emulated() { 12 } else { 40 };
    let ask = |server: &Server| -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = questions
                .iter()
                .map(|q| {
                    let req =
                        json!({ "messages": [{ "role": "user", "content": q }], "temperature": 0, "max_tokens": n });
                    s.spawn(move || {
                        let v = server.post("/v1/chat/completions", &req).unwrap();
                        v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let want = ask(&Server::start(&["--parallel", "3"]));
    let check = |mode: &str, flags: &[&str]| {
        let server = Server::start(flags);
        assert_eq!(ask(&server), want, "{mode}: replies differ from plain decoding");
        let drafted = server.metric("prima_draft_tokens_total");
        let accepted = server.metric("prima_draft_tokens_accepted_total");
        eprintln!("{mode}: {accepted} of {drafted} drafts stood");
        assert!(accepted > 0.0 && drafted >= accepted, "{mode}: {accepted} of {drafted} drafts stood");
    };
    check("draft model, 3 slots", &["--parallel", "3", "--model-draft", draft, "--draft-max", "6"]);
    if !emulated() {
        check("lookup, 3 slots", &["--parallel", "3", "--lookup"]);
        let workers = [Worker::start(), Worker::start()];
        let ring = ring_flag(&workers);
        check("draft model, ring", &["-md", draft, "--ring", &ring, "--layer-window", "10,10,10"]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Under `--mem`, the target's memory plan leaves the draft model its
/// weights and cache: where the target alone stays resident, with a draft
/// beside it the two stream parts of their layers, and the tokens stay
/// plain decoding's; on a ring's head as on one device.
#[test]
fn a_draft_models_memory_is_left_out_of_the_targets_plan() {
    let dir = scratch_dir("speculative-memory");
    let draft = draft_model(&dir);
    let run = |extra: &[&str]| {
        let mut cmd: Command = prima();
        cmd.args(["run", "-m"]).arg(smollm2_path()).args(["-p", PROMPT, "-n", "16", "--temp", "0", "-t", "2"]);
        let out = cmd.args(["--json", "--mem", "170"]).args(extra).output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (v["generated_ids"].clone(), stderr.lines().filter(|l| l.contains("streams")).count())
    };
    let (plain, plain_streaming) = run(&[]);
    assert_eq!(plain_streaming, 0, "the target alone fits 170 MiB");
    let (drafted, streaming) = run(&["--model-draft", draft.to_str().unwrap()]);
    assert_eq!(drafted, plain);
    assert_eq!(streaming, 2, "both models stream part of their layers beside each other");

    // A ring's head leaves the draft its memory too (here 130 MiB: its 15
    // layers stay resident alone, and stream beside the draft). Rings run
    // under the emulator in the ring tests.
    if emulated() {
        return std::fs::remove_dir_all(dir).unwrap();
    }
    let worker = Worker::start();
    let ring = ["--ring", &worker.addr, "--layer-window", "15,15"];
    let on_ring = |extra: &[&str]| {
        let mut cmd: Command = prima();
        cmd.args(["run", "-m"]).arg(smollm2_path()).args(["-p", PROMPT, "-n", "16", "--temp", "0", "-t", "2"]);
        let out = cmd.args(["--json", "--mem", "130"]).args(ring).args(extra).output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (v["generated_ids"].clone(), stderr.lines().any(|l| l.contains("the head keeps")))
    };
    assert_eq!(on_ring(&[]), (plain.clone(), false), "the head's layers fit 130 MiB alone");
    assert_eq!(on_ring(&["--model-draft", draft.to_str().unwrap()]), (plain, true));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_speculation_flags_are_named() {
    let dir = scratch_dir("speculative-bad");
    let fail = |extra: &[&str]| {
        let out =
            prima().args(["run", "-m"]).arg(smollm2_path()).args(["-p", "Hi", "-n", "4"]).args(extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    };
    let other_vocab = gemma3_path();
    let err = fail(&["--model-draft", other_vocab.to_str().unwrap()]);
    assert!(err.contains("vocabulary"), "{err}");
    assert!(fail(&["--lookup", "--draft-max", "0"]).contains("--draft-max"));
    assert!(fail(&["--lookup", "--draft-max", "1000000000"]).contains("--draft-max must be from 1 to 256"));
    assert!(fail(&["--lookup", "--model-draft", other_vocab.to_str().unwrap()]).contains("cannot be used with"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The second and third of four tokens sampled after a short prompt (the
/// ones drafts can propose), `n` times with seeds 0..n, plainly or with
/// `draft` (a model file) drafting.
fn sample_pairs(target: &Path, draft: Option<&Path>, n: u64) -> BTreeMap<(u32, u32), usize> {
    let pool = Pool::new(1).unwrap();
    let open = |p: &Path| MappedFile::open(p).unwrap();
    let (tf, df) = (open(target), draft.map(open));
    let (tg, dg) = (tf.gguf().unwrap(), df.as_ref().map(|f| f.gguf().unwrap()));
    let kernels = prima_core::kernels::Kernels::detect();
    let tm = Model::load(&tg, kernels).unwrap();
    let dm = dg.as_ref().map(|g| Model::load(g, kernels).unwrap());
    let tok = Tokenizer::from_gguf(&tg).unwrap();
    let shape = SessionShape { n_ctx: 16, n_batch: 16, kv: KvType::F16, beside: 0, slots: 1 };
    let config = SamplerConfig { temperature: 1.0, top_k: 6, top_p: 1.0, min_p: 0.0, ..Default::default() };
    let prompt = [1, 2, 3, 4];
    let mut counts = BTreeMap::new();
    for seed in 0..n {
        let mut target = Local::new(&tm, &tf, &tg, shape, &pool).unwrap();
        let sampler = SamplerConfig { seed, ..config };
        let ids = match (&dm, &df, &dg) {
            (Some(dm), Some(df), Some(dg)) => {
                let mut d = Local::new(dm, df, dg, shape, &pool).unwrap();
                let speculate = Speculate { draft: Some(&mut d), max: 3, min: 1 };
                let run = GenerateRun { tok: &tok, sampler, prompt: &prompt, n_predict: 4, ignore_eos: true };
                generate_with(&mut target, Some(speculate), run, &mut |_, _| Ok(true)).unwrap().0.ids
            }
            _ => generate(&mut target, &tok, sampler, &prompt, 4, true, &mut |_, _| Ok(true)).unwrap().ids,
        };
        *counts.entry((ids[1], ids[2])).or_insert(0) += 1;
    }
    counts
}

#[test]
fn speculative_sampling_keeps_the_targets_distribution() {
    let dir = scratch_dir("speculative-sampling");
    // Two tiny random models on SmolLM2's vocabulary: the draft disagrees
    // with the target often, so acceptance and replacement both happen.
    let synth = |name: &str, seed: &str| {
        let out = dir.join(name);
        let status = prima()
            .args(["synth", "--like"])
            .arg(smollm2_path())
            .arg("-o")
            .arg(&out)
            .args(["--layers", "1", "--embd", "64", "--ff", "128", "--heads", "2", "--kv-heads", "1", "--type", "Q8_0"])
            .args(["--seed", seed])
            .status();
        assert!(status.unwrap().success());
        out
    };
    let (target, draft) = (synth("target.gguf", "1"), synth("draft.gguf", "2"));
    let n = 3000;
    let plain = sample_pairs(&target, None, n);
    let spec = sample_pairs(&target, Some(&draft), n);
    // Two-sample chi-square over the pairs seen at least 10 times in all.
    let cells: Vec<_> =
        plain.keys().chain(spec.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let (mut chi2, mut dof) = (0.0, 0usize);
    for c in &cells {
        let (a, b) = (*plain.get(c).unwrap_or(&0) as f64, *spec.get(c).unwrap_or(&0) as f64);
        if a + b >= 10.0 {
            chi2 += (a - b).powi(2) / (a + b);
            dof += 1;
        }
    }
    let dof = dof.saturating_sub(1).max(1) as f64;
    // Wilson–Hilferty: the 0.1% critical value of chi-square with `dof` degrees.
    let critical = dof * (1.0 - 2.0 / (9.0 * dof) + 3.09 * (2.0 / (9.0 * dof)).sqrt()).powi(3);
    eprintln!("chi-square {chi2:.1} over {dof} degrees of freedom (critical {critical:.1}); {} pairs", cells.len());
    assert!(dof >= 10.0, "too few pairs to judge: {plain:?}");
    assert!(chi2 < critical, "speculative sampling changed the distribution: chi-square {chi2:.1} ≥ {critical:.1}");
    std::fs::remove_dir_all(dir).unwrap();
}
