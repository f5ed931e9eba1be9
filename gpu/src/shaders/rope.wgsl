// Rotates each head of each row by its position's (cos, sin) pairs,
// computed on the CPU exactly as core's forward pass computes them.
struct Rope { dim: u32, head_dim: u32, half: u32, neox: u32 }
struct Pass { n_tok: u32, pos0: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> V: array<f32>;
@group(0) @binding(1) var<storage, read> CS: array<vec2<f32>>;
@group(0) @binding(2) var<uniform> c: Rope;
@group(0) @binding(3) var<uniform> p: Pass;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let heads = c.dim / c.head_dim;
    let i = gid.x % c.half;
    let h = (gid.x / c.half) % heads;
    let t = gid.x / (c.half * heads);
    if (t >= p.n_tok) {
        return;
    }
    var a: u32;
    var b: u32;
    if (c.neox != 0u) { a = i; b = i + c.half; } else { a = 2u * i; b = 2u * i + 1u; }
    let base = t * c.dim + h * c.head_dim;
    let cs = CS[(p.pos0 + t) * c.half + i];
    let x0 = V[base + a];
    let x1 = V[base + b];
    V[base + a] = x0 * cs.x - x1 * cs.y;
    V[base + b] = x0 * cs.y + x1 * cs.x;
}
