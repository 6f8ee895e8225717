//! Protobuf base-128 varints and field keys.
//!
//! Fan-out reply rewriting (done by backends, see `Backend::append_info`)
//! edits protobuf bytes without a schema: it reads a field key and a length,
//! and writes new ones. These are the only protobuf primitives it needs.

use bytes::BufMut;

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Why bytes are not a varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended before the last byte (high bit clear).
    #[error("truncated varint")]
    Truncated,
    /// More than ten bytes, or a value above `u64::MAX`.
    #[error("varint overflows 64 bits")]
    Overflow,
}

/// Decodes a varint at the start of `buf`: the value and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(MAX_LEN) {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= MAX_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Appends the varint encoding of `value` to `out`.
pub fn encode(mut value: u64, out: &mut impl BufMut) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Number of bytes [`encode`] writes for `value`.
pub fn encoded_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Protobuf wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// 0: varint.
    Varint,
    /// 1: 64-bit.
    Fixed64,
    /// 2: length-delimited (strings, bytes, embedded messages).
    LengthDelimited,
    /// 3: start group (deprecated).
    StartGroup,
    /// 4: end group (deprecated).
    EndGroup,
    /// 5: 32-bit.
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u64) -> Option<Self> {
        Some(match bits {
            0 => Self::Varint,
            1 => Self::Fixed64,
            2 => Self::LengthDelimited,
            3 => Self::StartGroup,
            4 => Self::EndGroup,
            5 => Self::Fixed32,
            _ => return None,
        })
    }
}

/// A field key: field number and wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Field number (1..=2^29-1).
    pub field: u32,
    /// Wire type.
    pub wire_type: WireType,
}

/// Why bytes are not a field key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key's varint is malformed.
    #[error(transparent)]
    Varint(#[from] VarintError),
    /// Wire type 6 or 7.
    #[error("invalid wire type {0}")]
    WireType(u64),
    /// Field number 0 or above 2^29-1.
    #[error("invalid field number {0}")]
    Field(u64),
}

impl Key {
    /// Decodes a key at the start of `buf`: the key and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), KeyError> {
        let (raw, used) = decode(buf)?;
        let wire_type = WireType::from_bits(raw & 7).ok_or(KeyError::WireType(raw & 7))?;
        let field = raw >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(KeyError::Field(field));
        }
        Ok((
            Self {
                field: field as u32,
                wire_type,
            },
            used,
        ))
    }

    /// Appends the key's encoding to `out`.
    pub fn encode(self, out: &mut impl BufMut) {
        encode(self.raw(), out)
    }

    /// Number of bytes [`Key::encode`] writes.
    pub fn encoded_len(self) -> usize {
        encoded_len(self.raw())
    }

    fn raw(self) -> u64 {
        (u64::from(self.field) << 3) | self.wire_type as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        encode(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
        assert_eq!(decode(&[0xac, 0x02, 0xff]).unwrap(), (300, 2));
        assert_eq!(decode(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::Overflow));
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overflow)
        );
        let key = Key {
            field: 1,
            wire_type: WireType::LengthDelimited,
        };
        let mut out = Vec::new();
        key.encode(&mut out);
        assert_eq!(out, [0x0a]);
        assert_eq!(Key::decode(&[0x0a]).unwrap(), (key, 1));
        assert_eq!(Key::decode(&[0x0e]), Err(KeyError::WireType(6)));
        assert_eq!(Key::decode(&[0x02]), Err(KeyError::Field(0)));
    }

    proptest! {
        #[test]
        fn round_trip(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            encode(value, &mut out);
            prop_assert_eq!(out.len(), encoded_len(value));
            out.extend_from_slice(&tail);
            prop_assert_eq!(decode(&out).unwrap(), (value, encoded_len(value)));
        }

        #[test]
        fn truncated_input_is_an_error(value in 128u64.., cut in any::<usize>()) {
            let mut out = Vec::new();
            encode(value, &mut out);
            let cut = cut % out.len();
            prop_assert_eq!(decode(&out[..cut]), Err(VarintError::Truncated));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode(&data);
            let _ = Key::decode(&data);
        }
    }
}
