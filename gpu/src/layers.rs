//! A window of layers on the GPU: the weights uploaded once in their GGUF
//! layout, activations and a KV cache per slot kept on the device, and one
//! submission per pass whose only transfers are the hidden states in and out.

use std::ops::Range;
use std::sync::{mpsc, Arc};

use prima_core::kernels::matmul::Matrix;
use prima_core::model::{Arch, BackendFailure, LayerBackend, LayerWeights, SeqSpan};
use prima_core::quant::ActFormat;
use prima_core::{GgmlType, Model, ModelError};

use crate::device::{Gpu, GpuError};
use crate::kernels::{Kernels, Op};

/// Tokens per workgroup of the matrix kernel (`TB` in matmul.wgsl).
const MATMUL_TOKENS: u32 = 8;
/// Most rows one submission carries; longer inputs go in pieces.
pub(crate) const MAX_ROWS: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Pipe {
    Op(Op),
    Mat(GgmlType),
}

/// How many workgroups a dispatch needs for `n_tok` rows.
#[derive(Debug, Clone, Copy)]
enum Grid {
    /// One workgroup per output row and `MATMUL_TOKENS` tokens.
    Matmul { n_out: u32 },
    /// One workgroup per row of `per_tok` rows a token.
    Rows { per_tok: u32 },
    /// One thread per element of `per_tok` elements a token, 64 a workgroup.
    Threads { per_tok: u32 },
    /// One workgroup per (head, token).
    Heads { n_head: u32 },
}

impl Grid {
    fn size(self, n_tok: u32) -> (u32, u32, u32) {
        match self {
            Grid::Matmul { n_out } => (n_out, n_tok.div_ceil(MATMUL_TOKENS), 1),
            Grid::Rows { per_tok } => (n_tok * per_tok, 1, 1),
            Grid::Threads { per_tok } => ((n_tok * per_tok).div_ceil(64), 1, 1),
            Grid::Heads { n_head } => (n_head, n_tok, 1),
        }
    }
}

/// One kernel launch of a layer: its bind group, or one per slot where it
/// touches the slot's cache.
pub(crate) struct Dispatch {
    pipe: Pipe,
    groups: Vec<wgpu::BindGroup>,
    grid: Grid,
}

/// Layers `layers` of a model, on a GPU.
pub struct GpuLayers {
    gpu: Gpu,
    kernels: Kernels,
    layers: Range<usize>,
    n_embd: usize,
    n_ctx: usize,
    filled: Vec<usize>,
    x: wgpu::Buffer,
    staging: wgpu::Buffer,
    pass: wgpu::Buffer,
    plan: Vec<Dispatch>,
}

impl std::fmt::Debug for GpuLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLayers").field("adapter", &self.gpu.adapter.name).field("layers", &self.layers).finish()
    }
}

/// Creates buffers (within the adapter's binding limit) and bind groups.
pub(crate) struct Builder<'g> {
    pub gpu: &'g Gpu,
    pub kernels: &'g Kernels,
}

impl Builder<'_> {
    fn buffer(&mut self, what: &'static str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer, GpuError> {
        let size = size.max(16).next_multiple_of(4);
        if size > self.gpu.max_binding() {
            return Err(GpuError::TooLarge { what, bytes: size, limit: self.gpu.max_binding() });
        }
        Ok(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage,
            mapped_at_creation: false,
        }))
    }

    /// A read-only storage buffer holding `bytes` (zero-padded to a word).
    fn data(&mut self, what: &'static str, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let buf = self.buffer(what, bytes.len() as u64, usage)?;
        let whole = bytes.len() / 4 * 4;
        self.gpu.queue.write_buffer(&buf, 0, &bytes[..whole]);
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.gpu.queue.write_buffer(&buf, whole as u64, &tail);
        }
        Ok(buf)
    }

    fn floats(&mut self, what: &'static str, v: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        self.data(what, bytemuck::cast_slice(v))
    }

    /// A working buffer of `n` floats (or f16 pairs) the kernels write.
    fn scratch(&mut self, what: &'static str, n: usize) -> Result<wgpu::Buffer, GpuError> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.buffer(what, n as u64 * 4, usage)
    }

    fn uniform(&mut self, what: &'static str, words: &[u32]) -> Result<wgpu::Buffer, GpuError> {
        let buf =
            self.buffer(what, words.len() as u64 * 4, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST)?;
        self.gpu.queue.write_buffer(&buf, 0, bytemuck::cast_slice(words));
        Ok(buf)
    }

    fn pipeline(&self, pipe: Pipe) -> &wgpu::ComputePipeline {
        match pipe {
            Pipe::Op(op) => &self.kernels.ops[&op],
            Pipe::Mat(ty) => &self.kernels.matmul[&ty],
        }
    }

    /// Binds `buffers` to bindings 0, 1, ... of `pipe`.
    fn group(&self, pipe: Pipe, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        let layout = self.pipeline(pipe).get_bind_group_layout(0);
        self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        })
    }
}

