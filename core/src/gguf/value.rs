use alloc::string::ToString;

use super::cursor::Cursor;
use super::{limits, GgufError};

/// GGUF metadata value type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Encoded size for fixed-size types.
    fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// One metadata value; strings and arrays borrow the file's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(&'a str),
    Array(Array<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> Value<'a> {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self.as_i64().map(|v| v as f32),
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A validated array whose elements are decoded on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<'a> {
    pub elem_type: ValueType,
    pub len: u64,
    bytes: &'a [u8],
}

impl<'a> Array<'a> {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates the elements. The array was validated when parsed, so every
    /// element decodes.
    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + '_ {
        let mut cur = Cursor::new(self.bytes);
        let ty = self.elem_type;
        (0..self.len).map_while(move |_| read_typed(&mut cur, ty, "", 0).ok())
    }

    /// Every element as a string, or `None` if the elements are not strings.
    pub fn strings(&self) -> Option<impl Iterator<Item = &'a str> + '_> {
        (self.elem_type == ValueType::String).then(|| self.iter().filter_map(|v| v.as_str()))
    }
}

pub(super) fn read_value<'a>(cur: &mut Cursor<'a>, key: &str) -> Result<Value<'a>, GgufError> {
    let type_id = cur.u32("metadata value type")?;
    let ty =
        ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.to_string(), type_id })?;
    read_typed(cur, ty, key, 0)
}

fn read_typed<'a>(cur: &mut Cursor<'a>, ty: ValueType, key: &str, depth: u32) -> Result<Value<'a>, GgufError> {
    const W: &str = "metadata value";
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.array::<1>(W)?[0]),
        ValueType::I8 => Value::I8(cur.array::<1>(W)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(W)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(W)?)),
        ValueType::U32 => Value::U32(cur.u32(W)?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(W)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(W)?)),
        ValueType::Bool => Value::Bool(cur.array::<1>(W)?[0] != 0),
        ValueType::String => Value::Str(cur.str(W)?),
        ValueType::U64 => Value::U64(cur.u64(W)?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(W)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(W)?)),
        ValueType::Array => Value::Array(read_array(cur, key, depth)?),
    })
}

fn read_array<'a>(cur: &mut Cursor<'a>, key: &str, depth: u32) -> Result<Array<'a>, GgufError> {
    if depth >= limits::MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep { key: key.to_string() });
    }
    let type_id = cur.u32("array element type")?;
    let elem_type =
        ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.to_string(), type_id })?;
    let len = cur.u64("array length")?;
    let min_elem = elem_type.fixed_size().unwrap_or(if elem_type == ValueType::String { 8 } else { 12 });
    if len > cur.remaining() / min_elem {
        return Err(GgufError::ArrayTooLong { key: key.to_string(), count: len });
    }
    let start = cur.pos;
    match elem_type.fixed_size() {
        Some(size) => {
            cur.take(len * size, "array elements")?;
        }
        None => {
            for _ in 0..len {
                read_typed(cur, elem_type, key, depth + 1)?;
            }
        }
    }
    Ok(Array { elem_type, len, bytes: &cur.data[start..cur.pos] })
}
