// e^x as core's `exp_approx` computes it (within 4 ulp of libm), so that
// softmax and SiLU round as the CPU path does; a driver's `exp` may be far
// coarser (SPIR-V allows 3 + 2|x| ulp).
fn exp_cpu(x_in: f32) -> f32 {
    let x = clamp(x_in, -87.0, 88.0);
    // round() ties to even, as the CPU's add-and-subtract trick does; that
    // trick itself does not survive a shader compiler's reassociation.
    let n = round(x * 1.442695);
    let n_int = i32(n);
    let r = (x - n * 0.69314575) - n * 1.4286068e-6;
    var p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = (p * r) * r + r + 1.0;
    return p * bitcast<f32>(u32(n_int + 127) << 23u);
}