/// The activation buffers every layer shares.
pub(crate) struct Acts {
    pub x: wgpu::Buffer,
    pub norm: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    attn: wgpu::Buffer,
    proj: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    scores: wgpu::Buffer,
    /// Activations as the products' encoding rounds them.
    quantized: wgpu::Buffer,
    /// Q8_1's block sums of `quantized`.
    block_sums: wgpu::Buffer,
    /// Q8_0/Q8_1 block scales of `quantized` (which then holds integers).
    block_scales: wgpu::Buffer,
    /// Bound where a kernel's mode leaves a binding unused.
    dummy: wgpu::Buffer,
    pub pass: wgpu::Buffer,
}

impl Acts {
    /// Buffers for `MAX_ROWS` rows of widths `[n_embd, q_dim, kv_dim, n_ff, n_head * n_ctx]`.
    pub(crate) fn new(b: &mut Builder<'_>, [n_embd, qd, kvd, n_ff, scores]: [usize; 5]) -> Result<Self, GpuError> {
        let t = MAX_ROWS;
        let widest = n_ff.max(n_embd).max(qd);
        Ok(Acts {
            x: b.scratch("hidden states", t * n_embd)?,
            norm: b.scratch("normed", t * n_embd)?,
            q: b.scratch("queries", t * qd)?,
            k: b.scratch("keys", t * kvd)?,
            v: b.scratch("values", t * kvd)?,
            attn: b.scratch("attention", t * qd)?,
            proj: b.scratch("projection", t * n_embd)?,
            gate: b.scratch("gate", t * n_ff)?,
            up: b.scratch("up", t * n_ff)?,
            scores: b.scratch("attention scores", t * scores)?,
            quantized: b.scratch("quantized activations", t * widest)?,
            block_sums: b.scratch("block sums", t * widest / 32)?,
            block_scales: b.scratch("block scales", t * widest / 32)?,
            dummy: b.scratch("unused", 4)?,
            pass: b.uniform("pass", &[0; 4])?,
        })
    }
}

fn unsupported(what: impl Into<String>) -> GpuError {
    GpuError::Unsupported { what: what.into() }
}

impl GpuLayers {
    /// Uploads layers `layers` of `model` (which must hold them) to `gpu`,
    /// with a KV cache of `n_ctx` positions for each of `slots` sequences.
    pub fn new(
        gpu: Gpu,
        model: &Model<'_>,
        layers: Range<usize>,
        slots: usize,
        n_ctx: usize,
    ) -> Result<Self, GpuError> {
        let c = &model.config;
        if c.attn_temperature.is_some() {
            return Err(unsupported("attention temperature (Mistral 3)"));
        }
        if !c.head_dim.is_multiple_of(2)
            || c.head_dim > 512
            || c.n_head_kv == 0
            || !c.n_head.is_multiple_of(c.n_head_kv)
        {
            return Err(unsupported(format!(
                "{} query heads over {} KV heads of {}",
                c.n_head, c.n_head_kv, c.head_dim
            )));
        }
        let held: Vec<_> = layers.clone().map(|il| model.layer(il)).collect();
        let held: Vec<_> =
            held.into_iter().collect::<Option<_>>().ok_or_else(|| unsupported("layers this model does not hold"))?;
        let mut types = Vec::new();
        for lw in &held {
            for m in [&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down] {
                if !crate::supports(m.ty) || m.n_in % 32 != 0 {
                    return Err(unsupported(format!("{} matrices of {} columns", m.ty, m.n_in)));
                }
                if m.n_out > u16::MAX as usize {
                    return Err(unsupported(format!("matrices of {} rows", m.n_out)));
                }
                types.push(m.ty);
            }
        }
        let kernels = Kernels::new(&gpu, types)?;
        let mut b = Builder { gpu: &gpu, kernels: &kernels };
        let n_ff = held.iter().map(|l| l.w_gate.n_out).max().unwrap_or(0);
        let (n_embd, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
        let acts = Acts::new(&mut b, [n_embd, qd, kvd, n_ff, c.n_head * n_ctx])?;
        // Every position's rotation, computed once by core as the CPU path does.
        let half = (c.rope_dim / 2).max(1);
        let table = |swa: bool| {
            let rope = model.rope(swa);
            let mut cs = vec![(0f32, 0f32); n_ctx * half];
            cs.chunks_exact_mut(half).enumerate().for_each(|(pos, row)| rope.angles(pos, row));
            cs.into_iter().flat_map(|(c, s)| [c, s]).collect::<Vec<f32>>()
        };
        let angles = b.floats("rope angles", &table(false))?;
        let angles_swa =
            if layers.clone().any(|il| c.is_swa(il)) { Some(b.floats("rope angles", &table(true))?) } else { None };
        let mut plan = Vec::new();
        for (il, lw) in layers.clone().zip(&held) {
            let cs = if c.is_swa(il) { angles_swa.as_ref().unwrap_or(&angles) } else { &angles };
            let window = if c.is_swa(il) { c.sliding_window as u32 } else { 0 };
            let caches: Vec<_> = (0..slots)
                .map(|_| Ok((b.scratch("key cache", n_ctx * kvd / 2)?, b.scratch("value cache", n_ctx * kvd / 2)?)))
                .collect::<Result<_, GpuError>>()?;
            layer_plan(&mut b, &mut plan, model, lw, &acts, cs, &caches, (n_ctx, window))?;
        }
        gpu.wait()?;
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: (MAX_ROWS * n_embd * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            kernels,
            layers,
            n_embd,
            n_ctx,
            filled: vec![0; slots],
            x: acts.x,
            staging,
            pass: acts.pass,
            plan,
            gpu,
        })
    }

