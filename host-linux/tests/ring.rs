//! Rings of real `prima worker` processes on loopback: a ring must give
//! exactly the tokens and logits of one device, and a dead or hostile peer
//! must end the run with an error that names it.

mod common;

use common::{is_root, prima, ring_flag, saved_profile, Worker};
use prima_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn generate(model: &Path, prompt: &str, ring: Option<(&[Worker], &str)>) -> Vec<u32> {
    let mut cmd = prima();
    cmd.args(["run", "-m"]).arg(model).args(["-p", prompt, "-n", "24", "--temp", "0", "-t", "1", "--json"]);
    if let Some((workers, windows)) = ring {
        cmd.args(["--ring", &ring_flag(workers), "--layer-window", windows]);
    }
    ids(&json_of(&mut cmd)["generated_ids"])
}

fn logits(model: &Path, ids: &[u32], ring: Option<(&[Worker], &str)>) -> String {
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut cmd = prima();
    cmd.args(["logits", "-m"]).arg(model).args(["--ids", &list.join(","), "-t", "1", "--json"]);
    if let Some((workers, windows)) = ring {
        cmd.args(["--ring", &ring_flag(workers), "--layer-window", windows]);
    }
    json_of(&mut cmd).to_string()
}

#[test]
fn rings_of_two_to_four_processes_match_one_device_on_smollm2() {
    let model = smollm2_path();
    // (workers, windows): k = 1, 1, 2 and 6 rounds per token; under an
    // emulator one and six rounds, on one prompt.
    let (layouts, prompts): (&[(usize, &str)], &[&str]) = if emulated() {
        (&[(2, "10,10,10"), (2, "2,2,1")], &["The capital of France is"])
    } else {
        (
            &[(1, "15,15"), (2, "10,10,10"), (3, "3,4,5,3"), (2, "2,2,1")],
            &["The capital of France is", "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n"],
        )
    };
    let n_workers = layouts.iter().map(|l| l.0).max().unwrap();
    let workers: Vec<Worker> = (0..n_workers).map(|_| Worker::start()).collect();
    for &prompt in prompts {
        let alone = generate(&model, prompt, None);
        let alone_logits = logits(&model, &alone, None);
        for &(n, windows) in layouts {
            let ring = Some((&workers[..n], windows));
            assert_eq!(generate(&model, prompt, ring), alone, "tokens differ on {} devices, windows {windows}", n + 1);
            assert_eq!(
                logits(&model, &alone, ring),
                alone_logits,
                "logits differ on {} devices, windows {windows}",
                n + 1
            );
        }
    }
}

#[test]
fn rings_match_one_device_on_synthetic_llama_and_qwen2() {
    let layouts: &[(usize, &str)] =
        if emulated() { &[(2, "1,2,1")] } else { &[(1, "1,1"), (2, "1,2,1"), (3, "1,1,1,1")] };
    let workers: Vec<Worker> = (0..layouts.iter().map(|l| l.0).max().unwrap()).map(|_| Worker::start()).collect();
    for stem in ["synth-llama-Q8_0", "synth-qwen2-Q4_K", "synth-qwen2-F16"] {
        let model = reference_dir().join("models").join(format!("{stem}.gguf"));
        let fixture = read_json(reference_dir().join("synthetic").join(format!("{stem}.json")));
        for prompt in fixture["prompts"].as_array().unwrap() {
            let prompt = ids(prompt);
            let alone = logits(&model, &prompt, None);
            for &(n, windows) in layouts {
                let got = logits(&model, &prompt, Some((&workers[..n], windows)));
                assert_eq!(got, alone, "{stem}: logits differ on {} devices, windows {windows}", n + 1);
            }
        }
    }
}

