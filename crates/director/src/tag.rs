//! Tagging fan-out replies with the machine that sent them, and turning a
//! machine's failure into a reply entry (an *error entry*).
//!
//! This is the Go reference's `One2ManyResponder` (`AppendInfo`,
//! `BuildError`), done without knowing any reply schema. Fan-out methods follow a shape contract:
//!
//! ```proto
//! message SomeResponse { repeated SomeReply messages = 1; }   // unary reply
//! message SomeReply    { Metadata metadata = 1; ... }           // streamed reply, and each entry
//! ```
//!
//! An encoded `Empty { metadata }` is byte for byte a `SomeReply.metadata`
//! field, and protobuf merges concatenated fields, so appending it to an entry
//! sets that entry's metadata. The reference handled exactly one entry; here a
//! unary reply may have any number (each gets the metadata, zero passes
//! unchanged). A failure becomes `Empty { metadata { error, status } }`, which
//! decodes as a `SomeReply` with only metadata set.
//!
//! The encoded field is computed when the machine info is set, not per reply:
//! the local machine's address changes at runtime, replies arrive constantly.
//!
//! The envelope (`switchyard.v1.MachineReply`) needs no shape at all: its
//! field 1 is the same `Metadata`, so an item is that encoded field, then
//! the reply message whole as field 2.

use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use prost::Message;
use switchyard_engine::ReplyShape;
use switchyard_engine::codec::reply::{self, ReplyError};
use tonic::Status;

use crate::pb;

/// Who a machine is, as written into the `Metadata` of its replies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MachineInfo {
    /// The machine's address (`Metadata.machine_addr`); may be empty when unknown.
    pub addr: String,
    /// The machine's registry ID (`Metadata.machine_id`); empty without a registry.
    pub id: String,
    /// The machine's registry name (`Metadata.machine_name`); empty without a registry.
    pub name: String,
}

impl MachineInfo {
    /// A machine known only by its address.
    pub fn from_addr(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            ..Self::default()
        }
    }

    fn metadata(&self) -> pb::Metadata {
        pb::Metadata {
            machine_addr: self.addr.clone(),
            machine_id: self.id.clone(),
            machine_name: self.name.clone(),
            ..pb::Metadata::default()
        }
    }
}

/// The machine info plus its pre-encoded `Empty { metadata }`.
#[derive(Debug)]
struct Tag {
    info: Arc<MachineInfo>,
    field: Bytes,
}

impl Tag {
    fn new(info: MachineInfo) -> Arc<Self> {
        let field = pb::Empty {
            metadata: Some(info.metadata()),
        }
        .encode_to_vec()
        .into();
        Arc::new(Self {
            info: Arc::new(info),
            field,
        })
    }
}

/// Tags replies of one machine and builds its error entries (the Go
/// reference's `One2ManyResponder`). The machine info can be swapped while
/// calls run.
#[derive(Debug)]
pub struct MachineTag {
    tag: RwLock<Arc<Tag>>,
}

impl MachineTag {
    /// A responder for `info`.
    pub fn new(info: MachineInfo) -> Self {
        Self {
            tag: RwLock::new(Tag::new(info)),
        }
    }

    /// The machine info replies are tagged with.
    pub fn info(&self) -> Arc<MachineInfo> {
        self.tag().info.clone()
    }

    /// Replaces the machine info; replies tagged from now on carry it.
    pub fn set_info(&self, info: MachineInfo) {
        let tag = Tag::new(info);
        *self.tag.write().unwrap_or_else(PoisonError::into_inner) = tag;
    }

