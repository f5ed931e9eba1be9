// RMS norms and residual adds over rows of n. Modes:
// 0: B = norm(A) * w;  1: A += norm(B) * w;  2: A += B;  3: B = norm(B) * w.
struct Norm { n: u32, rows_per_tok: u32, mode: u32, eps: f32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> B: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<uniform> c: Norm;
@group(0) @binding(4) var<uniform> p: Pass;

const WG: u32 = 64u;
var<workgroup> red: array<vec2<f32>, 64>;

// The square sum is kept as an unevaluated pair (hi, lo), near the CPU's
// f64 sum, so the rounding of what follows rarely differs from it.
fn two_sum(a: vec2<f32>, b: f32) -> vec2<f32> {
    let s = a.x + b;
    let bb = s - a.x;
    let err = (a.x - (s - bb)) + (b - bb);
    return vec2<f32>(s, a.y + err);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wg.x + wg.y * 65535u;
    if (row >= p.n_tok * c.rows_per_tok) {
        return;
    }
    let base = row * c.n;
    if (c.mode == 2u) {
        for (var i = tid; i < c.n; i += WG) {
            A[base + i] += B[base + i];
        }
        return;
    }
    var s = vec2<f32>(0.0, 0.0);
    for (var i = tid; i < c.n; i += WG) {
        var v: f32;
        if (c.mode == 0u) { v = A[base + i]; } else { v = B[base + i]; }
        s = two_sum(s, v * v);
    }
    red[tid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (tid < k) {
            let o = red[tid + k];
            red[tid] = two_sum(vec2<f32>(red[tid].x, red[tid].y + o.y), o.x);
        }
        workgroupBarrier();
    }
    let n = f32(c.n);
    let q = red[0].x / n;
    let mean = q + (fma(-q, n, red[0].x) + red[0].y) / n;
    let scale = 1.0 / sqrt(mean + c.eps);
    for (var i = tid; i < c.n; i += WG) {
        if (c.mode == 0u) {
            B[base + i] = A[base + i] * scale * w[i];
        } else if (c.mode == 1u) {
            A[base + i] += B[base + i] * scale * w[i];
        } else {
            B[base + i] = B[base + i] * scale * w[i];
        }
    }
}