    /// Runs every layer on `rows` (at most `MAX_ROWS`) of slot `slot` at `pos0`.
    fn run(&mut self, slot: usize, pos0: usize, rows: &mut [f32]) -> Result<(), GpuError> {
        let n_tok = rows.len() / self.n_embd;
        let io = Io { input: Some(&self.x), output: &self.x, staging: &self.staging, pass: &self.pass };
        execute(&self.gpu, &self.kernels, &self.plan, io, (slot, pos0, n_tok), rows)
    }
}

/// Where a submission's rows go in (when `input` is set: `execute`
/// uploads them) and come out.
pub(crate) struct Io<'b> {
    pub input: Option<&'b wgpu::Buffer>,
    pub output: &'b wgpu::Buffer,
    pub staging: &'b wgpu::Buffer,
    pub pass: &'b wgpu::Buffer,
}

/// Uploads `rows` to `io.input` (if any), runs `plan` for `n_tok` rows of
/// slot `slot` at `pos0` in one submission, and reads `io.output` back
/// into `rows`.
pub(crate) fn execute(
    gpu: &Gpu,
    kernels: &Kernels,
    plan: &[Dispatch],
    io: Io<'_>,
    (slot, pos0, n_tok): (usize, usize, usize),
    rows: &mut [f32],
) -> Result<(), GpuError> {
    if let Some(input) = io.input {
        gpu.queue.write_buffer(input, 0, bytemuck::cast_slice(rows));
    }
    gpu.queue.write_buffer(io.pass, 0, bytemuck::cast_slice(&[n_tok as u32, pos0 as u32, 0, 0]));
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("layers") });
    {
        let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        for d in plan {
            cp.set_pipeline(match d.pipe {
                Pipe::Op(op) => &kernels.ops[&op],
                Pipe::Mat(ty) => &kernels.matmul[&ty],
            });
            cp.set_bind_group(0, &d.groups[if d.groups.len() > 1 { slot } else { 0 }], &[]);
            let (x, y, z) = d.grid.size(n_tok as u32);
            cp.dispatch_workgroups(x, y, z);
        }
    }
    let bytes = (rows.len() * 4) as u64;
    enc.copy_buffer_to_buffer(io.output, 0, io.staging, 0, bytes);
    gpu.queue.submit([enc.finish()]);
    let (tx, rx) = mpsc::channel();
    io.staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv().map_err(|_| GpuError::Unsupported { what: "a lost read-back".into() })?.map_err(GpuError::Map)?;
    {
        let view = io.staging.slice(..bytes).get_mapped_range().map_err(GpuError::MapRange)?;
        rows.copy_from_slice(bytemuck::cast_slice(&view));
    }
    io.staging.unmap();
    Ok(())
}

/// Matrix products, each after the encoding of its input that the CPU
/// path uses (Q8_0, Q8_1, Q8_K or f16), which is skipped when the input
/// was just encoded the same way.
pub(crate) struct Products<'a> {
    pub a: &'a Acts,
    /// What `a.quantized` holds: (source buffer, format).
    pub encoded: Option<(*const wgpu::Buffer, ActFormat)>,
}