#[test]
fn auto_windows_profile_every_device_and_keep_the_tokens() {
    let model = smollm2_path();
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start()).collect();
    let prompt = "The capital of France is";
    let out = prima()
        .args(["run", "-m"])
        .arg(&model)
        .args([
            "-p",
            prompt,
            "-n",
            "24",
            "--temp",
            "0",
            "-t",
            "1",
            "--json",
            "--verbose",
            "--ring",
            &ring_flag(&workers),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "auto ring failed: {err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&json["generated_ids"]), generate(&model, prompt, None));
    // The head checked its profile against the model's layer, and Halda
    // planned with all three profiles (the workers' with their links).
    assert!(err.contains("layer check: this model's layer 0 takes"), "{err}");
    assert!(err.contains("Halda: devices"), "{err}");
    assert_eq!(err.matches("link to the head").count(), 2, "{err}");
}

/// Devices told to use less memory than their layers need (`--mem`) keep
/// what fits and stream the rest from disk, and the tokens do not change:
/// Halda plans for them instead of refusing, and fixed windows run too.
#[test]
fn streaming_plans_keep_the_tokens() {
    let model = smollm2_path();
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start_with(&["--mem", "35"])).collect();
    let prompt = "The capital of France is";
    let alone = generate(&model, prompt, None);
    let plans: &[&str] = if emulated() { &["auto"] } else { &["auto", "10,10,10"] };
    for windows in plans {
        let out = prima()
            .args(["run", "-m"])
            .arg(&model)
            .args(["-p", prompt, "-n", "24", "--temp", "0", "-t", "1", "--json", "--mem", "60"])
            .args(["--ring", &ring_flag(&workers), "--layer-window", windows])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{windows}: ring failed: {err}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&json["generated_ids"]), alone, "{windows}: {err}");
        assert!(err.contains("from disk"), "{windows}: the head streamed nothing: {err}");
        let devices = json["ring"]["devices"].as_array().unwrap();
        let streamed = devices.iter().filter(|d| d["resident_layers"].as_u64() < d["layers_held"].as_u64()).count();
        assert!(streamed >= 2, "{windows}: {devices:?}");
    }
    // One device alone, short of memory, streams and keeps the tokens too.
    let out = prima()
        .args(["run", "-m"])
        .arg(&model)
        .args(["-p", prompt, "-n", "24", "--temp", "0", "-t", "1", "--json", "--mem", "60"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&json["generated_ids"]), alone, "{err}");
    assert!(err.contains("from disk"), "{err}");
}

/// Two workers on one host sharing a cache directory receive their layers
/// at once without touching each other's files (one's clean-up of stale
/// files used to delete the other's transfer in progress, and then its
/// finished file while it ran), and stale files still leave.
#[test]
fn workers_sharing_a_cache_directory_both_receive_their_layers() {
    if emulated() {
        return; // file handling, the same on every CPU
    }
    let model = smollm2_path();
    let shared = scratch_dir("shared-cache");
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start_in(shared.clone(), &[])).collect();
    let alone = generate(&model, "The capital of France is", None);
    for windows in ["10,10,10", "6,12,12"] {
        let ring = Some((&workers[..], windows));
        assert_eq!(generate(&model, "The capital of France is", ring), alone, "windows {windows}");
    }
    // The first plan's files are stale once its session ended; the second's stay.
    let mut files: Vec<String> = std::fs::read_dir(shared.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let ends: Vec<&str> = files.iter().map(|f| f.split_once('-').map_or(f.as_str(), |(_, rest)| rest)).collect();
    // Each layer file with its SHA-256 beside it.
    assert_eq!(ends, ["18-30.gguf", "18-30.sha256", "6-18.gguf", "6-18.sha256"], "{files:?}");
}

/// A cached layer file changed on disk fails its SHA-256 check before use:
/// the worker says so, removes it and receives it again, and the tokens
/// stay one device's.
#[test]
fn a_damaged_cached_layer_file_is_sent_again() {
    let model = smollm2_path();
    let workers = [Worker::start()];
    let prompt = "The capital of France is";
    let alone = generate(&model, prompt, None);
    let ring = Some((&workers[..], "15,15"));
    assert_eq!(generate(&model, prompt, ring), alone);
    let layers = workers[0].cache.join("layers");
    let files: Vec<_> = std::fs::read_dir(&layers).unwrap().map(|e| e.unwrap().path()).collect();
    let file = files.iter().find(|p| p.extension().is_some_and(|e| e == "gguf")).expect("a cached layer file");
    assert!(files.iter().any(|p| p.extension().is_some_and(|e| e == "sha256")), "no digest beside {files:?}");
    // One byte in the middle of the weights, where a bad sector or another program might change it.
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(file, &bytes).unwrap();
    assert_eq!(generate(&model, prompt, ring), alone);
    let log = workers[0].log.lock().unwrap().join("\n");
    assert!(log.contains("SHA-256 does not match"), "{log}");
    assert_eq!(log.matches("receiving layers").count(), 2, "{log}");
    assert_eq!(std::fs::read(file).unwrap()[mid], bytes[mid] ^ 0x5a, "the file was not sent again");
}

