//! Finding an adapter and opening it, with every wgpu error kept for the
//! caller instead of wgpu's default panic.

use std::fmt;
use std::sync::{Arc, Mutex};

/// One adapter wgpu can see.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub name: String,
    /// Vulkan, Metal, Dx12, ...
    pub backend: String,
    /// Discrete, integrated, virtual, cpu (a software rasterizer such as lavapipe) or other.
    pub kind: String,
    /// The GPU shares the CPU's memory (integrated GPUs, Apple silicon,
    /// software renderers), so its buffers come out of RAM.
    pub unified: bool,
    /// The largest single buffer the adapter allows.
    pub max_buffer_bytes: u64,
}

/// Why the GPU could not be used.
#[derive(Debug)]
pub enum GpuError {
    NoAdapter,
    NoSuchAdapter {
        index: usize,
        count: usize,
    },
    RequestDevice(wgpu::RequestDeviceError),
    /// wgpu reported an error on the device (validation, out of memory, a lost device).
    Device(wgpu::Error),
    Map(wgpu::BufferAsyncError),
    MapRange(wgpu::MapRangeError),
    Poll(wgpu::PollError),
    /// The model has something this backend does not compute.
    Unsupported {
        what: String,
    },
    /// A buffer the window needs is larger than the adapter allows.
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoAdapter => write!(f, "no GPU adapter found (is a Vulkan, Metal or DX12 driver installed?)"),
            GpuError::NoSuchAdapter { index, count } => {
                write!(f, "there is no adapter {index}: {count} found (see `prima devices`)")
            }
            GpuError::RequestDevice(_) => write!(f, "the GPU adapter refused to open a device"),
            GpuError::Device(_) => write!(f, "the GPU device reported an error"),
            GpuError::Map(_) | GpuError::MapRange(_) => write!(f, "reading results back from the GPU failed"),
            GpuError::Poll(_) => write!(f, "waiting for the GPU failed"),
            GpuError::Unsupported { what } => write!(f, "the GPU backend does not support {what}"),
            GpuError::TooLarge { what, bytes, limit } => {
                write!(f, "the GPU's {what} would take {bytes} bytes, over the adapter's limit of {limit}")
            }
        }
    }
}

impl std::error::Error for GpuError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GpuError::RequestDevice(e) => Some(e),
            GpuError::Device(e) => Some(e),
            GpuError::Map(e) => Some(e),
            GpuError::MapRange(e) => Some(e),
            GpuError::Poll(e) => Some(e),
            _ => None,
        }
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn describe(a: &wgpu::Adapter) -> Adapter {
    let info = a.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    };
    let unified = matches!(info.device_type, wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::Cpu)
        || (info.backend == wgpu::Backend::Metal && cfg!(target_arch = "aarch64"));
    Adapter {
        name: info.name,
        backend: format!("{:?}", info.backend),
        kind: kind.into(),
        unified,
        max_buffer_bytes: max_binding(&a.limits()),
    }
}

/// Compute-capable adapters, best first: discrete, integrated, virtual, then software.
fn ranked() -> Vec<wgpu::Adapter> {
    let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    all.retain(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS));
    all.sort_by_key(rank);
    all
}

/// Every adapter, in the order `--gpu-device` counts them.
pub fn adapters() -> Vec<Adapter> {
    ranked().iter().map(describe).collect()
}

/// An open device and its queue. wgpu's errors land in `errors` (its
/// default is to panic), and each operation checks for them. A clone is
/// the same device (a device's windows of layers share it).
#[derive(Clone)]
pub struct Gpu {
    pub adapter: Adapter,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    errors: Arc<Mutex<Option<wgpu::Error>>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.adapter).finish()
    }
}

impl Gpu {
    /// Opens adapter `index` of [`adapters`], or the best one.
    pub fn open(index: Option<usize>) -> Result<Self, GpuError> {
        let mut all = ranked();
        let count = all.len();
        let adapter = match index {
            None if count == 0 => return Err(GpuError::NoAdapter),
            None => all.swap_remove(0),
            Some(i) if i < count => all.swap_remove(i),
            Some(index) => return Err(GpuError::NoSuchAdapter { index, count }),
        };
        let limits = adapter.limits();
        let desc =
            wgpu::DeviceDescriptor { label: Some("prima"), required_limits: limits.clone(), ..Default::default() };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(GpuError::RequestDevice)?;
        let errors: Arc<Mutex<Option<wgpu::Error>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(e);
        }));
        Ok(Self { adapter: describe(&adapter), device, queue, limits, errors })
    }

    /// The first error wgpu reported since the last check.
    pub(crate) fn check(&self) -> Result<(), GpuError> {
        let mut first = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        first.take().map_or(Ok(()), |e| Err(GpuError::Device(e)))
    }

    /// Waits until the GPU has run everything submitted.
    pub(crate) fn wait(&self) -> Result<(), GpuError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(GpuError::Poll)?;
        self.check()
    }

    /// The largest buffer a binding may see.
    pub(crate) fn max_binding(&self) -> u64 {
        max_binding(&self.limits)
    }
}

/// The largest buffer a storage binding may see under `limits`.
fn max_binding(limits: &wgpu::Limits) -> u64 {
    limits.max_buffer_size.min(limits.max_storage_buffer_binding_size)
}
