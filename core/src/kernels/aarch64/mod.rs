//! NEON kernels (part of the aarch64 baseline), plus `sdot` variants for
//! CPUs with the dotprod extension, which only the host can detect.

mod block32;

pub(super) use block32::{tile_dotprod, tile_neon};
