//! Block layouts, byte-compatible with GGUF. Every size is asserted at compile
//! time; `bytemuck` casts them from the (2-byte aligned) tensor data safely.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;
use half::f16;

/// Elements in a K-quant super-block.
pub const QK_K: usize = 256;

macro_rules! block {
    ($(#[$m:meta])* $name:ident = $size:expr; { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Pod, Zeroable)]
        #[repr(C)]
        pub struct $name { $(pub $field: $ty),* }
        const _: () = assert!(size_of::<$name>() == $size);
    };
}

block!(BlockQ4_0 = 18; { d: f16, qs: [u8; 16] });
block!(BlockQ4_1 = 20; { d: f16, m: f16, qs: [u8; 16] });
block!(BlockQ5_0 = 22; { d: f16, qh: [u8; 4], qs: [u8; 16] });
block!(BlockQ5_1 = 24; { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] });
block!(BlockQ8_0 = 34; { d: f16, qs: [i8; 32] });
block!(
    /// Activations for Q4_1/Q5_1: `s` is `d` times the sum of `qs`.
    BlockQ8_1 = 36; { d: f16, s: f16, qs: [i8; 32] }
);
block!(BlockQ2K = 84; { scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16 });
block!(BlockQ3K = 110; { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 });
block!(BlockQ4K = 144; { d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] });
block!(BlockQ5K = 176; { d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] });
block!(BlockQ6K = 210; { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 });
block!(BlockIq4Nl = 18; { d: f16, qs: [u8; 16] });
block!(BlockIq4Xs = 136; { d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128] });
block!(
    /// Activations for K-quants: `bsums` are sums of each 16 `qs`.
    BlockQ8K = 292; { d: f32, qs: [i8; 256], bsums: [i16; 16] }
);

/// The non-linear levels of IQ4_NL and IQ4_XS.
pub const IQ4NL_LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
