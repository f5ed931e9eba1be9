//! Every kernel variant this machine supports against the scalar oracle.

use super::matmul::Matrix;
use super::*;
use crate::parallel::Serial;
use crate::quant::q8::quantize_row;
use crate::quant::random_row;
use crate::quant::ActFormat;
use crate::sampler::Rng;
use alloc::vec;
use alloc::vec::Vec;

const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Every kernel set this machine can run: all detected features, then each
/// narrower instruction set in turn.
fn variants() -> [Kernels; 4] {
    [
        Kernels::detect(),
        Kernels::with_caps(CpuCaps { avx512: false, ..CpuCaps::ALL }),
        Kernels::with_caps(CpuCaps { avx512: false, avxvnni: false, dotprod: false, ..CpuCaps::ALL }),
        Kernels::scalar(),
    ]
}

/// A random activation row of `n` values in ±2, encoded as `ty`'s products take it.
fn random_act(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect();
    let mut a = vec![0u8; ty.act_format().row_bytes(n)];
    quantize_row(ty.act_format(), &x, &mut a);
    a
}

#[test]
fn every_detected_variant_matches_scalar_on_random_rows() {
    let mut rng = Rng::new(42);
    let variants = variants();
    for ty in TYPES {
        for n in [256usize, 512, 1024] {
            let w = random_row(ty, n, &mut rng);
            let a = random_act(ty, n, &mut rng);
            let want = scalar::dot(ty, n, &w, &a);
            assert!(want.is_finite(), "{ty}: scalar result {want}");
            for k in variants {
                let got = k.dot(ty, n, &w, &a);
                let tol = 1e-4 * (1.0 + want.abs());
                assert!((got - want).abs() <= tol, "{ty} n={n} {}: {got} vs scalar {want}", k.name());
            }
        }
    }
}

#[test]
fn matmul_equals_rowwise_scalar_dots_for_every_batch_path() {
    let mut rng = Rng::new(7);
    let (n_in, n_out) = (64, 10);
    let data: Vec<u8> = (0..n_out).flat_map(|_| random_row(GgmlType::Q8_0, n_in, &mut rng)).collect();
    let w = Matrix { ty: GgmlType::Q8_0, n_in, n_out, data: &data };
    // 1: decode; 3: small batch split by row; 40: large batch split by token.
    for n_tok in [1, 3, 40] {
        let x: Vec<f32> = (0..n_in * n_tok).map(|_| rng.next_f64() as f32 - 0.5).collect();
        for k in [Kernels::scalar(), Kernels::detect()] {
            let out = matmul::matmul_f32(&k, &w, &x, &Serial);
            for t in 0..n_tok {
                let mut a = vec![0u8; 34 * 2];
                quantize_row(ActFormat::Q8_0, &x[t * n_in..(t + 1) * n_in], &mut a);
                for r in 0..n_out {
                    let want = scalar::dot(GgmlType::Q8_0, n_in, w.row(r), &a);
                    assert!((out[t * n_out + r] - want).abs() <= 1e-5, "n_tok {n_tok} [{t}][{r}] {}", k.name());
                }
            }
        }
    }
}

#[test]
fn attention_kernels_match_scalar() {
    let mut rng = Rng::new(3);
    let a: Vec<half::f16> = (0..70).map(|_| half::f16::from_f32(rng.next_f64() as f32 - 0.5)).collect();
    let b: Vec<f32> = (0..70).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let k = Kernels::detect();
    assert!((k.dot_f16_f32(&a, &b) - scalar::dot_f16_f32(&a, &b)).abs() < 1e-4);
    let (mut o1, mut o2) = (b.clone(), b.clone());
    k.axpy_f16(&mut o1, 0.3, &a);
    scalar::axpy_f16(&mut o2, 0.3, &a);
    assert!(o1.iter().zip(&o2).all(|(x, y)| (x - y).abs() < 1e-6));
}

