use alloc::string::String;
use core::fmt;

/// Why a GGUF file was rejected. Every variant names its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufError {
    /// The file does not start with the `GGUF` magic.
    BadMagic { found: [u8; 4] },
    /// The file uses a GGUF version this reader does not know.
    UnsupportedVersion { version: u32 },
    /// The file ends before a field it declares.
    Truncated { what: &'static str, offset: u64, need: u64, file_len: u64 },
    /// A string is longer than [`limits::MAX_STRING_LEN`](super::limits::MAX_STRING_LEN).
    StringTooLong { offset: u64, len: u64 },
    /// A string is not valid UTF-8.
    InvalidUtf8 { offset: u64 },
    /// An array declares more elements than could fit in the rest of the file.
    ArrayTooLong { key: String, count: u64 },
    /// Arrays nest deeper than [`limits::MAX_ARRAY_DEPTH`](super::limits::MAX_ARRAY_DEPTH).
    ArrayTooDeep { key: String },
    /// A metadata value has a type id outside the GGUF spec.
    UnknownValueType { key: String, type_id: u32 },
    /// The header declares more metadata entries than could fit in the file.
    TooManyMetadata { count: u64 },
    /// The header declares more tensors than could fit in the file.
    TooManyTensors { count: u64 },
    /// A metadata key appears twice.
    DuplicateKey { key: String },
    /// A tensor name appears twice.
    DuplicateTensor { name: String },
    /// A tensor declares more than 4 dimensions.
    TooManyDims { name: String, n_dims: u32 },
    /// A tensor has a zero-sized dimension.
    ZeroDim { name: String },
    /// A tensor's element or byte count overflows.
    SizeOverflow { name: String },
    /// A tensor uses a type id this reader does not know.
    UnknownTensorType { name: String, type_id: u32 },
    /// A tensor's rows are not a whole number of quantization blocks.
    RowNotBlockAligned { name: String, ne0: u64, block: usize },
    /// `general.alignment` is zero or not a power of two.
    BadAlignment { alignment: u64 },
    /// A tensor's data offset is not a multiple of the file's alignment.
    MisalignedTensor { name: String, offset: u64, alignment: u64 },
    /// A tensor's data extends past the end of the file.
    TensorOutOfBounds { name: String, offset: u64, size: u64, file_len: u64 },
    /// A metadata key a caller required is absent.
    MissingKey { key: String },
    /// A metadata key has a different type than a caller required.
    WrongType { key: String, expected: &'static str, found: &'static str },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufError::*;
        match self {
            BadMagic { found } => write!(f, "not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")"),
            UnsupportedVersion { version } => write!(f, "unsupported GGUF version {version} (supported: 2, 3)"),
            Truncated { what, offset, need, file_len } => write!(
                f,
                "GGUF file is truncated: {what} at byte {offset} needs {need} bytes but the file has {file_len}"
            ),
            StringTooLong { offset, len } => write!(f, "GGUF string at byte {offset} claims {len} bytes, over the limit"),
            InvalidUtf8 { offset } => write!(f, "GGUF string at byte {offset} is not valid UTF-8"),
            ArrayTooLong { key, count } => write!(f, "metadata array '{key}' claims {count} elements, more than the file holds"),
            ArrayTooDeep { key } => write!(f, "metadata array '{key}' nests too deeply"),
            UnknownValueType { key, type_id } => write!(f, "metadata '{key}' has unknown value type {type_id}"),
            TooManyMetadata { count } => write!(f, "GGUF header claims {count} metadata entries, more than the file holds"),
            TooManyTensors { count } => write!(f, "GGUF header claims {count} tensors, more than the file holds"),
            DuplicateKey { key } => write!(f, "metadata key '{key}' appears twice"),
            DuplicateTensor { name } => write!(f, "tensor '{name}' appears twice"),
            TooManyDims { name, n_dims } => write!(f, "tensor '{name}' has {n_dims} dimensions (at most 4)"),
            ZeroDim { name } => write!(f, "tensor '{name}' has a zero-sized dimension"),
            SizeOverflow { name } => write!(f, "tensor '{name}' size overflows"),
            UnknownTensorType { name, type_id } => write!(f, "tensor '{name}' has unknown or unsupported type id {type_id}"),
            RowNotBlockAligned { name, ne0, block } => {
                write!(f, "tensor '{name}' row length {ne0} is not a multiple of its block size {block}")
            }
            BadAlignment { alignment } => write!(f, "general.alignment = {alignment} is not a power of two"),
            MisalignedTensor { name, offset, alignment } => {
                write!(f, "tensor '{name}' offset {offset} is not aligned to {alignment}")
            }
            TensorOutOfBounds { name, offset, size, file_len } => write!(
                f,
                "tensor '{name}' (data offset {offset}, {size} bytes) extends past the end of the file ({file_len} bytes)"
            ),
            MissingKey { key } => write!(f, "required metadata key '{key}' is missing"),
            WrongType { key, expected, found } => write!(f, "metadata '{key}' is {found}, expected {expected}"),
        }
    }
}

impl core::error::Error for GgufError {}
