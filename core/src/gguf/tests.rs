//! Hostile and valid GGUF headers. Each rejection test is named for what it rejects.

use super::*;
use alloc::vec;
use alloc::vec::Vec;

/// A tiny GGUF writer for building test files byte by byte.
struct Builder {
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    version: u32,
}

impl Builder {
    fn new() -> Self {
        Self { kvs: vec![], n_kv: 0, infos: vec![], n_tensors: 0, version: 3 }
    }
    fn str(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    fn kv_u32(mut self, k: &str, v: u32) -> Self {
        Self::str(&mut self.kvs, k);
        self.kvs.extend_from_slice(&4u32.to_le_bytes());
        self.kvs.extend_from_slice(&v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_raw(mut self, k: &str, type_and_value: &[u8]) -> Self {
        Self::str(&mut self.kvs, k);
        self.kvs.extend_from_slice(type_and_value);
        self.n_kv += 1;
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        Self::str(&mut self.infos, name);
        self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.to_le_bytes());
        self.infos.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    fn build(&self, data_len: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.n_tensors.to_le_bytes());
        b.extend_from_slice(&self.n_kv.to_le_bytes());
        b.extend_from_slice(&self.kvs);
        b.extend_from_slice(&self.infos);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.resize(b.len() + data_len, 0);
        b
    }
}

fn err(bytes: &[u8]) -> GgufError {
    Gguf::parse(bytes).expect_err("must be rejected")
}

#[test]
fn parses_valid_file_with_metadata_and_tensors() {
    let mut arr = 9u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&8u32.to_le_bytes());
    arr.extend_from_slice(&2u64.to_le_bytes());
    for s in ["a", "bc"] {
        Builder::str(&mut arr, s);
    }
    let b = Builder::new()
        .kv_u32("general.alignment", 32)
        .kv_raw("tokens", &arr)
        .tensor("w", &[32, 2], 2, 0)
        .tensor("n", &[4], 0, 64)
        .build(96);
    let g = Gguf::parse(&b).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.get_u64("general.alignment").unwrap(), 32);
    let strs: Vec<&str> = g.get_array("tokens").unwrap().strings().unwrap().collect();
    assert_eq!(strs, ["a", "bc"]);
    let w = g.tensor("w").unwrap();
    assert_eq!((w.ty, w.n_bytes, w.n_rows()), (GgmlType::Q4_0, 36, 2));
    assert_eq!(g.tensor_data(g.tensor("n").unwrap()).len(), 16);
    assert!(matches!(g.get_str("general.alignment"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_u64("missing"), Err(GgufError::MissingKey { .. })));
}

#[test]
fn rejects_bad_magic() {
    assert!(matches!(err(b"GGML\x03\0\0\0"), GgufError::BadMagic { .. }));
}

#[test]
fn rejects_unsupported_version() {
    let mut b = Builder::new();
    b.version = 1;
    assert_eq!(err(&b.build(0)), GgufError::UnsupportedVersion { version: 1 });
}

#[test]
fn rejects_truncated_file_at_every_length() {
    let full = Builder::new().kv_u32("x", 1).tensor("w", &[32], 0, 0).build(128);
    let header_len = full.len() - 128;
    for len in 0..header_len {
        assert!(Gguf::parse(&full[..len]).is_err(), "prefix of {len} bytes accepted");
    }
}

#[test]
fn rejects_huge_metadata_count() {
    let mut b = Builder::new().build(0);
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(&b), GgufError::TooManyMetadata { .. }));
}

#[test]
fn rejects_huge_tensor_count() {
    let mut b = Builder::new().build(0);
    b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(err(&b), GgufError::TooManyTensors { .. }));
}

#[test]
fn rejects_huge_string_length() {
    let mut v = 8u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(matches!(err(&Builder::new().kv_raw("s", &v).build(0)), GgufError::StringTooLong { .. }));
}

