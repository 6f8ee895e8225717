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
    /// An entry is not a protobuf message, or its field 1 is not an embedded
    /// message (the contract's `Metadata`): e.g. a reply whose field 1 is a
    /// string.
    #[error("reply entry is not a message with `Metadata` in field 1: {0}")]
    NotAnEntry(&'static str),
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
        check_entry(entry)?;
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
pub fn append_to_streamed(reply: &[u8], field: &[u8]) -> Result<Bytes, ReplyError> {
    check_entry(reply)?;
    let mut out = BytesMut::with_capacity(reply.len() + field.len());
    out.put_slice(reply);
    out.put_slice(field);
    Ok(out.freeze())
}

/// Checks that `entry` can be a `SomeReply`: a well-formed protobuf message
/// whose field 1, if present, is itself a well-formed message. Without a
/// schema nothing more can be known; what this catches is the common mistake
/// of fanning out a method whose reply is not of the contract's shape (a
/// string in field 1 fails here instead of getting the tag appended to it).
fn check_entry(entry: &[u8]) -> Result<(), ReplyError> {
    walk_message(entry, true)
}

/// Walks every field of a message; `entry` also requires field 1 to be an
/// embedded message.
fn walk_message(mut rest: &[u8], entry: bool) -> Result<(), ReplyError> {
    let malformed = |_| ReplyError::NotAnEntry("it is not a protobuf message");
    // Field numbers of the groups opened and not yet closed.
    let mut groups: Vec<u32> = Vec::new();
    while !rest.is_empty() {
        let (key, used) = Key::decode(rest)
            .map_err(|_| ReplyError::NotAnEntry("it is not a protobuf message"))?;
        rest = &rest[used..];
        let top = groups.is_empty();
        if entry && top && key.field == 1 && key.wire_type != WireType::LengthDelimited {
            return Err(ReplyError::NotAnEntry("its field 1 is not a message"));
        }
        match key.wire_type {
            WireType::Varint => {
                let (_, used) = varint::decode(rest).map_err(malformed)?;
                rest = &rest[used..];
            }
            WireType::Fixed64 | WireType::Fixed32 => {
                let len = if key.wire_type == WireType::Fixed64 {
                    8
                } else {
                    4
                };
                rest = rest
                    .get(len..)
                    .ok_or(ReplyError::NotAnEntry("it is not a protobuf message"))?;
            }
            WireType::LengthDelimited => {
                let (declared, used) = varint::decode(rest).map_err(malformed)?;
                rest = &rest[used..];
                let len = usize::try_from(declared)
                    .ok()
                    .filter(|&len| len <= rest.len())
                    .ok_or(ReplyError::NotAnEntry("it is not a protobuf message"))?;
                let (value, tail) = rest.split_at(len);
                if entry && top && key.field == 1 {
                    walk_message(value, false)
                        .map_err(|_| ReplyError::NotAnEntry("its field 1 is not a message"))?;
                }
                rest = tail;
            }
            WireType::StartGroup => groups.push(key.field),
            WireType::EndGroup => {
                if groups.pop() != Some(key.field) {
                    return Err(ReplyError::NotAnEntry("it is not a protobuf message"));
                }
            }
        }
    }
    if groups.is_empty() {
        Ok(())
    } else {
        Err(ReplyError::NotAnEntry("it is not a protobuf message"))
    }
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
        assert_eq!(
            &append_to_streamed(b"\x10\x01", b"cd").unwrap()[..],
            b"\x10\x01cd"
        );
    }

    #[test]
    fn entries_must_be_messages_with_a_message_in_field_1() {
        // A Metadata in field 1, other fields of every wire type, a group.
        let good = b"\x0a\x02\x0a\x00\x10\x96\x01\x19\x01\x02\x03\x04\x05\x06\x07\x08\x25\x01\x02\x03\x04\x2b\x08\x01\x2c";
        assert!(check_entry(good).is_ok());
        assert!(check_entry(b"").is_ok());
        // `message Foo { string name = 1; }` with a text value.
        let text = [&b"\x0a\x13"[..], b"machine-2 status ok"].concat();
        assert!(matches!(check_entry(&text), Err(ReplyError::NotAnEntry(_))));
        assert!(append_to_entries(&entry(&text), b"\x0a\x00").is_err());
        assert!(append_to_streamed(&text, b"\x0a\x00").is_err());
        // Field 1 as a varint; truncated fields; unbalanced groups.
        for bad in [
            &b"\x08\x01"[..],
            b"\x10",
            b"\x12\x05ab",
            b"\x19\x01",
            b"\x2b",
            b"\x2c",
            b"\x2b\x34",
        ] {
            assert!(check_entry(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
                              field in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Each entry: `bytes value = 2`, a well-formed message.
            let bodies: Vec<Vec<u8>> = values.iter().map(|v| {
                let mut body = vec![0x12];
                varint::encode(v.len() as u64, &mut body);
                body.extend_from_slice(v);
                body
            }).collect();
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