/// Drops `path` from the page cache, so the next reads come from storage.
fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// The head of a ring reads from disk only what it runs: its layers, the
/// output head (here the tied embedding) and the header, not the whole file
/// (touching each tensor's first bytes for the fingerprint, or copying the
/// norms, used to read megabytes around each touch).
#[test]
fn the_head_reads_only_what_it_runs() {
    if emulated() {
        return; // qemu-user ignores MADV_RANDOM, and its own reads count
    }
    let model = smollm2_path();
    let workers = [Worker::start()];
    let run = || {
        json_of(
            prima()
                .args(["run", "-m"])
                .arg(&model)
                .args(["-p", "Hello", "-n", "4", "--temp", "0", "-t", "1", "--json"])
                .args(["--ring", &ring_flag(&workers), "--layer-window", "3,27"]),
        )
    };
    run(); // ships the worker its layers, reading them
    evict(&model);
    let Some(read) = run()["timings"]["disk_read_mb"].as_f64() else { return }; // no /proc/self/io
    let size = std::fs::metadata(&model).unwrap().len() as f64 / 1e6;
    // 3 of 30 layers (~7 MB), the embedding (~30 MB) and the header: well under half.
    assert!(read < 0.5 * size, "the head read {read:.1} MB of a {size:.1} MB file");
}

#[test]
fn a_killed_worker_is_named_and_left_behind_within_seconds() {
    let mut workers: Vec<Worker> = (0..2).map(|_| Worker::start()).collect();
    let victim = workers[1].addr.clone();
    let mut head = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", "Once upon a time", "-n", "3000", "-c", "3010", "--ignore-eos", "--temp", "0", "-t", "1"])
        .args(["--ring", &ring_flag(&workers), "--layer-window", "10,10,10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until tokens flow, then kill the last worker.
    let mut out = head.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    let (text_tx, text_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut more = [0u8; 512];
        let _ = text_tx.send(out.read_exact(&mut more).is_ok()); // text goes on after the recovery
    });
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let err = head.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    workers[1].child.kill().unwrap();
    let killed = Instant::now();
    // Under an emulator every step of the recovery (a new handshake, 46 MB
    // of layers, the replay) runs about ten times slower.
    let emulated = emulated();
    let (limit, patience) = if emulated { (60, 120) } else { (3, 10) };
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.starts_with("ring: recovered")) {
        match lines_rx.recv_timeout(Duration::from_secs(patience)) {
            Ok(line) => log.push(line),
            Err(_) => panic!("no recovery within {patience} s: {log:?}"),
        }
    }
    let took = killed.elapsed();
    let flowing = text_rx.recv_timeout(Duration::from_secs(patience)).unwrap_or(false);
    let _ = head.kill();
    let _ = head.wait();
    assert!(took < Duration::from_secs(limit), "took {took:?}: {log:?}");
    let lost = log.iter().find(|l| l.starts_with("ring: lost")).expect("the loss is logged");
    assert!(lost.contains("device 2") && lost.contains(&victim), "the log does not name the dead worker: {log:?}");
    assert!(flowing, "text stopped after the recovery");
    drop(workers);
}

#[test]
fn a_hostile_worker_is_refused_by_name() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        // A frame header announcing 4 GiB.
        let _ = s.write_all(b"PR\x00\xff\xff\xff\xff");
        std::thread::sleep(Duration::from_millis(500));
    });
    let out = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", "Hi", "-n", "4", "--ring", &addr, "--layer-window", "15,15"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&addr) && err.contains("exceeds"), "unclear error: {err}");
}

#[test]
fn a_worker_survives_garbage_and_serves_the_next_head() {
    let workers = [Worker::start()];
    for garbage in [&b"PR\x07\x00\x00\x00\x00"[..], b"PR\x00\x03\x00\x00\x00abc", b"\x01\xff\xff\xff\xff"] {
        let mut s = TcpStream::connect(&workers[0].addr).unwrap();
        s.write_all(garbage).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
    }
    let model = smollm2_path();
    let alone = generate(&model, "The capital of France is", None);
    assert_eq!(generate(&model, "The capital of France is", Some((&workers, "15,15"))), alone);
}

