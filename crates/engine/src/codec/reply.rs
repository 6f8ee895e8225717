//! Schema-agnostic rewriting of fan-out replies.
//!
//! Fan-out relies on a reply-shape contract rather than on schemas:
//!
//! ```proto
//! message SomeResponse { repeated SomeReply messages = 1; }  // unary reply
//! message SomeReply    { Metadata metadata = 1; ... }          // streamed reply, and each entry
//! ```
//!
//! Concatenated protobuf messages merge, so appending an encoded field to an
//! entry adds that field, and concatenating several `SomeResponse`s yields one
//! with all entries. These functions do exactly that, for any number of
//! entries (the Go reference handled exactly one).

use bytes::{BufMut, Bytes, BytesMut};

use super::varint::{self, Key, KeyError, WireType};

/// Why a unary reply does not follow the `repeated SomeReply messages = 1` shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A field key could not be read.
    #[error("reply is not a protobuf message: {0}")]
    Key(#[from] KeyError),
    /// A field other than a length-delimited field 1.
    #[error(
        "reply has field {field} with wire type {wire_type:?}; expected only `repeated` entries in field 1"
    )]
    UnexpectedField {
        /// Field number found.
        field: u32,
        /// Its wire type.
        wire_type: WireType,
    },
    /// An entry's length runs past the end of the reply.
    #[error("reply entry is truncated: {declared} bytes declared, {available} available")]
    Truncated {
        /// Declared entry length.
        declared: u64,
        /// Bytes left in the reply.
        available: usize,
    },
    /// An entry's length prefix is malformed.
    #[error("reply entry length is malformed: {0}")]
    Length(#[from] varint::VarintError),
}

const ENTRY_KEY: Key = Key {
    field: 1,
    wire_type: WireType::LengthDelimited,
};

/// Appends `field` (already encoded, e.g. an `Empty { metadata }`) to every
/// field-1 entry of a unary `SomeResponse`. A reply with no entries is
/// returned unchanged.
pub fn append_to_entries(response: &[u8], field: &[u8]) -> Result<Bytes, ReplyError> {
    let mut out = BytesMut::with_capacity(response.len() + 8 * (field.len() + 4));
    let mut rest = response;
    while !rest.is_empty() {
        let (key, used) = Key::decode(rest)?;
        if key != ENTRY_KEY {
            return Err(ReplyError::UnexpectedField {
                field: key.field,
                wire_type: key.wire_type,
            });
        }
        rest = &rest[used..];
        let (declared, used) = varint::decode(rest)?;
        rest = &rest[used..];
        let len = usize::try_from(declared)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or(ReplyError::Truncated {
                declared,
                available: rest.len(),
            })?;
        let (entry, tail) = rest.split_at(len);
        rest = tail;
        out.reserve(ENTRY_KEY.encoded_len() + varint::MAX_LEN + len + field.len());
        ENTRY_KEY.encode(&mut out);
        varint::encode((len + field.len()) as u64, &mut out);
        out.put_slice(entry);
        out.put_slice(field);
    }
    Ok(out.freeze())
}

/// Appends `field` to a streamed `SomeReply`.
pub fn append_to_streamed(reply: &[u8], field: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(reply.len() + field.len());
    out.put_slice(reply);
    out.put_slice(field);
    out.freeze()
}

/// Wraps `field` as the single entry of a unary reply (`EmptyResponse { messages: [Empty] }`
/// when `field` is an encoded `Empty`).
pub fn single_entry(field: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(field.len() + 1 + varint::MAX_LEN);
    ENTRY_KEY.encode(&mut out);
    varint::encode(field.len() as u64, &mut out);
    out.put_slice(field);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ENTRY_KEY.encode(&mut out);
        varint::encode(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn each_entry_gets_the_field() {
        let reply = [entry(b"\x12\x01a"), entry(b""), entry(b"\x12\x02bc")].concat();
        let got = append_to_entries(&reply, b"\x0a\x00").unwrap();
        let want = [
            entry(b"\x12\x01a\x0a\x00"),
            entry(b"\x0a\x00"),
            entry(b"\x12\x02bc\x0a\x00"),
        ]
        .concat();
        assert_eq!(&got[..], &want[..]);
        assert!(append_to_entries(b"", b"\x0a\x00").unwrap().is_empty());
    }

    #[test]
    fn other_shapes_are_rejected() {
        assert!(matches!(
            append_to_entries(b"\x10\x01", b""),
            Err(ReplyError::UnexpectedField { field: 2, .. })
        ));
        assert!(matches!(
            append_to_entries(b"\x0a\x05ab", b""),
            Err(ReplyError::Truncated {
                declared: 5,
                available: 2
            })
        ));
        assert!(append_to_entries(b"\x0a", b"").is_err());
        assert!(append_to_entries(b"\xff", b"").is_err());
    }

    #[test]
    fn single_entry_and_streamed() {
        assert_eq!(&single_entry(b"\x0a\x00")[..], &entry(b"\x0a\x00")[..]);
        assert_eq!(&append_to_streamed(b"ab", b"cd")[..], b"abcd");
    }

    proptest! {
        #[test]
        fn entries_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
                              field in proptest::collection::vec(any::<u8>(), 0..40)) {
            let reply: Vec<u8> = bodies.iter().flat_map(|b| entry(b)).collect();
            let got = append_to_entries(&reply, &field).unwrap();
            let want: Vec<u8> = bodies.iter().flat_map(|b| entry(&[&b[..], &field[..]].concat())).collect();
            prop_assert_eq!(&got[..], &want[..]);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = append_to_entries(&data, b"\x0a\x00");
        }
    }
}
