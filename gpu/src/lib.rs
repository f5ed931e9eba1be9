//! prima-rs's GPU backend: a window of layers on wgpu (Vulkan on Linux,
//! Android and Windows, Metal on macOS, DX12 on Windows), behind core's
//! `LayerBackend` seam. WGSL kernels dequantize GGUF blocks in the shader,
//! so weights are uploaded once in the file's layout.

mod check;
mod device;
mod kernels;
mod layers;

pub use check::{measure, product};
pub use device::{adapters, Adapter, Gpu, GpuError};
pub use kernels::supports;
pub use layers::GpuLayers;