/// Several queries scored together give each query's `dot_rows` scores bit
/// for bit, whatever the head size (tails past whole vectors included), the
/// number of queries or of keys.
#[test]
fn multi_query_scores_equal_one_query_at_a_time() {
    let mut rng = Rng::new(17);
    for k in variants() {
        for hd in [64, 72, 128] {
            for nq in 1..=5 {
                for n in [1, 2, 7, 33] {
                    let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect() };
                    let (qs, keys) = (rand(nq * hd), rand(n * hd));
                    let mut together = vec![f32::NAN; nq * n];
                    k.dot_rows_multi(&qs, hd, &keys, &mut together);
                    for (i, q) in qs.chunks_exact(hd).enumerate() {
                        let mut alone = vec![f32::NAN; n];
                        k.dot_rows(q, &keys, &mut alone);
                        let got = &together[i * n..(i + 1) * n];
                        assert!(
                            got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{} hd {hd}, {nq} queries, {n} keys, query {i}: {got:?} vs {alone:?}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// Weighted sums of several queries over the same values equal each
/// query's own weighted sum, bit for bit.
#[test]
fn multi_query_weighted_sums_equal_one_query_at_a_time() {
    let mut rng = Rng::new(23);
    for k in variants() {
        for hd in [64, 72, 128] {
            for nq in 1..=5 {
                for m in [1, 2, 7, 33] {
                    let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect() };
                    let (ps, values) = (rand(nq * m), rand(m * hd));
                    let mut together = vec![f32::NAN; nq * hd];
                    k.weighted_sum_multi(&ps, &values, hd, &mut together);
                    for (i, p) in ps.chunks_exact(m).enumerate() {
                        let mut alone = vec![f32::NAN; hd];
                        k.weighted_sum(p, &values, &mut alone);
                        let got = &together[i * hd..(i + 1) * hd];
                        assert!(
                            got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{} hd {hd}, {nq} queries, {m} rows, query {i}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// Softmax and SwiGLU equal the scalar activations bit for bit, over
/// lengths with and without a tail and inputs past exp's clamps.
#[test]
fn activations_match_scalar_bit_for_bit() {
    let mut rng = Rng::new(29);
    for k in variants() {
        for n in [1, 7, 8, 9, 64, 100, 2049] {
            for spread in [1.0f32, 30.0, 400.0] {
                let x: Vec<f32> = (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * spread).collect();
                let up: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
                let (mut got, mut want) = (x.clone(), x.clone());
                k.softmax(&mut got);
                super::activation::softmax(&mut want);
                let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same(&got, &want), "{} softmax of {n} (spread {spread})", k.name());
                let (mut got, mut want) = (x.clone(), x.clone());
                k.swiglu(&mut got, &up);
                want.iter_mut().zip(&up).for_each(|(g, &u)| *g = super::activation::silu(*g) * u);
                assert!(same(&got, &want), "{} swiglu of {n} (spread {spread})", k.name());
            }
        }
    }
}

#[test]
fn forcing_no_caps_gives_scalar() {
    assert_eq!(Kernels::with_caps(CpuCaps::NONE).name(), "scalar");
}

#[test]
fn every_tile_shape_matches_scalar_dots() {
    let mut rng = Rng::new(11);
    let n = 256;
    for ty in TYPES {
        let rows: Vec<Vec<u8>> = (0..TILE).map(|_| random_row(ty, n, &mut rng)).collect();
        let acts: Vec<Vec<u8>> = (0..TILE).map(|_| random_act(ty, n, &mut rng)).collect();
        let w: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
        let a: Vec<&[u8]> = acts.iter().map(|r| &r[..]).collect();
        for k in variants() {
            for nr in 1..=TILE {
                for nt in 1..=TILE {
                    let mut out = [[f32::NAN; TILE]; TILE];
                    k.tile(ty)(n, &w[..nr], &a[..nt], &mut out);
                    for r in 0..nr {
                        for t in 0..nt {
                            let want = scalar::dot(ty, n, w[r], a[t]);
                            let tol = 1e-4 * (1.0 + want.abs());
                            let got = out[r][t];
                            assert!(
                                (got - want).abs() <= tol,
                                "{ty} {nr}x{nt} [{r}][{t}] {}: {got} vs {want}",
                                k.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn stacked_matvec_equals_separate_matmuls() {
    let mut rng = Rng::new(5);
    let n_in = 256;
    let mats: Vec<Vec<u8>> = [7usize, 13, 5]
        .iter()
        .map(|&n_out| (0..n_out).flat_map(|_| random_row(GgmlType::Q4_1, n_in, &mut rng)).collect())
        .collect();
    let ws: Vec<Matrix<'_>> = mats
        .iter()
        .map(|d| Matrix { ty: GgmlType::Q4_1, n_in, n_out: d.len() / GgmlType::Q4_1.row_bytes(n_in), data: d })
        .collect();
    let x: Vec<f32> = (0..n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let k = Kernels::detect();
    let mut acts = matmul::Acts::default();
    acts.encode(&k, ActFormat::Q8_1, &x, n_in, &Serial);
    let mut stacked = vec![0.0; 25];
    let refs: Vec<&Matrix<'_>> = ws.iter().collect();
    matmul::matvec_stacked(&k, &refs, &acts, &mut stacked, &Serial);
    let separate: Vec<f32> = ws.iter().flat_map(|w| matmul::matmul_f32(&k, w, &x, &Serial)).collect();
    assert_eq!(stacked, separate);
}

#[test]
fn simd_is_chosen_where_the_cpu_has_it() {
    let k = Kernels::detect();
    #[cfg(target_arch = "aarch64")]
    assert!(k.name().starts_with("aarch64-neon"), "{}", k.name());
    #[cfg(target_arch = "x86_64")]
    assert_eq!(k.name() != "scalar", CpuCaps::detect().avx2 && CpuCaps::detect().fma && CpuCaps::detect().f16c);
    // Names of every variant exercised on this machine, for the test log.
    for v in variants() {
        std::println!("kernel variant under test: {}", v.name());
    }
}

/// The vectorized activation encoders give the scalar one's bytes: random
/// rows of several magnitudes, zeros, ties, and non-finite values.
#[test]
fn quantize_rows_match_scalar_bytes() {
    let mut rng = Rng::new(5);
    let mut rows: Vec<Vec<f32>> = [1e-3f32, 1.0, 40.0, 3e4]
        .iter()
        .map(|&mag| (0..256).map(|_| (rng.next_f64() as f32 - 0.5) * mag).collect())
        .collect();
    rows.push(vec![0.0; 256]);
    // 127 / 2.54 = 50: halves fall on ties.
    rows.push((0..256).map(|i| (i as f32 - 32.0) * 0.01 + if i == 0 { 2.54 } else { 0.0 }).collect());
    // The largest magnitude twice, negative first: Q8_K takes the first's sign.
    let mut both_signs = rows[1].clone();
    (both_signs[70], both_signs[200]) = (-9.0, 9.0);
    rows.push(both_signs);
    for (at, bad) in [(3, f32::INFINITY), (40, f32::NAN), (100, f32::NEG_INFINITY)] {
        let mut special = rows[1].clone();
        special[at] = bad;
        rows.push(special);
    }
    for k in variants() {
        for fmt in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K, ActFormat::F16] {
            let block = if fmt == ActFormat::Q8K { 256 } else { 32 };
            for x in rows.iter().filter(|x| x.len() % block == 0) {
                let mut want = vec![0u8; fmt.row_bytes(x.len())];
                quantize_row(fmt, x, &mut want);
                let mut got = vec![0xAAu8; want.len()];
                k.quantize_row(fmt, x, &mut got);
                assert_eq!(got, want, "{fmt:?} {}", k.name());
            }
        }
    }
}

/// The 16-row products give each row exactly the 8-row product's bits,
/// for every token count and widths up to 2048, so a matrix can mix them.
#[test]
fn wide_gemm_is_the_8_row_gemm_bit_for_bit() {
    let mut rng = Rng::new(11);
    let mut checked = 0;
    for ty in TYPES {
        for n in [32usize, 576, 2048].into_iter().filter(|n| n % ty.block_len() == 0) {
            let rows: Vec<Vec<u8>> = (0..GEMM_WIDE_ROWS).map(|_| random_row(ty, n, &mut rng)).collect();
            let acts: Vec<Vec<u8>> = (0..GEMM_TOKENS).map(|_| random_act(ty, n, &mut rng)).collect();
            let w: [&[u8]; GEMM_WIDE_ROWS] = core::array::from_fn(|r| &rows[r][..]);
            for k in variants() {
                let Some(wide) = k.gemm_wide(ty) else { continue };
                let gemm = k.gemm(ty).expect("a wide product comes with an 8-row one");
                for toks in 1..=GEMM_TOKENS {
                    let a: Vec<&[u8]> = acts[..toks].iter().map(|a| &a[..]).collect();
                    let mut out = [[f32::NAN; GEMM_WIDE_ROWS]; GEMM_TOKENS];
                    wide(n, &w, &a, &mut out, toks % 2 == 1);
                    for half in 0..2 {
                        let rows8: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| w[half * GEMM_ROWS + r]);
                        let mut want = [[f32::NAN; GEMM_ROWS]; GEMM_TOKENS];
                        gemm(n, &rows8, &a, &mut want, false);
                        for t in 0..toks {
                            let got = &out[t][half * GEMM_ROWS..(half + 1) * GEMM_ROWS];
                            let same = got.iter().zip(&want[t]).all(|(g, w)| g.to_bits() == w.to_bits());
                            assert!(same, "{ty} n={n} {} t={t}/{toks}: {got:?} vs {:?}", k.name(), want[t]);
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0 || Kernels::detect().gemm_wide(GgmlType::Q4_1).is_none(), "no wide kernel ran");
}

/// The row-parallel products against the scalar oracle, for every token
/// count a call takes and row widths of one block up to SmolLM2's 1536.
#[test]
fn every_gemm_matches_scalar() {
    let mut rng = Rng::new(7);
    let mut checked = 0;
    for ty in TYPES {
        let mut checked_type = false;
        for n in [32usize, 256, 576, 1536, 2048].into_iter().filter(|n| n % ty.block_len() == 0) {
            let rows: Vec<Vec<u8>> = (0..GEMM_ROWS).map(|_| random_row(ty, n, &mut rng)).collect();
            let acts: Vec<Vec<u8>> = (0..GEMM_TOKENS).map(|_| random_act(ty, n, &mut rng)).collect();
            let w: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| &rows[r][..]);
            for k in variants() {
                let Some(gemm) = k.gemm(ty) else { continue };
                for toks in 1..=GEMM_TOKENS {
                    let a: Vec<&[u8]> = acts[..toks].iter().map(|a| &a[..]).collect();
                    let mut out = [[f32::NAN; GEMM_ROWS]; GEMM_TOKENS];
                    gemm(n, &w, &a, &mut out, toks % 2 == 0);
                    for (t, a) in a.iter().enumerate() {
                        for (r, w) in w.iter().enumerate() {
                            let want = scalar::dot(ty, n, w, a);
                            let got = out[t][r];
                            let tol = 1e-4 * (1.0 + want.abs());
                            assert!(
                                (got - want).abs() <= tol,
                                "{ty} n={n} {} t={t}/{toks} r={r}: {got} vs {want}",
                                k.name()
                            );
                        }
                    }
                    checked += 1;
                    checked_type = true;
                }
            }
        }
        assert!(checked_type || Kernels::detect().gemm(ty).is_none(), "{ty}'s gemm kernel never ran");
    }
    assert!(checked > 0 || Kernels::detect().gemm(GgmlType::Q4_1).is_none(), "no gemm kernel ran");
}

/// The panel products give each row exactly the 8-row product's bits, for
/// token counts across pass boundaries and widths across unpacked chunks.
#[test]
fn panel_is_the_8_row_gemm_bit_for_bit() {
    let mut rng = Rng::new(13);
    let mut checked = 0;
    for ty in TYPES {
        for n in [256usize, 1280, 2304].into_iter().filter(|n| n % ty.block_len() == 0) {
            let rows: Vec<Vec<u8>> = (0..PANEL_ROWS).map(|_| random_row(ty, n, &mut rng)).collect();
            let acts: Vec<u8> = (0..40).flat_map(|_| random_act(ty, n, &mut rng)).collect();
            let arb = ty.act_format().row_bytes(n);
            let w: [&[u8]; PANEL_ROWS] = core::array::from_fn(|r| &rows[r][..]);
            for k in variants() {
                let Some(panel) = k.panel(ty) else { continue };
                let gemm = k.gemm(ty).expect("a panel product comes with an 8-row one");
                for toks in [1, 2, 7, 8, 9, 16, 23, 40] {
                    let mut out = vec![[f32::NAN; PANEL_ROWS]; toks];
                    panel(n, &w, &acts, arb, &mut out);
                    for t0 in (0..toks).step_by(GEMM_TOKENS) {
                        let t1 = (t0 + GEMM_TOKENS).min(toks);
                        let a: Vec<&[u8]> = (t0..t1).map(|t| &acts[t * arb..(t + 1) * arb]).collect();
                        for half in 0..PANEL_ROWS / GEMM_ROWS {
                            let rows8: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| w[half * GEMM_ROWS + r]);
                            let mut want = [[f32::NAN; GEMM_ROWS]; GEMM_TOKENS];
                            gemm(n, &rows8, &a, &mut want, false);
                            for t in t0..t1 {
                                let got = &out[t][half * GEMM_ROWS..(half + 1) * GEMM_ROWS];
                                let same = got.iter().zip(&want[t - t0]).all(|(g, w)| g.to_bits() == w.to_bits());
                                assert!(same, "{ty} n={n} {} t={t}/{toks}: {got:?} vs {:?}", k.name(), want[t - t0]);
                            }
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0 || Kernels::detect().panel(GgmlType::Q4_K).is_none(), "no panel kernel ran");
}

/// Runs tasks in order on the calling thread, but reports `.0` threads, so
/// matmul splits its work as it would for that many.
struct PretendThreads(usize);

impl crate::parallel::Parallel for PretendThreads {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n_tasks).for_each(task);
    }
}

/// A prompt-sized batch (split by row into panels where the CPU has them,
/// with a last task of fewer rows than a panel) gives every token exactly
/// the logits it gets alone, and the scalar oracle's within rounding.
#[test]
fn large_batches_give_each_token_its_lone_result() {
    let mut rng = Rng::new(17);
    let (n_in, n_out, n_tok) = (512, 72, 40);
    for ty in [GgmlType::Q4_K, GgmlType::Q4_0, GgmlType::Q6_K] {
        let data: Vec<u8> = (0..n_out).flat_map(|_| random_row(ty, n_in, &mut rng)).collect();
        let w = Matrix { ty, n_in, n_out, data: &data };
        let x: Vec<f32> = (0..n_in * n_tok).map(|_| rng.next_f64() as f32 - 0.5).collect();
        for k in variants() {
            let batch = matmul::matmul_f32(&k, &w, &x, &PretendThreads(2));
            for t in 0..n_tok {
                let lone = matmul::matmul_f32(&k, &w, &x[t * n_in..(t + 1) * n_in], &Serial);
                let mut a = vec![0u8; ty.act_format().row_bytes(n_in)];
                quantize_row(ty.act_format(), &x[t * n_in..(t + 1) * n_in], &mut a);
                for r in 0..n_out {
                    let (got, alone) = (batch[t * n_out + r], lone[r]);
                    assert_eq!(got.to_bits(), alone.to_bits(), "{ty} {} [{t}][{r}]: {got} vs {alone}", k.name());
                    let want = scalar::dot(ty, n_in, w.row(r), &a);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{ty} {} [{t}][{r}]", k.name());
                }
            }
        }
    }
}
