// G = act(G) * U: SiLU, or Gemma's GELU as the reference tabulates it
// (input and result rounded to f16, exact outside (-10, 10)).
struct Gate { n: u32, gelu: u32, pad0: u32, pad1: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> G: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<uniform> c: Gate;
@group(0) @binding(3) var<uniform> p: Pass;

fn round16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

fn gelu(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    let v = round16(x);
    return round16(0.5 * v * (1.0 + tanh(0.7978846 * v * (1.0 + 0.044715 * v * v))));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= p.n_tok * c.n) {
        return;
    }
    let g = G[i];
    var a: f32;
    if (c.gelu != 0u) { a = gelu(g); } else { a = g / (1.0 + exp_cpu(-g)); }
    G[i] = a * U[i];
}
