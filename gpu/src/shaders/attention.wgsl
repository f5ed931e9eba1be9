// One workgroup per (head, row): scores against every cached key the row
// may see, softmax, and the weighted sum of values. Queries and
// probabilities are rounded to f16 before they meet the f16 cache, as the
// CPU path (and the reference) does.
struct Attn { n_head: u32, n_head_kv: u32, head_dim: u32, n_ctx: u32, window: u32, scale: f32, pad0: u32, pad1: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> KC: array<u32>;
@group(0) @binding(2) var<storage, read> VC: array<u32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<f32>;
@group(0) @binding(5) var<uniform> c: Attn;
@group(0) @binding(6) var<uniform> p: Pass;

const WG: u32 = 64u;
var<workgroup> q: array<f32, 512>;
var<workgroup> red: array<f32, 64>;

fn round16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wg.x;
    let t = wg.y;
    if (t >= p.n_tok) {
        return;
    }
    let hd = c.head_dim;
    let q_dim = c.n_head * hd;
    let kv_half = c.n_head_kv * hd / 2u;
    let kvh = h / (c.n_head / c.n_head_kv);
    let pos = p.pos0 + t;
    var start = 0u;
    if (c.window > 0u && pos + 1u > c.window) {
        start = pos + 1u - c.window;
    }
    let end = pos + 1u;
    for (var i = tid; i < hd; i += WG) {
        q[i] = round16(Q[t * q_dim + h * hd + i]);
    }
    workgroupBarrier();
    let sbase = (t * c.n_head + h) * c.n_ctx;
    var mx = -3.0e38;
    for (var j = start + tid; j < end; j += WG) {
        let kb = j * kv_half + kvh * hd / 2u;
        var s = 0.0;
        for (var i = 0u; i < hd / 2u; i++) {
            let k = unpack2x16float(KC[kb + i]);
            s += q[2u * i] * k.x + q[2u * i + 1u] * k.y;
        }
        s *= c.scale;
        S[sbase + j] = s;
        mx = max(mx, s);
    }
    red[tid] = mx;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (tid < k) {
            red[tid] = max(red[tid], red[tid + k]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = start + tid; j < end; j += WG) {
        let e = exp_cpu(S[sbase + j] - m);
        S[sbase + j] = e;
        sum += e;
    }
    red[tid] = sum;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (tid < k) {
            red[tid] += red[tid + k];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    // Each thread sums one pair of output dims over every position.
    for (var i = tid; i < hd / 2u; i += WG) {
        var acc = vec2<f32>(0.0, 0.0);
        for (var j = start; j < end; j++) {
            let pj = round16(S[sbase + j] * inv);
            acc += pj * unpack2x16float(VC[j * kv_half + kvh * hd / 2u + i]);
        }
        O[t * q_dim + h * hd + 2u * i] = acc.x;
        O[t * q_dim + h * hd + 2u * i + 1u] = acc.y;
    }
}
