//! NEON kernels (part of the aarch64 baseline), plus `sdot` variants for
//! CPUs with the dotprod extension, which only the host can detect.

mod block32;
mod gemm;

pub(super) use block32::{tile_dotprod, tile_neon};
pub(super) use gemm::gemm_dotprod;
