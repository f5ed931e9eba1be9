//! A serving ring re-balanced at run time: a worker slower than planned
//! loses layers between requests. Its own test binary, so no other test's
//! processes share the CPUs while it measures.

mod common;

use common::{ring_flag, saved_profile, Server, Worker};
use prima_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A worker whose profile claims four times its real speed runs slower
/// than Halda planned, against the other worker; after two requests the
/// head plans again with the measured ratio on that worker's layer time,
/// and it runs no more layers than before. The replies do not change.
#[test]
fn a_worker_slower_than_planned_loses_layers_between_requests() {
    if emulated() {
        return; // the ring and the server each run under the emulator elsewhere
    }
    let honest = saved_profile();
    let mut boast: Value = serde_json::from_str(&std::fs::read_to_string(&honest).unwrap()).unwrap();
    for t in boast["cpu"].as_array_mut().unwrap() {
        t["flops"] = json!(t["flops"].as_f64().unwrap() * 4.0);
    }
    boast["mem_read_bytes_per_s"] = json!(boast["mem_read_bytes_per_s"].as_f64().unwrap() * 4.0);
    let boasting = scratch_dir("boast").join("device.json");
    std::fs::write(&boasting, boast.to_string()).unwrap();
    let workers = [
        Worker::start_with(&["--profile", honest.to_str().unwrap()]),
        // Short of memory too, so the plan cannot hand it every layer.
        Worker::start_with(&["--profile", boasting.to_str().unwrap(), "--mem", "60"]),
    ];
    let slow = &workers[1];
    // The head short of memory, so Halda gives the workers layers.
    let server = Server::start(&["-c", "256", "--mem", "60", "--ring", &ring_flag(&workers)]);
    let layers_of = |view: &Value, addr: &str| {
        let devices = view["devices"].as_array().unwrap();
        let d = devices.iter().find(|d| d["name"].as_str().unwrap().contains(addr));
        d.map_or(0, |d| layer_count(d["layers"].as_str().unwrap()))
    };
    let t = Instant::now();
    let view = loop {
        let view = server.cluster();
        if view["devices"].as_array().unwrap().len() > 1 {
            break view;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no ring in the view: {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let before = layers_of(&view, &slow.addr);
    assert!(before > 0 && layers_of(&view, &workers[0].addr) > 0, "a worker left out: {view} {:?}", server.startup);
    let req = json!({ "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "ignore_eos": true });
    let text = |v: Value| v["choices"][0]["text"].as_str().unwrap().to_owned();
    let first = text(server.post("/v1/completions", &req).unwrap());
    let mut replies = 1;
    while !server.log.lock().unwrap().iter().any(|l| l.starts_with("ring: re-balanced")) {
        assert!(replies < 6, "no re-balance after {replies} requests: {:?}", server.log.lock().unwrap());
        assert_eq!(text(server.post("/v1/completions", &req).unwrap()), first);
        replies += 1;
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains(&format!("{}) computes in", slow.addr))), "{log:?}");
    // The new plan gives it its measured speed: the per-layer time Halda
    // planned with (the third device's line in each plan) grew about fourfold.
    let per_layer = |lines: &[String]| -> f64 {
        let devices: Vec<&String> =
            lines.iter().filter(|l| l.starts_with("  ") && l.contains(" ms per layer")).collect();
        let line = devices.get(2).unwrap_or_else(|| panic!("no third device in {lines:?}"));
        line.split(", ").find_map(|f| f.strip_suffix(" ms per layer")).unwrap().parse().unwrap()
    };
    let (planned, replanned) = (per_layer(&server.startup), per_layer(&log));
    assert!(replanned > 2.0 * planned, "per-layer time {planned} ms, then {replanned} ms: {log:?}");
    // Its windows move only if the corrected plan is better: here it is as
    // fast as the other worker, which its memory does not let it outrun.
    let after = layers_of(&server.cluster(), &slow.addr);
    assert!(after <= before, "the slow worker ran {before} layers and runs {after}: {log:?}");
    assert_eq!(text(server.post("/v1/completions", &req).unwrap()), first);
}

/// Layers a device runs, from the cluster view's "0-1,15-16".
fn layer_count(ranges: &str) -> usize {
    let range = |r: &str| r.split_once('-').map(|(a, b)| b.parse::<usize>().unwrap() + 1 - a.parse::<usize>().unwrap());
    ranges.split(',').filter_map(range).sum()
}
