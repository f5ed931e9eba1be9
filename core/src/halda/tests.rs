use super::*;
use alloc::vec;
use proptest::prelude::*;

/// Every valid plan, tried one by one.
fn exhaustive(p: &Problem) -> Option<Plan> {
    let n = p.devices.len();
    let mut best: Option<Plan> = None;
    for mask in 0..(1u32 << (n - 1)) {
        let devices: Vec<usize> = core::iter::once(0).chain((1..n).filter(|i| mask & (1 << (i - 1)) != 0)).collect();
        for k in 1..=p.n_layer {
            if !p.n_layer.is_multiple_of(k) || p.n_layer / k < devices.len() {
                continue;
            }
            for_each_composition(p.n_layer / k, devices.len(), &mut vec![], &mut |w| {
                if let Some(plan) = p.evaluate(&devices, w, k) {
                    if best.as_ref().is_none_or(|b| plan.tpot_s < b.tpot_s) {
                        best = Some(plan);
                    }
                }
            });
        }
    }
    best
}

/// Calls `f` with every way to write `total` as `parts` positive integers.
fn for_each_composition(total: usize, parts: usize, prefix: &mut Vec<usize>, f: &mut dyn FnMut(&[usize])) {
    if parts == 1 {
        prefix.push(total);
        f(prefix);
        prefix.pop();
        return;
    }
    for first in 1..=total - (parts - 1) {
        prefix.push(first);
        for_each_composition(total - first, parts - 1, prefix, f);
        prefix.pop();
    }
}

fn device(layer_s: f64, hop_s: f64, budget_layers: f64, disk: f64, overlaps: bool) -> DeviceCosts {
    DeviceCosts {
        layer_s,
        hop_s,
        budget_bytes: budget_layers * 100.0,
        disk_bytes_per_s: disk,
        overlaps_disk: overlaps,
        gpu: None,
    }
}

fn problem(devices: Vec<DeviceCosts>, n_layer: usize) -> Problem {
    Problem { devices, n_layer, layer_bytes: 100.0, kv_layer_bytes: 0.0, head_s: 0.001 }
}

