// y[t][r] = W[r] · x[t] (+ bias[r]), for up to TB tokens per workgroup, so
// each weight chunk is dequantized once for TB tokens.
struct Mat { n_in: u32, n_out: u32, row_bytes: u32, has_bias: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> m: Mat;
@group(0) @binding(4) var<uniform> p: Pass;
@group(0) @binding(5) var<storage, read> B: array<f32>;
@group(0) @binding(6) var<storage, read> SX: array<f32>;
@group(0) @binding(7) var<storage, read> DX: array<f32>;

const WG: u32 = 64u;
const TB: u32 = 8u;
var<workgroup> red: array<f32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    let t0 = wg.y * TB;
    if (r >= m.n_out || t0 >= p.n_tok) {
        return;
    }
    let nt = min(TB, p.n_tok - t0);
    let row = r * m.row_bytes;
    let n_chunks = m.n_in / 32u;
    var acc: array<f32, 8>;
    for (var c = tid; c < n_chunks; c += WG) {
        vmin = 0.0;
        dequant32(row, c);
        for (var t = 0u; t < nt; t++) {
            let xb = (t0 + t) * m.n_in + c * 32u;
            var s = 0.0;
            for (var i = 0u; i < 32u; i++) {
                s += vals[i] * X[xb + i];
            }
            let blk = (t0 + t) * n_chunks + c;
            if (INT_DOT) {
                // Integers summed exactly, then scaled: (d_w * d_x) * Σ q_w q_x.
                s = (dscale * DX[blk]) * s;
            }
            if (vmin != 0.0) {
                s += vmin * SX[blk];
            }
            acc[t] += s;
        }
    }
    for (var t = 0u; t < TB; t++) {
        red[t * WG + tid] = acc[t];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            for (var t = 0u; t < TB; t++) {
                red[t * WG + tid] += red[t * WG + tid + s];
            }
        }
        workgroupBarrier();
    }
    if (tid < nt) {
        var y = red[tid * WG];
        if (m.has_bias != 0u) {
            y += B[r];
        }
        Y[(t0 + tid) * m.n_out + r] = y;
    }
}
