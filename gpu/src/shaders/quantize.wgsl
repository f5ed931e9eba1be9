// Rounds activations as the CPU path (and the reference) encodes them
// before a product, and writes back the values that encoding stands for:
// mode 0: Q8_0/Q8_1 (32-value blocks, scale amax/127 kept as f16);
// mode 1: Q8_K (256-value blocks, scale -max/127 by the signed maximum);
// mode 2: f16.
struct Quant { n: u32, mode: u32, pad0: u32, pad1: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> XQ: array<f32>;
@group(0) @binding(2) var<uniform> c: Quant;
@group(0) @binding(3) var<uniform> p: Pass;
// Q8_1's per-block sum d * Σq, kept as f16 as the CPU's encoding keeps it.
@group(0) @binding(4) var<storage, read_write> SX: array<f32>;
// Q8_0/Q8_1: each block's scale (f16-rounded); XQ then holds the integers.
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;

fn round16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var size = 32u;
    if (c.mode == 1u) { size = 256u; }
    if (c.mode == 2u) { size = 1u; }
    let per_tok = c.n / size;
    if (gid.x >= p.n_tok * per_tok) {
        return;
    }
    let base = gid.x * size;
    if (c.mode == 2u) {
        XQ[base] = round16(X[base]);
        return;
    }
    var amax = 0.0;
    var max_signed = 0.0;
    for (var i = 0u; i < size; i++) {
        let v = X[base + i];
        if (abs(v) > amax) {
            amax = abs(v);
            max_signed = v;
        }
    }
    if (amax == 0.0) {
        for (var i = 0u; i < size; i++) {
            XQ[base + i] = 0.0;
        }
        if (c.mode == 0u) {
            SX[gid.x] = 0.0;
            DX[gid.x] = 0.0;
        }
        return;
    }
    if (c.mode == 0u) {
        let d32 = amax / 127.0;
        let d = round16(d32);
        let id = 127.0 / amax;
        var sum = 0.0;
        for (var i = 0u; i < size; i++) {
            let q = round(X[base + i] * id);
            XQ[base + i] = q;
            sum += q;
        }
        SX[gid.x] = round16(d32 * sum);
        DX[gid.x] = d;
    } else {
        let iscale = -127.0 / max_signed;
        let d = 1.0 / iscale;
        for (var i = 0u; i < size; i++) {
            XQ[base + i] = min(round(iscale * X[base + i]), 127.0) * d;
        }
    }
}
