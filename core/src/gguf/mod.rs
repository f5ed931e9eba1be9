//! Zero-copy GGUF (v2/v3) reader over `&[u8]`.
//!
//! Every count and length read from the file is checked against what the rest
//! of the file could hold before it is trusted, so hostile input yields a
//! [`GgufError`] and never a panic or an outsized allocation.

mod cursor;
mod error;
mod value;
pub mod write;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec::Vec;

use crate::quant::GgmlType;
use cursor::Cursor;
pub use error::GgufError;
pub use value::{Array, Value, ValueType};

/// Design-time caps; each has its own error variant.
pub mod limits {
    /// Longest string accepted (chat templates are the longest real strings).
    pub const MAX_STRING_LEN: u64 = 16 << 20;
    /// Deepest nesting of arrays inside arrays.
    pub const MAX_ARRAY_DEPTH: u32 = 4;
    /// Most dimensions a tensor may have.
    pub const MAX_DIMS: u32 = 4;
}

/// The default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: [u8; 4] = *b"GGUF";
/// Smallest possible encoded metadata entry: key length, empty key, type, one byte.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible encoded tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One tensor's description and the location of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    /// Dimensions, innermost first (`dims[0]` is the row length). Unused ones are 1.
    pub dims: [u64; 4],
    pub n_dims: u32,
    pub ty: GgmlType,
    /// Offset of the data from the start of the file.
    pub file_offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo<'_> {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Number of rows, counting every dimension past the first.
    pub fn n_rows(&self) -> u64 {
        self.dims[1] * self.dims[2] * self.dims[3]
    }
}

/// A parsed GGUF file, borrowing the bytes it was parsed from.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub alignment: u64,
    /// Offset where the tensor data section begins.
    pub data_offset: u64,
    metadata: Vec<(&'a str, Value<'a>)>,
    metadata_index: BTreeMap<&'a str, usize>,
    /// Where each metadata entry's encoding lies in the file, for copying it.
    metadata_spans: Vec<core::ops::Range<usize>>,
    tensors: Vec<TensorInfo<'a>>,
    tensor_index: BTreeMap<&'a str, usize>,
    bytes: &'a [u8],
}

impl<'a> Gguf<'a> {
    /// Parses and validates the header, metadata and tensor table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, GgufError> {
        let mut cur = Cursor::new(bytes);
        let magic = cur.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        if n_kv > cur.remaining() / MIN_KV_BYTES {
            return Err(GgufError::TooManyMetadata { count: n_kv });
        }
        if n_tensors > cur.remaining() / MIN_TENSOR_INFO_BYTES {
            return Err(GgufError::TooManyTensors { count: n_tensors });
        }

        let mut metadata = Vec::new();
        let mut metadata_index = BTreeMap::new();
        let mut metadata_spans = Vec::new();
        for _ in 0..n_kv {
            let start = cur.pos;
            let key = cur.str("metadata key")?;
            let value = value::read_value(&mut cur, key)?;
            if metadata_index.insert(key, metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey { key: key.to_string() });
            }
            metadata.push((key, value));
            metadata_spans.push(start..cur.pos);
        }

        let alignment = match metadata_index.get("general.alignment") {
            Some(&i) => metadata[i].1.as_u64().unwrap_or(0),
            None => DEFAULT_ALIGNMENT,
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment { alignment });
        }

        let mut raw = Vec::new();
        for _ in 0..n_tensors {
            raw.push(read_tensor_info(&mut cur)?);
        }
        let header_end = cur.pos as u64;
        let data_offset = header_end.div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = BTreeMap::new();
        for (name, n_dims, dims, ty, rel_offset) in raw {
            if rel_offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor { name: name.to_string(), offset: rel_offset, alignment });
            }
            let n_bytes = tensor_bytes(name, &dims, ty)?;
            let file_offset = data_offset
                .checked_add(rel_offset)
                .ok_or_else(|| GgufError::SizeOverflow { name: name.to_string() })?;
            let end = file_offset.checked_add(n_bytes);
            if end.is_none_or(|end| end > file_len) {
                return Err(GgufError::TensorOutOfBounds {
                    name: name.to_string(),
                    offset: file_offset,
                    size: n_bytes,
                    file_len,
                });
            }
            if tensor_index.insert(name, tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor { name: name.to_string() });
            }
            tensors.push(TensorInfo { name, dims, n_dims, ty, file_offset, n_bytes });
        }
        trace!("gguf parsed");
        Ok(Self {
            version,
            alignment,
            data_offset,
            metadata,
            metadata_index,
            metadata_spans,
            tensors,
            tensor_index,
            bytes,
        })
    }

    /// Each metadata entry's key and its encoded bytes (key included), in file order.
    pub fn metadata_raw(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.metadata.iter().zip(&self.metadata_spans).map(|((k, _), span)| (*k, &self.bytes[span.clone()]))
    }

    /// The bytes this file was parsed from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &Value<'a>)> {
        self.metadata.iter().map(|(k, v)| (*k, v))
    }

    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo<'a>] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The data bytes of a tensor (bounds were checked at parse time).
    pub fn tensor_data(&self, info: &TensorInfo<'_>) -> &'a [u8] {
        &self.bytes[info.file_offset as usize..(info.file_offset + info.n_bytes) as usize]
    }

    // Typed metadata accessors: a missing key or a wrong type is an error that names the key.

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| wrong_type(key, "an unsigned integer", v))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| wrong_type(key, "a number", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&'a str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, "a bool", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&Array<'a>, GgufError> {
        let v = self.require(key)?;
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(wrong_type(key, "an array", v)),
        }
    }

    /// `Ok(None)` when absent, an error when present with the wrong type.
    pub fn opt<T>(&self, key: &str, get: impl Fn(&Self, &str) -> Result<T, GgufError>) -> Result<Option<T>, GgufError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        get(self, key).map(Some)
    }

    fn require(&self, key: &str) -> Result<&Value<'a>, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value<'_>) -> GgufError {
    GgufError::WrongType { key: key.to_string(), expected, found: found.value_type().name() }
}

type RawTensor<'a> = (&'a str, u32, [u64; 4], GgmlType, u64);

fn read_tensor_info<'a>(cur: &mut Cursor<'a>) -> Result<RawTensor<'a>, GgufError> {
    let name = cur.str("tensor name")?;
    let n_dims = cur.u32("tensor n_dims")?;
    if n_dims == 0 || n_dims > limits::MAX_DIMS {
        return Err(GgufError::TooManyDims { name: name.to_string(), n_dims });
    }
    let mut dims = [1u64; 4];
    for d in dims.iter_mut().take(n_dims as usize) {
        *d = cur.u64("tensor dimension")?;
        if *d == 0 {
            return Err(GgufError::ZeroDim { name: name.to_string() });
        }
    }
    let type_id = cur.u32("tensor type")?;
    let ty =
        GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType { name: name.to_string(), type_id })?;
    let offset = cur.u64("tensor offset")?;
    Ok((name, n_dims, dims, ty, offset))
}

/// Byte size of a tensor, with every multiplication checked.
fn tensor_bytes(name: &str, dims: &[u64; 4], ty: GgmlType) -> Result<u64, GgufError> {
    let overflow = || GgufError::SizeOverflow { name: name.to_string() };
    let block = ty.block_len() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(GgufError::RowNotBlockAligned { name: name.to_string(), ne0: dims[0], block: ty.block_len() });
    }
    let row_bytes = (dims[0] / block).checked_mul(ty.block_bytes() as u64).ok_or_else(overflow)?;
    dims[1..]
        .iter()
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as u64)
        .ok_or_else(overflow)
}