#[test]
fn rejects_huge_array_count() {
    let mut v = 9u32.to_le_bytes().to_vec();
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(err(&Builder::new().kv_raw("a", &v).build(0)), GgufError::ArrayTooLong { .. }));
}

#[test]
fn rejects_arrays_nested_too_deep() {
    let mut v = Vec::new();
    v.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..8 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&[0; 64]);
    assert!(matches!(err(&Builder::new().kv_raw("a", &v).build(0)), GgufError::ArrayTooDeep { .. }));
}

#[test]
fn rejects_unknown_value_type() {
    let v = 99u32.to_le_bytes();
    assert!(matches!(err(&Builder::new().kv_raw("k", &v).build(0)), GgufError::UnknownValueType { type_id: 99, .. }));
}

#[test]
fn rejects_invalid_utf8_key() {
    let mut b = Builder::new();
    b.kvs.extend_from_slice(&2u64.to_le_bytes());
    b.kvs.extend_from_slice(&[0xff, 0xfe, 4, 0, 0, 0, 1, 0, 0, 0]);
    b.n_kv = 1;
    assert!(matches!(err(&b.build(0)), GgufError::InvalidUtf8 { .. }));
}

#[test]
fn rejects_duplicate_key() {
    let b = Builder::new().kv_u32("k", 1).kv_u32("k", 2).build(0);
    assert!(matches!(err(&b), GgufError::DuplicateKey { .. }));
}

#[test]
fn rejects_duplicate_tensor() {
    let b = Builder::new().tensor("w", &[8], 0, 0).tensor("w", &[8], 0, 32).build(64);
    assert!(matches!(err(&b), GgufError::DuplicateTensor { .. }));
}

#[test]
fn rejects_more_than_four_dims() {
    let b = Builder::new().tensor("w", &[1, 1, 1, 1, 1], 0, 0).build(32);
    assert!(matches!(err(&b), GgufError::TooManyDims { n_dims: 5, .. }));
}

#[test]
fn rejects_zero_dimension() {
    assert!(matches!(err(&Builder::new().tensor("w", &[0], 0, 0).build(32)), GgufError::ZeroDim { .. }));
}

#[test]
fn rejects_unknown_tensor_type() {
    let b = Builder::new().tensor("w", &[8], 77, 0).build(32);
    assert!(matches!(err(&b), GgufError::UnknownTensorType { type_id: 77, .. }));
}

#[test]
fn rejects_row_not_multiple_of_block() {
    let b = Builder::new().tensor("w", &[33], 2, 0).build(64);
    assert!(matches!(err(&b), GgufError::RowNotBlockAligned { ne0: 33, block: 32, .. }));
}

#[test]
fn rejects_overflow_in_size_arithmetic() {
    let b = Builder::new().tensor("w", &[1 << 40, 1 << 40, 1 << 20], 0, 0).build(32);
    assert!(matches!(err(&b), GgufError::SizeOverflow { .. }));
}

#[test]
fn rejects_tensor_extending_past_file_end() {
    let b = Builder::new().tensor("w", &[64], 0, 0).build(100);
    assert!(matches!(err(&b), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn rejects_misaligned_tensor_offset() {
    let b = Builder::new().tensor("w", &[4], 0, 4).build(64);
    assert!(matches!(err(&b), GgufError::MisalignedTensor { offset: 4, alignment: 32, .. }));
}

#[test]
fn rejects_alignment_not_power_of_two() {
    let b = Builder::new().kv_u32("general.alignment", 24).build(0);
    assert_eq!(err(&b), GgufError::BadAlignment { alignment: 24 });
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Gguf::parse(&bytes);
    }

    #[test]
    fn never_panics_on_corrupted_valid_file(pos in 0usize..200, byte in proptest::num::u8::ANY) {
        let mut b = Builder::new().kv_u32("x", 7).tensor("w", &[32, 2], 2, 0).build(64);
        let p = pos % b.len();
        b[p] = byte;
        let _ = Gguf::parse(&b);
    }
}