#[test]
fn bad_ring_flags_are_named() {
    let workers = [Worker::start()];
    for (windows, needle) in
        [("10,10,10", "3 windows for 2 devices"), ("7,7", "whole number of rounds"), ("x,1", "not a layer count")]
    {
        let out = prima()
            .args(["run", "-m"])
            .arg(smollm2_path())
            .args(["-p", "Hi", "-n", "4", "--ring", &workers[0].addr, "--layer-window", windows])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{windows}: {err}");
    }
    let out =
        prima().args(["run", "-m"]).arg(smollm2_path()).args(["-p", "Hi", "--ring", "127.0.0.1:1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot reach worker 127.0.0.1:1"), "{err}");
}

#[test]
fn a_worker_refuses_a_context_whose_cache_exceeds_its_memory() {
    // 15 layers × 100001 positions of f16 keys and values: about 1.1 GB.
    let workers = [Worker::start_with(&["--mem", "200"])];
    let out = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", "Hi", "-n", "100000", "-c", "100010", "-t", "1"])
        .args(["--ring", &workers[0].addr, "--layer-window", "15,15"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("100001-token context") && err.contains("this device has 200 MiB"), "{err}");
}

#[test]
fn gemma3_rings_match_one_device() {
    // Sliding-window and global layers, per-head norms and GELU travel too.
    let model = gemma3_path();
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start()).collect();
    let prompt = [2, 818, 5279, 529, 7001, 563, 506, 5279, 529];
    let alone = logits(&model, &prompt, None);
    // One layout under an emulator, where each takes a minute.
    let layouts = if emulated() { &[(2, "1,2,3")][..] } else { &[(1, "6,12"), (2, "1,2,3")] };
    for &(n, windows) in layouts {
        assert_eq!(logits(&model, &prompt, Some((&workers[..n], windows))), alone, "windows {windows}");
    }
}

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = scratch_dir("small-disk");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_worker_short_of_disk_refuses_the_layers_before_writing() {
    let root = is_root();
    let Some(disk) = root.then(|| SmallDisk::mount(8)).flatten() else {
        eprintln!("skipped: mounting a small disk needs root");
        return;
    };
    // 15 of SmolLM2's layers are about 35 MB; the disk holds 8 MiB.
    // From a saved profile: measuring the disk would not fit either.
    let profile = saved_profile();
    let workers = [Worker::start_in(disk.0.join("cache"), &["--profile", profile.to_str().unwrap()])];
    let out = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", "Hi", "-n", "2", "-t", "1", "--ring", &workers[0].addr, "--layer-window", "15,15"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not fit the") && err.contains("MB free in"), "{err}");
    let left: Vec<_> =
        std::fs::read_dir(disk.0.join("cache/layers")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "a partial layer file was left: {left:?}");
    drop(workers);
}