fn arb_device() -> impl Strategy<Value = DeviceCosts> {
    // Budgets in quarter layers, from short of memory to several layers, so
    // windows often overflow memory partly or wholly. Some devices have a
    // GPU, faster or slower than their CPU, with its own memory or RAM's.
    let gpu = proptest::option::of((1u32..50, 0u32..40, any::<bool>()));
    (1u32..50, 0u32..20, -2i32..48, 1u32..100, any::<bool>(), gpu).prop_map(|(t, hop, budget, disk, overlaps, gpu)| {
        let gpu = gpu.map(|(t, budget, unified)| GpuCosts {
            layer_s: t as f64 * 0.5e-3,
            budget_bytes: budget as f64 * 25.0,
            unified,
        });
        DeviceCosts {
            gpu,
            ..device(t as f64 * 1e-3, hop as f64 * 1e-3, budget as f64 / 4.0, disk as f64 * 1e3, overlaps)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// On random small instances the solver's plan is as fast as the best
    /// plan exhaustive search finds, and its predicted time is that plan's.
    #[test]
    fn solver_equals_exhaustive_search(
        devices in proptest::collection::vec(arb_device(), 1..6),
        n_layer in 1usize..17,
        kv_layer_bytes in prop_oneof![Just(0.0), 1.0f64..30.0],
    ) {
        let p = Problem { kv_layer_bytes, ..problem(devices, n_layer) };
        let want = exhaustive(&p);
        match (solve(&p), want) {
            (Ok(got), Some(want)) => {
                let tol = 1e-9 * want.tpot_s;
                prop_assert!((got.tpot_s - want.tpot_s).abs() <= tol, "solver {:?}\nexhaustive {:?}", got, want);
                let again = p.evaluate(&got.devices, &got.windows, got.k).unwrap();
                prop_assert_eq!(again.tpot_s, got.tpot_s);
            }
            (Err(PlanError::OutOfMemory { .. }), None) => {}
            (got, want) => prop_assert!(false, "solver {:?}, exhaustive {:?}", got, want),
        }
    }
}

#[test]
fn a_slow_device_is_dropped_and_a_fast_one_kept() {
    let p = problem(vec![device(1e-3, 1e-4, 100.0, 1e9, true), device(50e-3, 1e-4, 100.0, 1e9, true)], 8);
    let plan = solve(&p).unwrap();
    assert_eq!(plan.devices, [0]);
    assert_eq!((plan.windows.as_slice(), plan.k), ([8].as_slice(), 1));
    assert!((plan.tpot_s - (8e-3 + 1e-3)).abs() < 1e-12, "{}", plan.tpot_s);
}

/// Every hop of the ring costs a round: a ring of three crosses three (the
/// last worker hands back to the head), the hop between two workers is the
/// mean of their head links, and the head's own hop figure plays no part.
#[test]
fn every_hop_of_the_ring_is_counted() {
    let p = problem(
        vec![
            device(1e-3, 9.0, 100.0, 1e9, true),
            device(1e-3, 2e-3, 100.0, 1e9, true),
            device(1e-3, 4e-3, 100.0, 1e9, true),
        ],
        6,
    );
    assert_eq!(p.ring_hops(&[0, 1, 2]), [2e-3, 3e-3, 4e-3]);
    assert_eq!(p.ring_hops(&[0, 2]), [4e-3, 4e-3]);
    assert_eq!(p.ring_hops(&[0]), [0.0]);
    let plan = p.evaluate(&[0, 1, 2], &[2, 2, 2], 1).unwrap();
    assert!((plan.tpot_s - (6e-3 + 9e-3 + 1e-3)).abs() < 1e-12, "{}", plan.tpot_s);
    let network: Vec<f64> = plan.times.iter().map(|t| t.network_s).collect();
    assert_eq!(network, [2e-3, 3e-3, 4e-3]);
}

/// The layer check's correction scales compute, and only compute: hops and
/// the output head stay as measured.
#[test]
fn scaled_layer_times_scale_only_compute() {
    let mut p = problem(vec![device(1e-3, 1e-4, 100.0, 1e9, true), device(2e-3, 3e-3, 100.0, 1e9, true)], 6);
    let before = p.evaluate(&[0, 1], &[3, 3], 1).unwrap();
    p.scale_layer_times(1.5);
    let after = p.evaluate(&[0, 1], &[3, 3], 1).unwrap();
    assert!((before.tpot_s - (3e-3 + 6e-3 + 2.0 * 3e-3 + 1e-3)).abs() < 1e-12, "{}", before.tpot_s);
    assert!((after.tpot_s - before.tpot_s - 0.5 * 9e-3).abs() < 1e-12, "{}", after.tpot_s);
}

/// When no device can hold its share, rounds (k > 1) with prefetch beat one
/// round: each device reads its next window while the other computes.
#[test]
fn memory_pressure_picks_several_rounds() {
    let d = device(1e-3, 1e-4, 4.0, 2e5, true);
    let p = problem(vec![d, d], 16);
    let plan = solve(&p).unwrap();
    assert!(plan.k > 1, "{plan:?}");
    assert!(plan.times.iter().all(|t| t.disk_s > 0.0));
}

#[test]
fn bad_figures_are_named() {
    let good = device(1e-3, 1e-4, 10.0, 1e6, true);
    let cases = [
        (device(f64::NAN, 1e-4, 10.0, 1e6, true), "layer time"),
        (device(1e-3, -1.0, 10.0, 1e6, true), "hop time"),
        (device(1e-3, 1e-4, f64::INFINITY, 1e6, true), "memory budget"),
        (device(1e-3, 1e-4, 10.0, 0.0, true), "disk speed"),
    ];
    for (bad, field) in cases {
        let err = solve(&problem(vec![good, bad], 4)).unwrap_err();
        assert!(matches!(err, PlanError::BadFigure { device: 1, field: f, .. } if f == field), "{err:?}");
        assert!(alloc::format!("{err}").contains(field));
    }
    assert_eq!(solve(&problem(vec![], 4)), Err(PlanError::NoDevices));
    assert_eq!(solve(&problem(vec![good], 0)), Err(PlanError::NoLayers));
    assert_eq!(
        solve(&problem(vec![good; MAX_DEVICES + 1], 40)),
        Err(PlanError::TooManyDevices { devices: MAX_DEVICES + 1, max: MAX_DEVICES })
    );
}

/// Devices whose budgets hold less than a layer, or nothing, still get a
/// plan: they stream every layer they run, and the disk time says so.
#[test]
fn short_memory_streams_instead_of_refusing() {
    for overlaps in [true, false] {
        let tiny = device(1e-3, 1e-4, 0.5, 1e5, overlaps);
        let plan = solve(&problem(vec![tiny, tiny], 4)).unwrap();
        assert_eq!(plan.windows.iter().sum::<usize>() * plan.k, 4);
        assert!(plan.times.iter().all(|t| t.disk_s > 0.0), "{plan:?}");
        // 4 layers of 100 bytes at 1e5 B/s, less at most half a layer kept on each.
        let disk: f64 = plan.times.iter().map(|t| t.disk_s).sum();
        assert!(disk >= 3.0 * 100.0 / 1e5 - 1e-12, "{plan:?}");
    }
    // The anchor cluster of issue 19 in miniature: the head holds under one
    // layer, the workers four each; together they hold the model.
    let (head, worker) = (device(1e-3, 0.0, 0.5, 1e6, true), device(1e-3, 1e-4, 4.0, 1e6, true));
    let plan = solve(&problem(vec![head, worker, worker], 8)).unwrap();
    assert_eq!(plan.devices, [0, 1, 2], "{plan:?}");
    // A worker short of its runtime buffers is dropped, not fatal.
    let short = device(1e-3, 1e-4, -1.0, 1e6, true);
    let plan = solve(&problem(vec![head, short], 4)).unwrap();
    assert_eq!(plan.devices, [0]);
}

/// Only a head that cannot hold the KV cache alone, with no worker to take
/// layers, gets no plan, and the error names the shortfall.
#[test]
fn no_plan_names_the_shortfall() {
    let head = device(1e-3, 0.0, 2.0, 1e6, true);
    let short = device(1e-3, 1e-4, -1.0, 1e6, true);
    let p = Problem { kv_layer_bytes: 50.0, ..problem(vec![head, short], 8) };
    // 8 layers' KV cache is 400 bytes; the head has 200.
    let err = solve(&p).unwrap_err();
    assert_eq!(err, PlanError::OutOfMemory { head_short_bytes: 200.0 });
    assert!(alloc::format!("{err}").contains("MB short"), "{err}");
    // KV caches count against memory: with room for the KV of 4 layers each,
    // two devices split the model.
    let both = Problem { kv_layer_bytes: 50.0, ..problem(vec![head, device(1e-3, 1e-4, 2.0, 1e6, true)], 8) };
    let plan = solve(&both).unwrap();
    assert_eq!((plan.devices.len(), plan.windows.iter().sum::<usize>() * plan.k), (2, 8), "{plan:?}");
    assert!(plan.windows.iter().all(|&w| w * plan.k <= 4), "{plan:?}");
}

#[test]
fn more_devices_than_layers_drops_the_extra() {
    let d = device(1e-3, 1e-5, 10.0, 1e6, true);
    let plan = solve(&problem(vec![d; 6], 3)).unwrap();
    assert!(plan.devices.len() <= 3);
    assert_eq!(plan.windows.iter().sum::<usize>() * plan.k, 3);
}

/// The paper's home cluster (Table 1 of the prima.cpp notes: RAM and disk as
/// measured there) running a Llama-3-70B-shaped Q4_K model on CPUs only. The
/// CPU, memory and link figures are assumptions, stated in docs/HALDA.md,
/// which explains the plan this prints (`cargo test -p prima-core
/// paper_cluster -- --nocapture`).
fn paper_cluster() -> (crate::cost::ModelCost, crate::cost::RunShape, [crate::profile::DeviceProfile; 4]) {
    use crate::cost::{ModelCost, StageCost, TypeCost};
    use crate::profile::{DeviceProfile, LinkProfile, PageCacheClass, TypeThroughput, PROFILE_VERSION};
    use crate::quant::GgmlType;
    const GIB: f64 = (1u64 << 30) as f64;
    let stage = |types: &[(GgmlType, f64, f64)]| StageCost {
        types: types
            .iter()
            .map(|&(ty, bytes, flops)| TypeCost { ty, bytes: bytes as u64, flops: flops as u64 })
            .collect(),
    };
    let layer_weights = 855.6e6;
    let layer =
        stage(&[(GgmlType::F32, 65536.0, 16384.0), (GgmlType::Q4_K, layer_weights * 0.5625, 2.0 * layer_weights)]);
    let cost = ModelCost {
        input: stage(&[(GgmlType::Q4_K, 591e6, 0.0)]),
        input_row_bytes: 4608,
        layers: vec![layer; 80],
        output: stage(&[(GgmlType::F32, 32768.0, 8192.0), (GgmlType::Q6_K, 862e6, 2.0 * 1.05e9)]),
        kv_bytes_per_token_layer: 2 * 1024 * 2,
        activation_bytes: 8192 * 2,
        attention_flops_per_position: 4 * 8192,
        n_embd: 8192,
        n_ff: 28672,
        q_dim: 8192,
        kv_dim: 1024,
        n_vocab: 128256,
        header_bytes: 8 << 20,
    };
    let run = crate::cost::RunShape { n_ctx: 512, n_batch: 512, kv_elem_bytes: 2, threads: 8 };
    let device = |name: &str, gflops: f32, mem_gbs: f32, ram_gib: f64, disk_gbs: f32, page_cache| {
        let mut cpu = heapless::Vec::new();
        for ty in [GgmlType::F32, GgmlType::Q4_K, GgmlType::Q6_K] {
            cpu.push(TypeThroughput { ggml_type: ty.id(), flops: gflops * 1e9 }).unwrap();
        }
        DeviceProfile {
            version: PROFILE_VERSION,
            name: heapless::String::try_from(name).unwrap(),
            threads: 8,
            kernels: heapless::String::try_from("assumed").unwrap(),
            cpu,
            mem_read_bytes_per_s: mem_gbs * 1e9,
            kv_write_s: 1e-6,
            disk_seq_read_bytes_per_s: disk_gbs * 1e9,
            disk_random_read_bytes_per_s: disk_gbs * 1e9 / 4.0,
            ram_total_bytes: (ram_gib * 2.0 * GIB) as u64,
            ram_available_bytes: (ram_gib * GIB) as u64,
            swap_free_bytes: 0,
            page_cache,
            gpu: None,
            link: Some(LinkProfile { rtt_s: 5e-3, bytes_per_s: 40e6 }),
        }
    };
    let profiles = [
        device("D1 Mac M1", 60.0, 60.0, 2.4, 0.72, PageCacheClass::Compressing),
        device("D2 laptop i9", 80.0, 40.0, 4.1, 2.98, PageCacheClass::Evicting),
        device("D3 desktop i9", 150.0, 50.0, 9.7, 3.17, PageCacheClass::Evicting),
        device("D4 Mate40Pro", 30.0, 30.0, 1.9, 1.37, PageCacheClass::Evicting),
    ];
    (cost, run, profiles)
}

#[test]
fn paper_cluster_plan() {
    let (cost, run, profiles) = paper_cluster();
    let problem = Problem::from_profiles(&profiles, &cost, &run).unwrap();
    let plan = solve(&problem).unwrap();
    std::println!("problem: {problem:#?}");
    std::println!("plan: {plan:#?}");
    for (i, w) in [[80usize, 0, 0, 0], [20, 20, 20, 20]].iter().enumerate() {
        let (devices, windows): (Vec<usize>, Vec<usize>) =
            w.iter().enumerate().filter(|x| *x.1 > 0).map(|(d, &w)| (d, w)).unzip();
        let other = problem.evaluate(&devices, &windows, 1).map(|p| p.tpot_s);
        std::println!("alternative {i} {w:?} k=1: {other:?}");
    }
    // Not one device can hold its share of 38 GB, so every kept device streams
    // layers from disk, and several rounds let it prefetch the next window.
    assert!(plan.k > 1, "{plan:?}");
    assert!(plan.times.iter().all(|t| t.disk_s > 0.0));
    assert_eq!(plan.windows.iter().sum::<usize>() * plan.k, 80);
}

/// A device whose GPU is fast gets layers on it, no more than the GPU's
/// memory holds.
#[test]
fn a_gpu_takes_the_layers_its_memory_holds() {
    let cpu_only = device(10e-3, 1e-4, 100.0, 1e9, true);
    let with_gpu = DeviceCosts {
        gpu: Some(GpuCosts { layer_s: 1e-3, budget_bytes: 6.5 * 100.0, unified: false }),
        ..device(10e-3, 1e-4, 100.0, 1e9, true)
    };
    let p = problem(vec![cpu_only, with_gpu], 16);
    let plan = solve(&p).unwrap();
    assert_eq!(plan.devices, [0, 1]);
    assert_eq!(plan.gpu_layers, [0, 6], "{plan:?}");
    // The GPU's device takes its 6 GPU layers and shares the CPU layers with the head.
    assert!(plan.windows[1] > plan.windows[0], "{plan:?}");
    let without = solve(&problem(vec![cpu_only, device(10e-3, 1e-4, 100.0, 1e9, true)], 16)).unwrap();
    assert!(plan.tpot_s < without.tpot_s);
    assert!(without.gpu_layers.iter().all(|&g| g == 0));
}

/// A GPU that shares RAM holds its layers in the device's budget once: a
/// device of 4 layers' RAM with a unified GPU claiming 12 runs 4 layers on
/// it, not 4 on the GPU and 4 more in RAM.
#[test]
fn unified_memory_is_counted_once() {
    let gpu = GpuCosts { layer_s: 1e-3, budget_bytes: 12.0 * 100.0, unified: true };
    let phone = DeviceCosts { gpu: Some(gpu), ..device(10e-3, 0.0, 4.0, 1.0, true) };
    let p = Problem { kv_layer_bytes: 0.0, ..problem(vec![phone], 4) };
    let plan = solve(&p).unwrap();
    assert_eq!(plan.gpu_layers, [4]);
    // Eight layers do not fit: the GPU still holds 4, and the other 4 stream
    // from disk (at 1 byte/s, which the plan's time shows).
    let p8 = problem(vec![phone], 8);
    let plan8 = solve(&p8).unwrap();
    assert_eq!(plan8.gpu_layers, [4]);
    assert!(plan8.stall_s > 100.0, "{plan8:?}");
    // The same GPU with its own memory leaves the RAM to 4 more CPU layers.
    let discrete = DeviceCosts { gpu: Some(GpuCosts { unified: false, ..gpu }), ..phone };
    let plan8 = solve(&problem(vec![discrete], 8)).unwrap();
    assert_eq!(plan8.gpu_layers, [8], "the GPU's own 12 layers' memory holds all 8");
    assert!(plan8.stall_s < 1e-9);
}

/// A GPU slower than the CPU is left idle.
#[test]
fn a_slow_gpu_gets_no_layers() {
    let gpu = GpuCosts { layer_s: 20e-3, budget_bytes: 1e6, unified: false };
    let p = problem(vec![DeviceCosts { gpu: Some(gpu), ..device(10e-3, 0.0, 100.0, 1e9, true) }], 8);
    assert_eq!(solve(&p).unwrap().gpu_layers, [0]);
}

/// The paper's cluster with GPUs in its profiles: the Mac's shares its
/// 2.4 GiB of RAM, the desktop's has 11 GiB of its own. Halda moves layers
/// to both, the desktop's GPU holds no more than its memory, and the Mac's
/// GPU layers come out of its RAM budget, once.
#[test]
fn profiles_with_gpus_move_layers_to_them() {
    use crate::profile::{GpuProfile, TypeThroughput};
    use crate::quant::GgmlType;
    const GIB: f64 = (1u64 << 30) as f64;
    let (cost, run, mut profiles) = paper_cluster();
    let cpu_only = solve(&Problem::from_profiles(&profiles, &cost, &run).unwrap()).unwrap();
    let gpu = |name: &str, gib: f64, tflops: f32, gbs: f32, unified: bool| {
        let mut types = heapless::Vec::new();
        for ty in [GgmlType::F32, GgmlType::Q4_K, GgmlType::Q6_K] {
            types.push(TypeThroughput { ggml_type: ty.id(), flops: tflops * 1e12 }).unwrap();
        }
        GpuProfile {
            name: heapless::String::try_from(name).unwrap(),
            backend: heapless::String::try_from("Vulkan").unwrap(),
            vram_total_bytes: (gib * GIB) as u64,
            vram_free_bytes: (gib * GIB) as u64,
            types,
            mem_read_bytes_per_s: gbs * 1e9,
            unified,
        }
    };
    profiles[0].gpu = Some(gpu("Apple M1", 2.4, 2.6, 60.0, true));
    profiles[2].gpu = Some(gpu("RTX 2080 Ti", 11.0, 13.4, 616.0, false));
    let problem = Problem::from_profiles(&profiles, &cost, &run).unwrap();
    let plan = solve(&problem).unwrap();
    std::println!("with GPUs: {plan:#?}");
    let at = |d: usize| at_in(&plan, d);
    let desktop = at(2).expect("the desktop is kept");
    let layer = cost.layer_bytes() as f64 / 80.0 + cost.kv_bytes_per_layer(&run) as f64;
    assert!(plan.gpu_layers[desktop] > 0, "{plan:?}");
    assert!(plan.gpu_layers[desktop] as f64 * layer <= 11.0 * GIB, "{plan:?}");
    if let Some(mac) = at(0) {
        assert!(plan.gpu_layers[mac] as f64 * layer <= problem.devices[0].budget_bytes, "{plan:?}");
    }
    assert!(plan.tpot_s < cpu_only.tpot_s, "{} vs {}", plan.tpot_s, cpu_only.tpot_s);
    assert!(cpu_only.gpu_layers.iter().all(|&g| g == 0));

    // A GPU measured on other types than the layers' cannot run them.
    if let Some(g) = profiles[2].gpu.as_mut() {
        g.types.retain(|t| t.ggml_type != GgmlType::Q4_K.id());
    }
    let problem = Problem::from_profiles(&profiles, &cost, &run).unwrap();
    assert_eq!(problem.devices[2].gpu, None);
    let plan = solve(&problem).unwrap();
    assert!(at_in(&plan, 2).is_none_or(|d| plan.gpu_layers[d] == 0), "{plan:?}");
}

/// Where kept device `d` sits in `plan`'s ring.
fn at_in(plan: &Plan, d: usize) -> Option<usize> {
    plan.devices.iter().position(|&m| m == d)
}
