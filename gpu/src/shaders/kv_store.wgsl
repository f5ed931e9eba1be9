// Appends the rows' keys and values to the cache as f16 pairs at pos0 ...
struct Kv { kv_dim: u32, pad0: u32, pad1: u32, pad2: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> K: array<f32>;
@group(0) @binding(1) var<storage, read> V: array<f32>;
@group(0) @binding(2) var<storage, read_write> KC: array<u32>;
@group(0) @binding(3) var<storage, read_write> VC: array<u32>;
@group(0) @binding(4) var<uniform> c: Kv;
@group(0) @binding(5) var<uniform> p: Pass;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = c.kv_dim / 2u;
    let t = gid.x / half;
    let i = gid.x % half;
    if (t >= p.n_tok) {
        return;
    }
    let src = t * c.kv_dim + 2u * i;
    let dst = (p.pos0 + t) * half + i;
    KC[dst] = pack2x16float(vec2<f32>(K[src], K[src + 1u]));
    VC[dst] = pack2x16float(vec2<f32>(V[src], V[src + 1u]));
}
