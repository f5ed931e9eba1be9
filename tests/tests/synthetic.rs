//! Every synthetic model (llama and qwen2, one per tensor type) against the
//! reference engine's teacher-forced logits, with the scalar oracle and with
//! the detected SIMD kernels.

use prima_core::kernels::Kernels;
use prima_host::mapped::MappedFile;
use prima_tests::*;

/// (max |dlogit| allowed, from the reference README) per type.
fn max_tolerance(ty: &str) -> f64 {
    match ty {
        "F32" | "F16" => 1e-3,
        "BF16" => 5e-3,
        _ => 3e-2,
    }
}

fn check_all(kernels: Kernels) {
    let dir = reference_dir();
    let mut checked = 0;
    let mut report = Vec::new();
    for entry in std::fs::read_dir(dir.join("models")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let ty = stem.rsplit('-').next().unwrap().to_string();
        let fixture = read_json(dir.join("synthetic").join(format!("{stem}.json")));
        let tf = &fixture["teacher_forced"];
        let file = MappedFile::open(&path).unwrap();
        let pool = pool();
        let mut agree = Agreement::default();
        for (k, seq) in tf["sequences"].as_array().unwrap().iter().enumerate() {
            let seq = ids(seq);
            let (logits, n_vocab) = teacher_forced(&file, &seq, kernels, &pool);
            let positions = tf["engines"]["upstream"][k]["top10"].as_array().unwrap();
            for (row, top10) in logits.chunks_exact(n_vocab).zip(positions) {
                agree.add(row, top10.as_array().unwrap(), f64::INFINITY);
            }
        }
        let prima_mean = fixture["agreement"]["prima_vs_upstream"]["top10_union_abs_logit_diff_mean"].as_f64().unwrap();
        let mean_limit = 2.0 * prima_mean;
        report.push(format!(
            "{stem}: mean {:.2e} (limit {mean_limit:.2e}) max {:.2e} (limit {:.0e}) top1 {}/{}",
            agree.mean_abs_dlogit(),
            agree.abs_dlogit_max,
            max_tolerance(&ty),
            agree.top1_agree,
            agree.positions
        ));
        assert!(agree.abs_dlogit_max <= max_tolerance(&ty), "{}", report.last().unwrap());
        assert!(agree.mean_abs_dlogit() <= mean_limit, "{}", report.last().unwrap());
        checked += 1;
    }
    eprintln!("{} kernels:\n{}", kernels.name(), report.join("\n"));
    assert_eq!(checked, 28, "expected 14 types x 2 architectures");
}

#[test]
fn every_synthetic_model_matches_reference_logits_with_scalar_kernels() {
    check_all(Kernels::scalar());
}

#[test]
fn every_synthetic_model_matches_reference_logits_with_detected_kernels() {
    check_all(Kernels::detect());
}
