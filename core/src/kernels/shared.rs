//! What the SIMD kernels of every architecture share: the 32-element block
//! types as const ids, their byte layout, the type-to-kernel table, and the
//! dispatch of a tile call to its const-generic shape.

/// Const-generic ids of the 32-element block types.
pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q5_0: u8 = 2;
pub(super) const Q5_1: u8 = 3;
pub(super) const Q8_0: u8 = 4;
pub(super) const IQ4_NL: u8 = 5;

/// Bytes per weight block, bytes per activation block, and whether the
/// block has a minimum (unsigned levels; Q8_1 activations carry their sum).
pub(super) const fn layout(ty: u8) -> (usize, usize, bool) {
    match ty {
        Q4_0 | IQ4_NL => (18, 34, false),
        Q4_1 => (20, 36, true),
        Q5_0 => (22, 34, false),
        Q5_1 => (24, 36, true),
        _ => (34, 34, false),
    }
}

/// `Some(kernel)` from module `$m`'s `tile_any::<ID>` for a 32-element block
/// type `$ty`; `None` (by `?`, so use it in a function returning `Option`)
/// for the others.
macro_rules! block32_table {
    ($m:ident, $ty:expr) => {{
        use $crate::kernels::shared::{IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
        // SAFETY (every arm): the kernel table asks for module `$m`'s kernels
        // only when the CPU has its features (detected, or reported by the host).
        #[allow(unused_unsafe)]
        Some(match $ty {
            GgmlType::Q4_0 => |n, w, a, o| unsafe { $m::tile_any::<Q4_0>(n, w, a, o) },
            GgmlType::Q4_1 => |n, w, a, o| unsafe { $m::tile_any::<Q4_1>(n, w, a, o) },
            GgmlType::Q5_0 => |n, w, a, o| unsafe { $m::tile_any::<Q5_0>(n, w, a, o) },
            GgmlType::Q5_1 => |n, w, a, o| unsafe { $m::tile_any::<Q5_1>(n, w, a, o) },
            GgmlType::Q8_0 => |n, w, a, o| unsafe { $m::tile_any::<Q8_0>(n, w, a, o) },
            GgmlType::IQ4_NL => |n, w, a, o| unsafe { $m::tile_any::<IQ4_NL>(n, w, a, o) },
            _ => None?,
        })
    }};
}

/// Calls `$tile::<$pre.., R, T>($lead.., n, w, a, out)` with the shape of
/// `w` x `a`: the 4x4, 4x1 and 1x4 instances where they fit, 1x1 pieces
/// elsewhere.
macro_rules! tile_by_shape {
    ($tile:ident [$($pre:ident),*] [$($lead:expr),*] $n:expr, $w:expr, $a:expr, $out:expr) => {
        match ($w.len(), $a.len()) {
            (4, 4) => $tile::<$($pre,)* 4, 4>($($lead,)* $n, $w, $a, $out),
            (4, 1) => $tile::<$($pre,)* 4, 1>($($lead,)* $n, $w, $a, $out),
            (1, 4) => $tile::<$($pre,)* 1, 4>($($lead,)* $n, $w, $a, $out),
            (rows, toks) => {
                let mut one = [[0.0; 4]; 4];
                for r in 0..rows.min(4) {
                    for t in 0..toks.min(4) {
                        $tile::<$($pre,)* 1, 1>($($lead,)* $n, &$w[r..], &$a[t..], &mut one);
                        $out[r][t] = one[0][0];
                    }
                }
            }
        }
    };
}
