//! `prima serve` as clients use it: real HTTP on loopback against the real
//! model, compared with `prima run`, alone and under concurrent load.

mod common;

use common::{prima, ring_flag, saved_profile, Server, Worker};
use prima_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Under an emulator (CI's aarch64 run) a token costs about 20 times more:
/// tests that only need some tokens ask for fewer there.
fn tokens(native: usize) -> usize {
    if emulated() {
        (native / 4).max(4)
    } else {
        native
    }
}

fn chat(content: &str, max_tokens: usize) -> Value {
    json!({ "messages": [{ "role": "user", "content": content }], "temperature": 0, "max_tokens": max_tokens })
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

/// At temperature 0 a chat completion is `prima run` on the rendered prompt.
#[test]
fn a_chat_completion_is_prima_run_on_the_rendered_prompt() {
    let server = Server::start(&[]);
    let req = chat("What is the capital of France?", 24);
    let prompt = server.post("/apply-template", &req).unwrap()["prompt"].as_str().unwrap().to_owned();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let got = server.post("/v1/chat/completions", &req).unwrap();
    let run = run_json(&prompt, 24);
    assert_eq!(content(&got), run["text"].as_str().unwrap());
    assert_eq!(got["usage"]["prompt_tokens"], run["prompt_ids"].as_array().unwrap().len());
    assert_eq!(got["usage"]["completion_tokens"], run["generated_ids"].as_array().unwrap().len());
    let finish = if run["generated_ids"].as_array().unwrap().len() == 24 { "length" } else { "stop" };
    assert_eq!(got["choices"][0]["finish_reason"], finish);
}

/// `prima run` on one device, as JSON.
fn run_json(prompt: &str, n: usize) -> Value {
    let out = prima()
        .args(["run", "-m"])
        .arg(smollm2_path())
        .args(["-p", prompt, "-n", &n.to_string(), "--temp", "0", "-t", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two workers on loopback (with this machine's saved profile) and a
/// server at the head of their ring, windows 10,10,10, with `extra` flags.
fn ring_server(extra: &[&str]) -> (Vec<Worker>, Server) {
    let profile = saved_profile();
    let profile = profile.to_str().unwrap();
    let workers = vec![Worker::start_with(&["--profile", profile]), Worker::start_with(&["--profile", profile])];
    let ring = ring_flag(&workers);
    let flags = [&["--ring", &ring, "--layer-window", "10,10,10", "--peer-timeout", "5"][..], extra].concat();
    (workers, Server::start(&flags))
}

/// The head of a ring serves (two workers on loopback): its chat completion
/// is one device's `prima run` on the rendered prompt, the cluster view
/// lists the three devices and their layers. When a worker dies while the
/// server waits for requests, the ring is re-planned without it; when it
/// comes back, it is taken back; the replies stay the same throughout.
#[test]
fn a_ring_serves_what_one_device_runs_and_takes_back_a_lost_worker() {
    if emulated() {
        return; // the ring and the server each run under the emulator elsewhere
    }
    let (mut workers, server) = ring_server(&[]);
    let n = tokens(24);
    let req = chat("What is the capital of France?", n);
    let prompt = server.post("/apply-template", &req).unwrap()["prompt"].as_str().unwrap().to_owned();
    let alone = run_json(&prompt, n);
    let got = server.post("/v1/chat/completions", &req).unwrap();
    assert_eq!(content(&got), alone["text"].as_str().unwrap());
    assert_eq!(got["usage"]["completion_tokens"], alone["generated_ids"].as_array().unwrap().len());
    let layers = |v: &Value| -> Vec<String> {
        v["devices"].as_array().unwrap().iter().map(|d| d["layers"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(layers(&server.cluster()), ["0-9", "10-19", "20-29"]);
    // The view is refreshed as the request ends, so shortly after its reply.
    let t = Instant::now();
    while server.cluster()["devices"][1]["compute_s"].as_f64().unwrap() == 0.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no compute time for a worker in {}", server.cluster());
        std::thread::sleep(Duration::from_millis(100));
    }

    let until = |want: &[&str], what: &str| {
        let t = Instant::now();
        while layers(&server.cluster()) != want {
            assert!(t.elapsed() < Duration::from_secs(60), "{what}: {}", server.cluster());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let lost = workers.pop().unwrap();
    let addr = lost.addr.clone();
    drop(lost);
    until(&["0-9", "10-29"], "the idle server did not re-plan without the lost worker");
    let again = server.post("/v1/chat/completions", &req).unwrap();
    assert_eq!(content(&again), content(&got));

    // The worker comes back at its address and is taken back between requests.
    workers.push(Worker::start_at(
        &addr,
        scratch_dir("worker-cache"),
        &["--profile", saved_profile().to_str().unwrap()],
    ));
    until(&["0-9", "10-19", "20-29"], "the worker that came back was not taken back");
    let back = server.post("/v1/chat/completions", &req).unwrap();
    assert_eq!(content(&back), content(&got));
}

/// On a ring the slots' tokens travel round it together: four clients at
/// once each get what they get alone, in far fewer trips than tokens. When
/// a worker is killed while they decode, the ring is re-planned, every
/// slot's caches are rebuilt from its own history, and the replies do not
/// change.
#[test]
fn a_ring_batches_clients_and_keeps_their_replies_when_a_worker_dies_mid_flight() {
    if emulated() {
        return; // the ring and the server each run under the emulator elsewhere
    }
    let (mut workers, server) = ring_server(&["--parallel", "4"]);
    let questions: Vec<String> = (0..4).map(|i| format!("Name {} animals that live in the sea.", i + 2)).collect();
    let ask = |q: &String| content(&server.post("/v1/chat/completions", &chat(q, 32)).unwrap());
    let alone: Vec<String> = questions.iter().map(ask).collect();
    let generated = || server.metric("prima_completion_tokens_total");
    let passes = || server.metric("prima_forward_passes_total");

    let (passes_before, tokens_before) = (passes(), generated());
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = questions.iter().map(|q| s.spawn(move || ask(q))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    let (trips, tokens) = (passes() - passes_before, generated() - tokens_before);
    assert!(
        trips * 2.0 < tokens,
        "{trips} trips round the ring for {tokens} tokens: the slots did not travel together"
    );

    let start = generated();
    let (replies, at_kill) = std::thread::scope(|s| {
        let handles: Vec<_> = questions.iter().map(|q| s.spawn(move || ask(q))).collect();
        while generated() < start + 8.0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let at_kill = generated();
        drop(workers.pop());
        let replies: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (replies, at_kill)
    });
    let log = server.log.lock().unwrap().join("\n");
    assert!(generated() > at_kill, "every token came before the kill");
    assert!(log.contains("ring: lost") && log.contains("recovered"), "{log}");
    assert_eq!(replies, alone);
    assert_eq!(server.cluster()["devices"].as_array().unwrap().len(), 2, "{}", server.cluster());
}

/// A worker started with `--join URL` is taken into a serving ring that
/// Halda plans (memory is short, so Halda uses every device it has), and
/// the replies stay one device's. A join naming no usable port is a 400.
#[test]
fn a_worker_that_asks_to_join_is_taken_into_the_ring() {
    if emulated() {
        return; // the ring and the server each run under the emulator elsewhere
    }
    let profile = saved_profile();
    let profile = profile.to_str().unwrap();
    let short = ["--mem", "50", "--profile", profile];
    let first = Worker::start_with(&short);
    let server = Server::start(&["-c", "128", "--parallel", "1", "--mem", "60", "--ring", &first.addr]);
    let req = chat("What is the capital of France?", 12);
    let prompt = server.post("/apply-template", &req).unwrap()["prompt"].as_str().unwrap().to_owned();
    let alone = run_json(&prompt, 12);
    assert_eq!(content(&server.post("/v1/chat/completions", &req).unwrap()), alone["text"].as_str().unwrap());
    assert_eq!(server.cluster()["devices"].as_array().unwrap().len(), 2, "{}", server.cluster());

    let joining = Worker::start_with(&[&short[..], &["--join", &server.url]].concat());
    let t = Instant::now();
    while server.cluster()["devices"].as_array().unwrap().len() != 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "not taken in: {:?}", joining.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(content(&server.post("/v1/chat/completions", &req).unwrap()), alone["text"].as_str().unwrap());
    let (status, body) = server.post("/ring/join", &json!({ "port": 0 })).unwrap_err();
    assert_eq!(status, 400, "{body}");
}

/// A server given less memory than the model needs streams the layers that
/// do not fit, and its replies do not change.
#[test]
fn a_server_short_of_memory_streams_and_keeps_its_replies() {
    let questions = ["What is the capital of France?", "Name three colours."];
    let replies = |server: &Server| -> Vec<String> {
        let ask = |q: &&str| content(&server.post("/v1/chat/completions", &chat(q, tokens(16))).unwrap());
        std::thread::scope(|s| {
            let handles: Vec<_> = questions.iter().map(|q| s.spawn(move || ask(q))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let roomy = replies(&Server::start(&["--parallel", "2", "-c", "512"]));
    let short = Server::start(&["--parallel", "2", "-c", "512", "--mem", "60"]);
    assert!(short.startup.iter().any(|l| l.contains("streams")), "{:?}", short.startup);
    assert_eq!(replies(&short), roomy);
}

/// Eight clients at once, on four slots and a queue, each get exactly the
/// text they get alone.
#[test]
fn eight_clients_at_once_get_what_they_get_alone() {
    let server = Server::start(&["--parallel", "4"]);
    let questions: Vec<String> = (0..8).map(|i| format!("Name {} animals that live in the sea.", i + 2)).collect();
    let n = tokens(20);
    let alone: Vec<String> =
        questions.iter().map(|q| content(&server.post("/v1/chat/completions", &chat(q, n)).unwrap())).collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| s.spawn(|| content(&server.post("/v1/chat/completions", &chat(q, n)).unwrap())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    assert_eq!(server.metric("prima_requests_total"), 16.0);
}

/// A streaming client that hangs up frees its slot: the only slot serves
/// the next request instead of finishing the abandoned one.
#[test]
fn a_client_that_leaves_frees_its_slot() {
    let server = Server::start(&["--parallel", "1", "-c", "4096"]);
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body =
        json!({ "prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": true }).to_string();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(s);
    let t = Instant::now();
    let next = server.post("/v1/chat/completions", &chat("Hi", 4)).unwrap();
    assert_eq!(next["usage"]["completion_tokens"], 4);
    // 4000 tokens take minutes here; the next request waits for one step.
    assert!(t.elapsed() < Duration::from_secs(30), "waited {:?}", t.elapsed());
    assert_eq!(server.metric("prima_requests_cancelled_total"), 1.0);
}

/// Bad requests get OpenAI-style errors with the right status, and the
/// server goes on serving.
#[test]
fn bad_requests_get_their_status_and_a_named_cause() {
    let server = Server::start(&["--parallel", "1", "--queue", "1", "--api-key", "sekrit", "--alias", "smol"]);
    let url = |p: &str| format!("{}{p}", server.url);
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let auth = |r: ureq::Request| r.set("Authorization", "Bearer sekrit");
    let (code, body) = status(ureq::post(&url("/v1/chat/completions")).send_json(chat("hi", 2)));
    assert_eq!((code, body.contains("API key")), (401, true), "{body}");
    let cases: [(&str, String, u16, &str); 5] = [
        ("/v1/chat/completions", "{not json".into(), 400, "bad request body"),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            404,
            "gpt-4",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi ".repeat(5000), "max_tokens": 8}).to_string(),
            400,
            "context overflow",
        ),
        ("/v2/nothing", "{}".into(), 404, "no such route"),
        ("/ring/join", json!({"port": 9000}).to_string(), 404, "not a ring's head"),
    ];
    for (path, body, want, says) in cases {
        let (code, text) =
            status(auth(ureq::post(&url(path))).set("Content-Type", "application/json").send_string(&body));
        assert_eq!(code, want, "{path}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains(says), "{path}: {text}");
    }
    // A body over the limit is refused from its length, before it is read
    // (a client still sending would see a broken pipe, so none is sent).
    let mut s = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit";
    write!(s, "{head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 2 << 20).unwrap();
    let mut reply = [0u8; 512];
    let n = s.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 413") && reply.contains("bytes"), "{reply}");
    // One decoding, one waiting: a third is turned away at once.
    let long = json!({ "prompt": "Once upon a time", "max_tokens": tokens(200), "temperature": 0, "ignore_eos": true });
    let (a, b) = std::thread::scope(|s| {
        let send = || status(auth(ureq::post(&url("/v1/completions"))).send_json(long.clone())).0;
        let a = s.spawn(send);
        std::thread::sleep(Duration::from_millis(300));
        let b = s.spawn(send);
        std::thread::sleep(Duration::from_millis(300));
        let (code, text) = status(auth(ureq::post(&url("/v1/completions"))).send_json(long.clone()));
        assert_eq!(code, 503, "{text}");
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a, b), (200, 200));
    let models = auth(ureq::get(&url("/v1/models"))).call().unwrap().into_json::<Value>().unwrap();
    assert_eq!(models["data"][0]["id"], "smol");
}

/// The official `openai` Python client drives the server: chat, streamed
/// chat (its deltas are the whole text), stop strings, completions, the
/// model list and errors.
#[test]
fn the_openai_python_client_is_served() {
    if emulated() {
        return; // the Python client runs on the build machine only
    }
    let server = Server::start(&[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/openai_client.py");
    let out = Command::new("python3").arg(script).arg(&server.url).output().unwrap();
    assert!(
        out.status.success(),
        "{}{} (scripts/setup.sh installs the openai package)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The chat page in headless Chromium: a question typed and sent, the
/// streamed reply shown, the cluster view filled; the screenshot is kept
/// at target/serve-page.png.
#[test]
fn the_chat_page_streams_a_reply_in_chromium() {
    if emulated() {
        return; // the browser runs on the build machine only
    }
    let server = Server::start(&[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shot = root.join("target/serve-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("python3")
        .arg(root.join("tests/python/web_page.py"))
        .arg(&server.url)
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{} (scripts/setup.sh installs chromium and playwright)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "no screenshot at {}", shot.display());
}

/// A server with its first layers on the GPU (lavapipe where there is no
/// GPU) batches two clients and answers what `prima run` does on the CPU
/// (counting prompts: the reference's margins on the first are at least 2.9
/// for all 12 tokens). Counting survives a mixed-up cache, so the slots'
/// separation is checked in tests/tests/gpu.rs.
#[test]
fn a_server_with_gpu_layers_answers_what_the_cpu_does() {
    let server = Server::start(&["--parallel", "2", "-c", "256", "--n-gpu-layers", "8"]);
    assert!(server.startup.iter().any(|l| l.contains("gpu: layers 0..8 run on")), "{:?}", server.startup);
    let prompts = ["1, 2, 3, 4,", "10, 20, 30, 40, 50,"];
    let want: Vec<String> = prompts.iter().map(|p| run_json(p, 12)["text"].as_str().unwrap().to_owned()).collect();
    let server = &server;
    let texts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let req = json!({ "prompt": p, "temperature": 0, "max_tokens": 12 });
                s.spawn(move || server.post("/v1/completions", &req).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()["choices"][0]["text"].as_str().unwrap().to_owned()).collect()
    });
    assert_eq!(texts, want);
}
