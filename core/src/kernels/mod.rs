//! Compute kernels: a scalar oracle, SIMD variants per architecture, and a
//! table of them chosen once from a [`CpuCaps`] value.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[macro_use]
mod shared;
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod aarch64;
pub mod activation;
mod attn;
mod caps;
pub mod matmul;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_64;

#[cfg(test)]
mod tests;

pub use caps::CpuCaps;

use crate::quant::GgmlType;

/// Rows of weights (at most [`TILE`]) times rows of encoded activations (at
/// most [`TILE`]), each `n` elements: `out[r][t] = dot(w[r], a[t])`.
pub type TileFn = fn(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut);

/// The most weight rows, and the most activation rows, in one tile.
pub const TILE: usize = 4;

/// A tile's results, indexed `[weight row][activation row]`.
pub type TileOut = [[f32; TILE]; TILE];

/// Weight rows one [`GemmFn`] call multiplies.
pub const GEMM_ROWS: usize = 8;
/// The most activation rows one [`GemmFn`] call takes.
pub const GEMM_TOKENS: usize = 16;

/// [`GEMM_ROWS`] weight rows times 1 to [`GEMM_TOKENS`] encoded activation
/// rows, each `n` elements: `out[t][r] = dot(w[r], a[t])`. Faster than
/// tiles for several tokens where a type has one ([`Kernels::gemm`]).
/// `prefetch`: fetch the next rows (the matrix's rows after these) while
/// these are computed, which pays for a few tokens read against rows
/// streaming from memory (decode batches: +27% at 8 sequences) and costs
/// prompt batches (-6%), whose rows the hardware prefetcher follows.
pub type GemmFn = GemmRowsFn<GEMM_ROWS>;

/// A row-parallel product over `R` weight rows ([`GemmFn`], [`GemmWideFn`]).
pub type GemmRowsFn<const R: usize> =
    fn(n: usize, w: &[&[u8]; R], a: &[&[u8]], out: &mut [[f32; R]; GEMM_TOKENS], prefetch: bool);

/// Weight rows one [`GemmWideFn`] call multiplies.
pub const GEMM_WIDE_ROWS: usize = 16;

/// [`GemmFn`] over [`GEMM_WIDE_ROWS`] rows, on CPUs whose vectors hold 16
/// rows' lanes ([`Kernels::gemm_wide`]). Each row's result is bit-identical
/// to [`GemmFn`]'s, so a matrix's rows may be split between the two.
pub type GemmWideFn = GemmRowsFn<GEMM_WIDE_ROWS>;

/// Weight rows one [`PanelFn`] call multiplies.
pub const PANEL_ROWS: usize = 16;

/// [`PANEL_ROWS`] weight rows times any number of encoded activation rows
/// (the first at `acts`, each `act_row_bytes` after the last), each `n`
/// elements: `out[t][r] = dot(w[r], a[t])`, one `out` entry per token.
/// For prompts: each weight block is unpacked once for all the tokens,
/// where [`GemmFn`] unpacks it again for every few. Each row's result is
/// bit-identical to [`GemmFn`]'s ([`Kernels::panel`]).
pub type PanelFn =
    fn(n: usize, w: &[&[u8]; PANEL_ROWS], acts: &[u8], act_row_bytes: usize, out: &mut [[f32; PANEL_ROWS]]);

/// The kernels chosen for this CPU. Built once; cheap to copy.
#[derive(Clone, Copy)]
pub struct Kernels {
    caps: CpuCaps,
    name: &'static str,
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
    #[cfg(target_arch = "x86_64")]
    vnni: bool,
    #[cfg(target_arch = "x86_64")]
    avx512: bool,
    #[cfg(target_arch = "aarch64")]
    neon: bool,
    #[cfg(target_arch = "aarch64")]
    dotprod: bool,
}

impl core::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).field("caps", &self.caps).finish()
    }
}

impl Kernels {
    /// Kernels for the CPU this runs on.
    pub fn detect() -> Self {
        Self::with_caps(CpuCaps::detect())
    }