/// Devices with GPU layers (lavapipe where there is no GPU): the head runs
/// the first 6 of its window there, one worker its whole window, the other
/// splits its window between GPU and CPU; with two rounds each device's
/// GPU layers are the first of each of its windows. The ring keeps the
/// single device's tokens, which are the reference's while its margins
/// hold (all 12 here are at least 2.9).
#[test]
fn devices_with_gpu_layers_keep_the_tokens() {
    let model = smollm2_path();
    let reference = read_json(reference_dir().join("smollm2-q4_1.json"));
    let case = reference["generation"].as_array().unwrap().iter().find(|g| g["prompt"] == "1, 2, 3, 4,").unwrap();
    let want: Vec<u32> =
        case["steps"].as_array().unwrap()[..12].iter().map(|s| s["id"].as_u64().unwrap() as u32).collect();
    let workers = [Worker::start_with(&["-ngl", "10"]), Worker::start_with(&["--n-gpu-layers", "4"])];
    let run_windows = |ring: Option<&[Worker]>, windows: &str| {
        let mut cmd = prima();
        cmd.args(["run", "-m"]).arg(&model).args(["-p", "1, 2, 3, 4,", "-n", "12", "--temp", "0", "-t", "1", "--json"]);
        if let Some(workers) = ring {
            cmd.args(["--ring", &ring_flag(workers), "--layer-window", windows, "-ngl", "6"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        (ids(&serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["generated_ids"]), log)
    };
    let run = |ring| run_windows(ring, "10,10,10");
    assert_eq!(run(None).0, want, "one device");
    let (got, head_log) = run(Some(&workers));
    assert_eq!(got, want, "a ring with GPU layers");
    assert!(head_log.contains("gpu: layers 0..6 run on"), "{head_log}");
    let said = |w: &Worker, what: &str| w.log.lock().unwrap().iter().any(|l| l.contains(what));
    assert!(said(&workers[0], "gpu: layers 10..20 run on"), "{:?}", workers[0].log.lock().unwrap());
    assert!(said(&workers[1], "gpu: layers 20..24 run on"), "{:?}", workers[1].log.lock().unwrap());

    // Two rounds: each device's GPU layers are split between its windows.
    let (got, head_log) = run_windows(Some(&workers), "5,5,5");
    assert_eq!(got, want, "a ring of two rounds with GPU layers");
    for span in ["0..3", "15..18"] {
        assert!(head_log.contains(&format!("gpu: layers {span} run on")), "{head_log}");
    }
    for (w, spans) in workers.iter().zip([["5..10", "20..25"], ["10..12", "25..27"]]) {
        for span in spans {
            assert!(said(w, &format!("gpu: layers {span} run on")), "{span}: {:?}", w.log.lock().unwrap());
        }
    }
}

/// With Halda's windows the plan, not each device, decides how many
/// layers a GPU runs, within the device's own `-ngl`. Both workers' saved
/// profiles claim a GPU 100 times their CPU with 24 MiB of its own: Halda
/// gives each some of its window for the GPU, the worker at `-ngl 99` runs
/// exactly that many there (on lavapipe), the one at `-ngl 2` two, and the
/// ring keeps the single device's tokens.
#[test]
fn halda_plans_the_gpu_layers_each_worker_runs() {
    let mut profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved_profile()).unwrap()).unwrap();
    let types: Vec<serde_json::Value> = profile["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| serde_json::json!({ "ggml_type": t["ggml_type"], "flops": t["flops"].as_f64().unwrap() * 100.0 }))
        .collect();
    profile["gpu"] = serde_json::json!({
        "name": "fast test GPU", "backend": "Vulkan", "vram_total_bytes": 24 << 20, "vram_free_bytes": 24 << 20,
        "types": types, "mem_read_bytes_per_s": profile["mem_read_bytes_per_s"].as_f64().unwrap() * 10.0,
        "unified": false,
    });
    let path = scratch_dir("gpu-profile").join("device.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let with = |name: &str, ngl: &str| {
        Worker::start_with(&["--profile", path.to_str().unwrap(), "--name", name, "--mem", "200", "-ngl", ngl])
    };
    let workers = [with("gpu-all", "99"), with("gpu-two", "2")];
    let mut cmd = prima();
    cmd.args(["run", "-m"]).arg(smollm2_path()).args(["-p", "1, 2, 3, 4,", "-n", "12", "--temp", "0", "-t", "1"]);
    // The head short of memory, so Halda gives the workers layers.
    cmd.args(["--json", "--mem", "60", "--ring", &ring_flag(&workers)]);
    let out = cmd.output().unwrap();
    let head_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{head_log}");
    let got = ids(&serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["generated_ids"]);
    let one = json_of(prima().args(["run", "-m"]).arg(smollm2_path()).args([
        "-p",
        "1, 2, 3, 4,",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "1",
        "--json",
    ]));
    assert_eq!(got, ids(&one["generated_ids"]), "{head_log}");
    // "  gpu-all: ..., GPU fast test GPU 0.002 ms per layer, budget 23 MiB: 10 layers"
    let planned = |name: &str| -> usize {
        let line = head_log.lines().find(|l| l.trim_start().starts_with(&format!("{name}:"))).expect(&head_log);
        let tail = line.rsplit(": ").next().unwrap();
        tail.strip_suffix(" layers").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let ran = |w: &Worker| -> usize {
        let log = w.log.lock().unwrap();
        let spans = log.iter().filter_map(|l| l.strip_prefix("gpu: layers ")).map(|l| {
            let (start, end) = l.split_once(" run on").unwrap().0.split_once("..").unwrap();
            end.parse::<usize>().unwrap() - start.parse::<usize>().unwrap()
        });
        spans.sum()
    };
    let (all, two) = (planned("gpu-all"), planned("gpu-two"));
    assert!(all > 0 && two > 0, "{head_log}");
    assert_eq!(ran(&workers[0]), all, "{:?}", workers[0].log.lock().unwrap());
    assert_eq!(ran(&workers[1]), two.min(2), "{:?}", workers[1].log.lock().unwrap());
}