impl Products<'_> {
    pub(crate) fn push(
        &mut self,
        b: &mut Builder<'_>,
        plan: &mut Vec<Dispatch>,
        m: &Matrix<'_>,
        bias: Option<&Vec<f32>>,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<(), GpuError> {
        let a = self.a;
        let fmt = m.ty.act_format();
        let mode = match fmt {
            ActFormat::Q8_0 | ActFormat::Q8_1 => Some(0),
            ActFormat::Q8K => Some(1),
            ActFormat::F16 => Some(2),
            _ => None,
        };
        let input = match mode {
            None => x,
            Some(mode) => {
                if self.encoded != Some((x as *const _, fmt)) {
                    let u = b.uniform("quantize", &[m.n_in as u32, mode, 0, 0])?;
                    let quantize = Pipe::Op(Op::Quantize);
                    let group = b.group(quantize, &[x, &a.quantized, &u, &a.pass, &a.block_sums, &a.block_scales]);
                    let per_tok = m.n_in as u32 / [32, 256, 1][mode as usize];
                    plan.push(Dispatch { pipe: quantize, groups: vec![group], grid: Grid::Threads { per_tok } });
                    self.encoded = Some((x as *const _, fmt));
                }
                &a.quantized
            }
        };
        let w = b.data("weights", m.data)?;
        let has_bias = u32::from(bias.is_some());
        let bias = match bias {
            Some(v) => b.floats("bias", v)?,
            None => a.dummy.clone(),
        };
        let u = b.uniform("matrix", &[m.n_in as u32, m.n_out as u32, m.row_bytes() as u32, has_bias])?;
        let pipe = Pipe::Mat(m.ty);
        let groups = vec![b.group(pipe, &[&w, input, y, &u, &a.pass, &bias, &a.block_sums, &a.block_scales])];
        plan.push(Dispatch { pipe, groups, grid: Grid::Matmul { n_out: m.n_out as u32 } });
        Ok(())
    }
}