    fn tag(&self) -> Arc<Tag> {
        self.tag
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds this machine's `Metadata` to a reply message.
    ///
    /// Streamed: the message is one `SomeReply`, the metadata is appended.
    /// Unary: the message is a `SomeResponse`; every field-1 entry gets the
    /// metadata, a reply without entries passes unchanged, and any other
    /// field is an error.
    pub fn tag_reply(&self, shape: ReplyShape, reply: Bytes) -> Result<Bytes, ReplyError> {
        let tag = self.tag();
        match shape {
            ReplyShape::Streamed => reply::append_to_streamed(&reply, &tag.field),
            ReplyShape::Unary if reply.is_empty() => Ok(reply),
            ReplyShape::Unary => reply::append_to_entries(&reply, &tag.field),
            ReplyShape::Envelope => Ok(envelope_item(&tag.field, &reply)),
        }
    }

    /// This machine's last envelope item: `MachineReply { metadata {
    /// machine…, status (and error unless OK) }, last, trailers }`, with the
    /// trailers other than `grpc-*` (a `-bin` value decoded; the first value
    /// of a repeated key).
    pub fn envelope_end(&self, status: &Status, trailers: &http::HeaderMap) -> Bytes {
        let tag = self.tag();
        let mut metadata = tag.info.metadata();
        fill_status(&mut metadata, status, &tag.info.addr);
        let mut map = std::collections::HashMap::new();
        let trailers = tonic::metadata::MetadataMap::from_headers(trailers.clone());
        for entry in trailers.iter() {
            let (key, value) = match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                    (key.as_str(), value.as_encoded_bytes().to_vec())
                }
                tonic::metadata::KeyAndValueRef::Binary(key, value) => match value.to_bytes() {
                    Ok(bytes) => (key.as_str(), bytes.to_vec()),
                    Err(_) => continue,
                },
            };
            if !key.starts_with("grpc-") {
                map.entry(key.to_owned()).or_insert(value);
            }
        }
        pb::MachineReply {
            metadata: Some(metadata),
            message: Vec::new(),
            last: true,
            trailers: map,
        }
        .encode_to_vec()
        .into()
    }

    /// This machine's error entry for a failed call: `Empty { metadata {
    /// machine…, error: message, status: {code, message, details} } }`, as a
    /// streamed message or as a unary `EmptyResponse` with that single entry.
    ///
    /// The status details are the `google.rpc.Status` that
    /// `grpc-status-details-bin` carries; when they do not decode, the entry
    /// keeps the code and message without details.
    pub fn error_entry(&self, shape: ReplyShape, status: &Status) -> Bytes {
        if shape == ReplyShape::Envelope {
            return self.envelope_end(status, &http::HeaderMap::new());
        }
        let tag = self.tag();
        let mut metadata = tag.info.metadata();
        fill_status(&mut metadata, status, &tag.info.addr);
        let empty = pb::Empty {
            metadata: Some(metadata),
        };
        match shape {
            ReplyShape::Streamed | ReplyShape::Envelope => empty.encode_to_vec().into(),
            ReplyShape::Unary => pb::EmptyResponse {
                messages: vec![empty],
            }
            .encode_to_vec()
            .into(),
        }
    }
}

/// Sets `metadata`'s status to `status` (code 0 included) and, unless OK,
/// its error text. The details are the `google.rpc.Status` that
/// `grpc-status-details-bin` carries; when they do not decode, the entry
/// keeps the code and message without details.
fn fill_status(metadata: &mut pb::Metadata, status: &Status, machine: &str) {
    let details = if status.details().is_empty() {
        Vec::new()
    } else {
        match pb::RpcStatus::decode(status.details()) {
            Ok(rpc) => rpc.details,
            Err(err) => {
                tracing::debug!(machine, error = %err, "status details are not a google.rpc.Status; dropped");
                Vec::new()
            }
        }
    };
    if status.code() != tonic::Code::Ok {
        metadata.error = status.message().to_owned();
    }
    metadata.status = Some(pb::RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details,
    });
}

