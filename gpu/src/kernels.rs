//! The WGSL kernels, compiled once per device. A matrix kernel is the
//! shared byte readers, one type's `dequant32` and the product's body.

use std::collections::HashMap;

use prima_core::GgmlType;

use crate::device::{Gpu, GpuError};

const BYTES: &str = include_str!("shaders/bytes.wgsl");
const EXP: &str = include_str!("shaders/exp.wgsl");
const MATMUL: &str = include_str!("shaders/matmul.wgsl");

/// The dequantizer of each type the GPU computes.
fn dequant(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => include_str!("shaders/q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("shaders/q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("shaders/q5_0.wgsl"),
        GgmlType::Q5_1 => include_str!("shaders/q5_1.wgsl"),
        GgmlType::Q8_0 => include_str!("shaders/q8_0.wgsl"),
        GgmlType::Q4_K => include_str!("shaders/q4_k.wgsl"),
        GgmlType::Q6_K => include_str!("shaders/q6_k.wgsl"),
        GgmlType::F16 => include_str!("shaders/f16.wgsl"),
        GgmlType::F32 => include_str!("shaders/f32.wgsl"),
        _ => return None,
    })
}

/// Whether the GPU has a matrix kernel for `ty`.
pub fn supports(ty: GgmlType) -> bool {
    dequant(ty).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Norm,
    Rope,
    KvStore,
    Attention,
    Gate,
    Quantize,
}

/// Compiled pipelines: element-wise kernels, and a matrix kernel per type in use.
pub(crate) struct Kernels {
    pub ops: HashMap<Op, wgpu::ComputePipeline>,
    pub matmul: HashMap<GgmlType, wgpu::ComputePipeline>,
}

fn pipeline(gpu: &Gpu, label: &str, source: &str) -> wgpu::ComputePipeline {
    let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

impl Kernels {
    pub fn new(gpu: &Gpu, types: impl IntoIterator<Item = GgmlType>) -> Result<Self, GpuError> {
        let ops = [
            (Op::Norm, include_str!("shaders/norm.wgsl")),
            (Op::Rope, include_str!("shaders/rope.wgsl")),
            (Op::KvStore, include_str!("shaders/kv_store.wgsl")),
            (Op::Attention, include_str!("shaders/attention.wgsl")),
            (Op::Gate, include_str!("shaders/gate.wgsl")),
            (Op::Quantize, include_str!("shaders/quantize.wgsl")),
        ];
        let ops = ops
            .into_iter()
            .map(|(op, src)| (op, pipeline(gpu, &format!("{op:?}"), &format!("{EXP}\n{src}"))))
            .collect();
        let mut matmul = HashMap::new();
        for ty in types {
            if matmul.contains_key(&ty) {
                continue;
            }
            let body = dequant(ty).ok_or_else(|| GpuError::Unsupported { what: format!("{ty} matrices") })?;
            let source = format!("{BYTES}\n{body}\n{MATMUL}");
            matmul.insert(ty, pipeline(gpu, &format!("matmul {ty}"), &source));
        }
        gpu.check()?;
        Ok(Self { ops, matmul })
    }
}