    /// Kernels restricted to `wanted`; features the CPU (or OS) lacks are
    /// dropped, so a kernel is never chosen that could fault.
    pub fn with_caps(wanted: CpuCaps) -> Self {
        let caps = wanted.intersect(CpuCaps::detect());
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = caps.avx2 && caps.fma && caps.f16c;
            let vnni = avx2 && caps.avxvnni;
            let avx512 = avx2 && caps.avx512;
            let name = match (avx2, vnni, avx512) {
                (true, _, true) => "x86_64-avx512vl-vnni",
                (true, true, false) => "x86_64-avx2-vnni",
                (true, false, false) => "x86_64-avx2",
                _ => "scalar",
            };
            Self { caps, name, avx2, vnni, avx512 }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let (neon, dotprod) = (caps.neon, caps.neon && caps.dotprod);
            let name = match (neon, dotprod) {
                (true, true) => "aarch64-neon-dotprod",
                (true, false) => "aarch64-neon",
                _ => "scalar",
            };
            Self { caps, name, neon, dotprod }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Self { caps, name: "scalar" }
        }
    }

    /// Only the scalar oracle.
    pub fn scalar() -> Self {
        Self::with_caps(CpuCaps::NONE)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Why these kernels are the slow scalar ones, when the CPU lacks what
    /// the SIMD kernels need (a host prints it once); `None` otherwise.
    pub fn fallback_notice(&self) -> Option<&'static str> {
        if self.name != Self::scalar().name {
            return None;
        }
        if cfg!(target_arch = "x86_64") {
            Some("this CPU lacks AVX2, FMA or F16C: using the scalar kernels, several times slower")
        } else if cfg!(target_arch = "aarch64") {
            None
        } else {
            Some("no SIMD kernels for this CPU architecture: using the scalar kernels")
        }
    }

    pub fn caps(&self) -> CpuCaps {
        self.caps
    }

    /// The tile product for weights of type `ty`.
    pub fn tile(&self, ty: GgmlType) -> TileFn {
        #[cfg(target_arch = "x86_64")]
        {
            let simd = if self.avx512 { x86_64::tile_avx512(ty) } else { None };
            let simd = simd.or_else(|| if self.vnni { x86_64::tile_vnni(ty) } else { None });
            let simd = simd.or_else(|| if self.avx2 { x86_64::tile_avx2(ty) } else { None });
            let simd = simd.or_else(|| if self.avx2 { x86_64::tile_kquant(ty) } else { None });
            let simd = simd.or_else(|| if self.avx2 { x86_64::tile_half(ty) } else { None });
            if let Some(f) = simd.or_else(|| if self.avx2 { x86_64::tile_autovec(ty) } else { None }) {
                return f;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let simd = if self.dotprod { aarch64::tile_dotprod(ty) } else { None };
            if let Some(f) = simd.or_else(|| if self.neon { aarch64::tile_neon(ty) } else { None }) {
                return f;
            }
        }
        scalar_tile(ty)
    }

    /// The row-parallel product for several tokens of weights of type
    /// `ty`, where this CPU has one.
    pub fn gemm(&self, ty: GgmlType) -> Option<GemmFn> {
        #[cfg(target_arch = "x86_64")]
        {
            if self.avx512 {
                return x86_64::gemm_avx512(ty);
            }
            if self.vnni {
                return x86_64::gemm_vnni(ty);
            }
            if self.avx2 {
                return x86_64::gemm_avx2(ty);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if self.dotprod {
            return aarch64::gemm_dotprod(ty);
        }
        let _ = ty;
        None
    }

    /// The 16-row product for `ty`, where this CPU has one; always
    /// alongside [`Kernels::gemm`], which takes a matrix's leftover 8 rows.
    pub fn gemm_wide(&self, ty: GgmlType) -> Option<GemmWideFn> {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            return x86_64::gemm_wide_avx512(ty);
        }
        let _ = ty;
        None
    }

    /// The panel product for `ty`, where this CPU has one; always alongside
    /// [`Kernels::gemm`], which takes a matrix's leftover rows.
    pub fn panel(&self, ty: GgmlType) -> Option<PanelFn> {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            return x86_64::panel_avx512(ty);
        }
        let _ = ty;
        None
    }

    /// One weight row of `ty` times one encoded activation row.
    pub fn dot(&self, ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
        let mut out = [[0.0; TILE]; TILE];
        self.tile(ty)(n, &[w], &[a], &mut out);
        out[0][0]
    }

    /// `sum(a[i] * b[i])` of f16 keys with f32 queries (attention scores).
    pub fn dot_f16_f32(&self, a: &[half::f16], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ATTN_AVX2.0(a, b);
        }
        scalar::dot_f16_f32(a, b)
    }

    /// `out[j] = dot_f16_f32(&keys[j * stride..][..q.len()], q)` for every
    /// `j`, with the same sums: one call for all of decode's keys of a head.
    pub fn dot_f16_strided(&self, q: &[f32], keys: &[half::f16], stride: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::STRIDED_AVX2.0(q, keys, stride, out);
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.dot_f16_f32(&keys[j * stride..j * stride + q.len()], q);
        }
    }

    /// `out = Σ p[j] * values[j * stride..][..out.len()]`, as `axpy_f16`
    /// from zero in `j` order: one call for all of decode's values of a head.
    pub fn weighted_sum_f16(&self, p: &[f32], values: &[half::f16], stride: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::STRIDED_AVX2.1(p, values, stride, out);
        }
        out.fill(0.0);
        let hd = out.len();
        for (j, &pj) in p.iter().enumerate() {
            self.axpy_f16(out, pj, &values[j * stride..j * stride + hd]);
        }
    }

    /// [`Self::dot_f16_strided`] for `qs.len() / hd` queries at once, each key
    /// read once for all: `out[i * n + j]` for query `i` and key `j`, each
    /// equal to the one-query kernel's score.
    pub fn dot_f16_strided_multi(&self, qs: &[f32], hd: usize, keys: &[half::f16], stride: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::STRIDED_MULTI_AVX2.0(qs, hd, keys, stride, out);
        }
        let n = out.len() / (qs.len() / hd.max(1)).max(1);
        for (q, o) in qs.chunks_exact(hd.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
            self.dot_f16_strided(q, keys, stride, o);
        }
    }

    /// [`Self::weighted_sum_f16`] for `ps.len()` queries at once into
    /// `outs` (one row of `outs.len() / ps.len()` per query), each value row
    /// read once for all; each output equals the one-query kernel's.
    pub fn weighted_sum_f16_multi(&self, ps: &[&[f32]], values: &[half::f16], stride: usize, outs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::STRIDED_MULTI_AVX2.1(ps, values, stride, outs);
        }
        let cols = outs.len() / ps.len().max(1);
        for (p, o) in ps.iter().zip(outs.chunks_exact_mut(cols.max(1))) {
            self.weighted_sum_f16(p, values, stride, o);
        }
    }

    /// [`activation::softmax`], bit for bit.
    pub fn softmax(&self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ACTIVATION_AVX2.0(x);
        }
        activation::softmax(x)
    }

    /// `gate[i] = silu(gate[i]) * up[i]` (SwiGLU), as [`activation::silu`] computes it.
    pub fn swiglu(&self, gate: &mut [f32], up: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ACTIVATION_AVX2.1(gate, up);
        }
        gate.iter_mut().zip(up).for_each(|(g, &u)| *g = activation::silu(*g) * u);
    }

    /// [`crate::quant::q8::quantize_row`], byte for byte.
    pub fn quantize_row(&self, fmt: crate::quant::ActFormat, x: &[f32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::quantize_row_avx2(fmt, x, out);
        }
        crate::quant::q8::quantize_row(fmt, x, out)
    }

    /// Rounds every value to the nearest f16 (ties to even), kept as f32.
    pub fn round_to_f16(&self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ROUND_F16_AVX2(x);
        }
        x.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    }

    /// `dst[i] = src[i]` widened from f16.
    pub fn f16_to_f32(&self, src: &[half::f16], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ROWS_AVX2.0(src, dst);
        }
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
    }

    /// `out[j] = q · keys[j]` over `out.len()` key rows of `q.len()`
    /// (attention scores), in `dot_f16_f32`'s arithmetic order.
    pub fn dot_rows(&self, q: &[f32], keys: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ROWS_AVX2.1(q, keys, out);
        }
        attn::dot_rows(q, keys, out)
    }

    /// [`Self::dot_rows`] for several queries of `hd` (the rows of `qs`)
    /// against the same keys: `out` holds each query's scores in turn. The
    /// same sums, with each key read once for all the queries.
    pub fn dot_rows_multi(&self, qs: &[f32], hd: usize, keys: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::DOT_ROWS_MULTI_AVX2(qs, hd, keys, out);
        }
        let n = out.len() / (qs.len() / hd.max(1)).max(1);
        for (q, o) in qs.chunks_exact(hd.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
            self.dot_rows(q, keys, o);
        }
    }

    /// `out = sum_j p[j] * values[j]` over `p.len()` value rows (attention
    /// output), in `axpy_f16`'s arithmetic order.
    pub fn weighted_sum(&self, p: &[f32], values: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ROWS_AVX2.2(p, values, out);
        }
        attn::weighted_sum(p, values, out)
    }

    /// [`Self::weighted_sum`] for `outs.len() / hd` queries at once: `ps`
    /// holds each query's scores over the same `values` rows, one after
    /// another. Each output equals its own `weighted_sum`.
    pub fn weighted_sum_multi(&self, ps: &[f32], values: &[f32], hd: usize, outs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::WEIGHTED_MULTI_AVX2(ps, values, hd, outs);
        }
        let m = ps.len() / (outs.len() / hd.max(1)).max(1);
        for (p, o) in ps.chunks_exact(m.max(1)).zip(outs.chunks_exact_mut(hd.max(1))) {
            self.weighted_sum(p, values, o);
        }
    }

    /// `out[i] += p * v[i]` over f32 values, in `axpy_f16`'s arithmetic order.
    pub fn axpy_f32(&self, out: &mut [f32], p: f32, v: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::AXPY_F32_AVX2(out, p, v);
        }
        out.iter_mut().zip(v).for_each(|(o, x)| *o += p * x);
    }

    /// `out[i] += p * v[i]` over f16 values (attention-weighted sum).
    pub fn axpy_f16(&self, out: &mut [f32], p: f32, v: &[half::f16]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return x86_64::ATTN_AVX2.1(out, p, v);
        }
        scalar::axpy_f16(out, p, v)
    }
}

fn scalar_tile(ty: GgmlType) -> TileFn {
    macro_rules! table {
        ($($t:ident),*) => {
            match ty {
                $(GgmlType::$t => |n, w, a, out| scalar::tile(GgmlType::$t, n, w, a, out),)*
                _ => |_, _, _, out| *out = [[f32::NAN; TILE]; TILE],
            }
        };
    }
    table!(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)
}