/// An envelope item: the encoded `Metadata` field, then `message` as field 2.
fn envelope_item(metadata_field: &[u8], message: &[u8]) -> Bytes {
    let mut item = Vec::with_capacity(metadata_field.len() + 11 + message.len());
    item.extend_from_slice(metadata_field);
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut item);
    prost::encoding::encode_varint(message.len() as u64, &mut item);
    item.extend_from_slice(message);
    item.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tonic::Code;

    /// A reply entry shaped like the contract, as a client would define it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct SomeReply {
        #[prost(message, optional, tag = "1")]
        metadata: Option<pb::Metadata>,
        #[prost(string, tag = "2")]
        value: String,
    }

    /// A unary reply shaped like the contract.
    #[derive(Clone, PartialEq, prost::Message)]
    struct SomeResponse {
        #[prost(message, repeated, tag = "1")]
        messages: Vec<SomeReply>,
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            addr: "fd00::2".into(),
            id: "m-2".into(),
            name: "beta".into(),
        }
    }

    fn responder() -> MachineTag {
        MachineTag::new(machine())
    }

    fn tagged() -> Option<pb::Metadata> {
        Some(pb::Metadata {
            machine_addr: "fd00::2".into(),
            machine_id: "m-2".into(),
            machine_name: "beta".into(),
            ..Default::default()
        })
    }

    fn reply(value: &str) -> SomeReply {
        SomeReply {
            metadata: None,
            value: value.into(),
        }
    }

    fn unary(values: &[&str]) -> Bytes {
        SomeResponse {
            messages: values.iter().map(|v| reply(v)).collect(),
        }
        .encode_to_vec()
        .into()
    }

    fn append_unary(values: &[&str]) -> SomeResponse {
        let out = responder()
            .tag_reply(ReplyShape::Unary, unary(values))
            .unwrap();
        SomeResponse::decode(out).unwrap()
    }

    #[test]
    fn unary_reply_with_one_entry_gets_the_metadata() {
        let got = append_unary(&["hello"]);
        assert_eq!(got.messages.len(), 1);
        assert_eq!(got.messages[0].metadata, tagged());
        assert_eq!(got.messages[0].value, "hello");
    }

    #[test]
    fn unary_reply_without_entries_passes_unchanged() {
        let out = responder()
            .tag_reply(ReplyShape::Unary, Bytes::new())
            .unwrap();
        assert!(out.is_empty());
        assert!(append_unary(&[]).messages.is_empty());
    }

    #[test]
    fn every_entry_of_a_unary_reply_gets_the_metadata() {
        let got = append_unary(&["a", "", "c"]);
        let values: Vec<_> = got.messages.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(values, ["a", "", "c"]);
        for entry in &got.messages {
            assert_eq!(entry.metadata, tagged());
        }
    }

    #[test]
    fn streamed_reply_gets_the_metadata() {
        let message: Bytes = reply("tick").encode_to_vec().into();
        let out = responder()
            .tag_reply(ReplyShape::Streamed, message)
            .unwrap();
        let got = SomeReply::decode(out).unwrap();
        assert_eq!(got.metadata, tagged());
        assert_eq!(got.value, "tick");
        // An empty streamed message is a valid SomeReply too.
        let out = responder()
            .tag_reply(ReplyShape::Streamed, Bytes::new())
            .unwrap();
        assert_eq!(SomeReply::decode(out).unwrap().metadata, tagged());
    }

    #[test]
    fn a_reply_not_shaped_for_fan_out_is_an_error() {
        // SomeReply { value = 2 } sent as a unary reply: field 2 at top level.
        let wrong: Bytes = reply("x").encode_to_vec().into();
        let err = responder().tag_reply(ReplyShape::Unary, wrong).unwrap_err();
        assert!(err.to_string().contains("field 2"), "{err}");
        // Field 1 as a varint instead of an embedded message.
        assert!(
            responder()
                .tag_reply(ReplyShape::Unary, Bytes::from_static(b"\x08\x01"))
                .is_err()
        );
        // Truncated entry.
        assert!(
            responder()
                .tag_reply(ReplyShape::Unary, Bytes::from_static(b"\x0a\x05ab"))
                .is_err()
        );
    }

    #[test]
    fn swapped_info_is_used_from_then_on() {
        let r = responder();
        r.set_info(MachineInfo::from_addr("fd00::9"));
        assert_eq!(r.info().addr, "fd00::9");
        let got =
            SomeResponse::decode(r.tag_reply(ReplyShape::Unary, unary(&["a"])).unwrap()).unwrap();
        let metadata = got.messages[0].metadata.clone().unwrap();
        assert_eq!(metadata.machine_addr, "fd00::9");
        assert_eq!(metadata.machine_id, "");
    }

    fn failing_status() -> Status {
        let any = prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: b"\x0a\x03why".to_vec(),
        };
        let details = pb::RpcStatus {
            code: Code::NotFound as i32,
            message: "no such container".into(),
            details: vec![any],
        }
        .encode_to_vec();
        Status::with_details(Code::NotFound, "no such container", details.into())
    }

    fn assert_error_metadata(metadata: Option<pb::Metadata>, with_details: bool) {
        let metadata = metadata.expect("metadata is set");
        assert_eq!(metadata.machine_addr, "fd00::2");
        assert_eq!(metadata.machine_id, "m-2");
        assert_eq!(metadata.machine_name, "beta");
        assert_eq!(metadata.error, "no such container");
        let status = metadata.status.expect("status is set");
        assert_eq!(status.code, Code::NotFound as i32);
        assert_eq!(status.message, "no such container");
        if with_details {
            assert_eq!(status.details.len(), 1);
            assert_eq!(
                status.details[0].type_url,
                "type.googleapis.com/google.rpc.ErrorInfo"
            );
            assert_eq!(status.details[0].value, b"\x0a\x03why");
        } else {
            assert!(status.details.is_empty());
        }
    }

    #[test]
    fn unary_error_entry_decodes_as_any_reply() {
        let out = responder().error_entry(ReplyShape::Unary, &failing_status());
        let got = SomeResponse::decode(out.clone()).unwrap();
        assert_eq!(got.messages.len(), 1);
        assert_eq!(got.messages[0].value, "");
        assert_error_metadata(got.messages[0].metadata.clone(), true);
        // It is exactly EmptyResponse { [Empty] }, i.e. the engine's single entry.
        let empty = pb::EmptyResponse::decode(out.clone()).unwrap().messages[0].encode_to_vec();
        assert_eq!(out, reply::single_entry(&empty));
    }

    #[test]
    fn streamed_error_entry_is_a_bare_empty() {
        let out = responder().error_entry(ReplyShape::Streamed, &failing_status());
        let got = SomeReply::decode(out.clone()).unwrap();
        assert_error_metadata(got.metadata, true);
        assert!(pb::Empty::decode(out).unwrap().metadata.is_some());
    }

    #[test]
    fn error_without_or_with_broken_details() {
        let plain = Status::new(Code::NotFound, "no such container");
        let got = SomeReply::decode(responder().error_entry(ReplyShape::Streamed, &plain)).unwrap();
        assert_error_metadata(got.metadata, false);
        let broken = Status::with_details(
            Code::NotFound,
            "no such container",
            Bytes::from_static(b"\xff\xff"),
        );
        let got =
            SomeReply::decode(responder().error_entry(ReplyShape::Streamed, &broken)).unwrap();
        assert_error_metadata(got.metadata, false);
    }

    #[test]
    fn error_entries_merge_with_successful_replies() {
        // What the engine does in unary fan-out: concatenate per-machine replies.
        let ok = MachineTag::new(MachineInfo::from_addr("fd00::1"))
            .tag_reply(ReplyShape::Unary, unary(&["up"]))
            .unwrap();
        let failed = responder().error_entry(ReplyShape::Unary, &failing_status());
        let merged = SomeResponse::decode([ok, failed].concat().as_slice()).unwrap();
        assert_eq!(merged.messages.len(), 2);
        assert_eq!(merged.messages[0].value, "up");
        assert_eq!(
            merged.messages[0].metadata.as_ref().unwrap().machine_addr,
            "fd00::1"
        );
        assert_error_metadata(merged.messages[1].metadata.clone(), true);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128), streamed in any::<bool>()) {
            let shape = if streamed { ReplyShape::Streamed } else { ReplyShape::Unary };
            let _ = responder().tag_reply(shape, Bytes::from(data.clone()));
            let status = Status::with_details(Code::Internal, "x", Bytes::from(data));
            let _ = responder().error_entry(shape, &status);
        }

        #[test]
        fn any_number_of_entries_each_get_the_metadata(values in proptest::collection::vec("[a-z]{0,12}", 0..8)) {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let got = append_unary(&refs);
            prop_assert_eq!(got.messages.len(), values.len());
            for (entry, value) in got.messages.iter().zip(&values) {
                prop_assert_eq!(&entry.value, value);
                prop_assert_eq!(&entry.metadata, &tagged());
            }
        }
    }
}