/// The dispatches of one layer, in order.
#[allow(clippy::too_many_arguments)]
fn layer_plan(
    b: &mut Builder<'_>,
    plan: &mut Vec<Dispatch>,
    model: &Model<'_>,
    lw: &LayerWeights<'_>,
    a: &Acts,
    angles: &wgpu::Buffer,
    caches: &[(wgpu::Buffer, wgpu::Buffer)],
    (n_ctx, window): (usize, u32),
) -> Result<(), GpuError> {
    let c = &model.config;
    let (n_embd, hd) = (c.n_embd as u32, c.head_dim as u32);
    let eps = c.rms_eps.to_bits();
    let one = |pipe, group| Dispatch { pipe, groups: vec![group], grid: Grid::Rows { per_tok: 1 } };
    let norm = Pipe::Op(Op::Norm);
    // Pre-norm: norm = rms(x) * w.
    let pre_norm = |b: &mut Builder<'_>, w: &[f32]| -> Result<Dispatch, GpuError> {
        let w = b.floats("norm", w)?;
        let u = b.uniform("norm", &[n_embd, 1, 0, eps])?;
        Ok(one(norm, b.group(norm, &[&a.x, &a.norm, &w, &u, &a.pass])))
    };
    let mut products = Products { a, encoded: None };
    // Residual: x += proj, through the post-norm when there is one.
    let residual = |b: &mut Builder<'_>, post: Option<&Vec<f32>>| -> Result<Dispatch, GpuError> {
        let (w, mode) = match post {
            Some(w) => (b.floats("norm", w)?, 1),
            None => (a.dummy.clone(), 2),
        };
        let u = b.uniform("norm", &[n_embd, 1, mode, eps])?;
        Ok(one(norm, b.group(norm, &[&a.x, &a.proj, &w, &u, &a.pass])))
    };

    plan.push(pre_norm(b, &lw.attn_norm)?);
    products.push(b, plan, &lw.wq, lw.bq.as_ref(), &a.norm, &a.q)?;
    products.push(b, plan, &lw.wk, lw.bk.as_ref(), &a.norm, &a.k)?;
    products.push(b, plan, &lw.wv, lw.bv.as_ref(), &a.norm, &a.v)?;
    for (w, buf, heads) in [(&lw.q_norm, &a.q, c.n_head), (&lw.k_norm, &a.k, c.n_head_kv)] {
        if let Some(w) = w {
            let w = b.floats("head norm", w)?;
            let u = b.uniform("head norm", &[hd, heads as u32, 3, eps])?;
            let group = b.group(norm, &[&a.dummy, buf, &w, &u, &a.pass]);
            plan.push(Dispatch { pipe: norm, groups: vec![group], grid: Grid::Rows { per_tok: heads as u32 } });
        }
    }
    let half = (c.rope_dim / 2) as u32;
    let neox = u32::from(c.rope_kind == prima_core::model::RopeKind::Neox);
    for (buf, dim) in [(&a.q, c.q_dim()), (&a.k, c.kv_dim())] {
        let u = b.uniform("rope", &[dim as u32, hd, half, neox])?;
        let rope = Pipe::Op(Op::Rope);
        let group = b.group(rope, &[buf, angles, &u, &a.pass]);
        plan.push(Dispatch {
            pipe: rope,
            groups: vec![group],
            grid: Grid::Threads { per_tok: dim as u32 / hd * half },
        });
    }
    let kv_u = b.uniform("kv", &[c.kv_dim() as u32, 0, 0, 0])?;
    let store = Pipe::Op(Op::KvStore);
    let groups = caches.iter().map(|(kc, vc)| b.group(store, &[&a.k, &a.v, kc, vc, &kv_u, &a.pass])).collect();
    plan.push(Dispatch { pipe: store, groups, grid: Grid::Threads { per_tok: c.kv_dim() as u32 / 2 } });
    let attn_u = b.uniform(
        "attention",
        &[c.n_head as u32, c.n_head_kv as u32, hd, n_ctx as u32, window, c.attn_scale.to_bits(), 0, 0],
    )?;
    let attend = Pipe::Op(Op::Attention);
    let groups =
        caches.iter().map(|(kc, vc)| b.group(attend, &[&a.q, kc, vc, &a.attn, &a.scores, &attn_u, &a.pass])).collect();
    plan.push(Dispatch { pipe: attend, groups, grid: Grid::Heads { n_head: c.n_head as u32 } });
    products.push(b, plan, &lw.wo, None, &a.attn, &a.proj)?;
    plan.push(residual(b, lw.post_attn_norm.as_ref())?);

    plan.push(pre_norm(b, &lw.ffn_norm)?);
    products.push(b, plan, &lw.w_gate, None, &a.norm, &a.gate)?;
    products.push(b, plan, &lw.w_up, None, &a.norm, &a.up)?;
    let n_ff = lw.w_gate.n_out as u32;
    let gate_u = b.uniform("gate", &[n_ff, u32::from(c.arch == Arch::Gemma3), 0, 0])?;
    let gate = Pipe::Op(Op::Gate);
    let group = b.group(gate, &[&a.gate, &a.up, &gate_u, &a.pass]);
    plan.push(Dispatch { pipe: gate, groups: vec![group], grid: Grid::Threads { per_tok: n_ff } });
    products.push(b, plan, &lw.w_down, None, &a.gate, &a.proj)?;
    plan.push(residual(b, lw.post_ffn_norm.as_ref())?);
    Ok(())
}

impl LayerBackend for GpuLayers {
    fn name(&self) -> &str {
        &self.gpu.adapter.name
    }

    fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    fn forward(&mut self, seqs: &[SeqSpan], x: &mut [f32]) -> Result<(), ModelError> {
        let claimed: usize = seqs.iter().map(|s| s.n_tok).sum();
        if claimed * self.n_embd != x.len() {
            return Err(ModelError::BatchRows { rows: x.len() / self.n_embd, claimed });
        }
        let mut at = 0;
        for s in seqs {
            let filled =
                *self.filled.get(s.slot).ok_or(ModelError::BadSlot { slot: s.slot, slots: self.filled.len() })?;
            if s.pos0 > filled {
                return Err(ModelError::PositionGap { pos0: s.pos0, filled });
            }
            if s.pos0 + s.n_tok > self.n_ctx {
                return Err(ModelError::ContextOverflow { needed: s.pos0 + s.n_tok, n_ctx: self.n_ctx });
            }
            let rows = &mut x[at * self.n_embd..(at + s.n_tok) * self.n_embd];
            for (i, chunk) in rows.chunks_mut(MAX_ROWS * self.n_embd).enumerate() {
                self.run(s.slot, s.pos0 + i * MAX_ROWS, chunk).map_err(|e| ModelError::Backend {
                    name: self.gpu.adapter.name.clone(),
                    layers: [self.layers.start, self.layers.end],
                    source: BackendFailure(Arc::new(e)),
                })?;
            }
            self.filled[s.slot] = filled.max(s.pos0 + s.n_tok);
            at += s.n_tok;
        }
        Ok(())
    }

    fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(f) = self.filled.get_mut(slot) {
            *f = (*f).min(len);
        }
    }
}
