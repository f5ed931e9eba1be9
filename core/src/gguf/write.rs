//! Writing GGUF headers: a subset of an existing file (the layers a ring
//! worker holds), or a new model with copied and overridden metadata.
//!
//! The writer only lays out the header and says where each tensor's data
//! goes; the host copies the bytes (from a map, a socket or a generator), so
//! nothing here holds tensor data.

use alloc::vec::Vec;
use core::ops::Range;

use super::{Gguf, TensorInfo, DEFAULT_ALIGNMENT};
use crate::quant::GgmlType;

/// Where one tensor's data goes in the written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Offset from the start of the written file.
    pub offset: u64,
    pub n_bytes: u64,
}

/// A GGUF header being built.
#[derive(Debug, Default)]
pub struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data_len: u64,
    alignment: u64,
}

impl Writer {
    pub fn new() -> Self {
        Self { alignment: DEFAULT_ALIGNMENT, ..Self::default() }
    }

    /// Copies every metadata entry of `g` whose key `keep` accepts, as encoded.
    /// An alignment other than the default is copied too, and then applies.
    pub fn copy_metadata(&mut self, g: &Gguf<'_>, keep: impl Fn(&str) -> bool) -> &mut Self {
        for (key, raw) in g.metadata_raw() {
            if keep(key) || key == "general.alignment" {
                self.kv.extend_from_slice(raw);
                self.n_kv += 1;
            }
        }
        self.alignment = g.alignment;
        self
    }

    fn key(&mut self, key: &str, ty: u32) {
        self.kv.extend_from_slice(&(key.len() as u64).to_le_bytes());
        self.kv.extend_from_slice(key.as_bytes());
        self.kv.extend_from_slice(&ty.to_le_bytes());
        self.n_kv += 1;
    }

    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.key(key, 4);
        self.kv.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.key(key, 6);
        self.kv.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.key(key, 8);
        self.kv.extend_from_slice(&(v.len() as u64).to_le_bytes());
        self.kv.extend_from_slice(v.as_bytes());
        self
    }

    /// Declares a tensor; its data goes at the returned data-relative offset.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, n_bytes: u64) -> u64 {
        self.infos.extend_from_slice(&(name.len() as u64).to_le_bytes());
        self.infos.extend_from_slice(name.as_bytes());
        self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.id().to_le_bytes());
        let offset = self.data_len;
        self.infos.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
        self.data_len = (offset + n_bytes).div_ceil(self.alignment) * self.alignment;
        offset
    }

    /// The header, zero-padded to where the data section begins.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.kv.len() + self.infos.len() + self.alignment as usize);
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        let padded = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(padded as usize, 0);
        out
    }

    /// The written file's length, once the header and all data are written.
    pub fn file_len(&self) -> u64 {
        self.header_len() + self.data_len
    }

    fn header_len(&self) -> u64 {
        let len = 24 + self.kv.len() as u64 + self.infos.len() as u64;
        len.div_ceil(self.alignment) * self.alignment
    }
}

/// A file holding a subset of another's tensors, with all its metadata.
#[derive(Debug)]
pub struct Subset {
    pub header: Vec<u8>,
    /// For each kept tensor: where its bytes are in the source file, and
    /// where they go in the subset.
    pub copies: Vec<(Range<u64>, Placement)>,
    pub file_len: u64,
}

/// Lays out a file with the tensors of `g` that `keep` accepts. Gaps
/// between tensors are zeros.
pub fn subset(g: &Gguf<'_>, keep: impl Fn(&TensorInfo<'_>) -> bool) -> Subset {
    let mut w = Writer::new();
    w.copy_metadata(g, |_| true);
    let mut rel = Vec::new();
    for t in g.tensors().iter().filter(|t| keep(t)) {
        let offset = w.tensor(t.name, &t.dims[..t.n_dims as usize], t.ty, t.n_bytes);
        rel.push((t.file_offset..t.file_offset + t.n_bytes, offset, t.n_bytes));
    }
    let header = w.header();
    let base = header.len() as u64;
    let copies = rel.into_iter().map(|(src, off, n_bytes)| (src, Placement { offset: base + off, n_bytes })).collect();
    Subset { header, copies, file_len: w.file_len() }
}

/// Whether tensor `name` belongs to layer `layer` (`blk.{layer}.`).
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn subset_of_a_written_file_parses_and_keeps_the_bytes() {
        let mut w = Writer::new();
        w.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2).kv_f32("x", 0.5);
        let dims = [32u64, 2];
        let a = w.tensor("blk.0.a", &dims, GgmlType::F32, 256);
        let b = w.tensor("blk.1.a", &dims, GgmlType::F32, 256);
        let mut file = w.header();
        let base = file.len();
        file.resize(w.file_len() as usize, 0);
        for (off, byte) in [(a, 1u8), (b, 2u8)] {
            file[base + off as usize..][..256].fill(byte);
        }
        let g = Gguf::parse(&file).unwrap();
        assert_eq!(g.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(g.get_f32("x").unwrap(), 0.5);

        let s = subset(&g, |t| layer_of(t.name) == Some(1));
        let mut out = s.header.clone();
        out.resize(s.file_len as usize, 0);
        for (src, to) in &s.copies {
            out[to.offset as usize..][..to.n_bytes as usize]
                .copy_from_slice(&file[src.start as usize..src.end as usize]);
        }
        let h = Gguf::parse(&out).unwrap();
        assert_eq!(h.tensors().len(), 1);
        assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
        let t = h.tensor("blk.1.a").unwrap();
        assert_eq!(h.tensor_data(t), &vec![2u8; 256][..]);
        assert!(h.tensor("blk.0.a").is_none());
    }

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("token_embd.weight"), None);
        assert_eq!(layer_of("blk.x.y"), None);
    }
}
