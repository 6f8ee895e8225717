//! A tonic codec for messages known only at run time.
//!
//! tonic's generated clients use `ProstCodec<T>`, which decodes with
//! `T::default()`: that needs a Rust type per message. A dynamic client has
//! only descriptors, so its codec carries them: requests encode themselves
//! (a `DynamicMessage` knows its descriptor), replies decode against the
//! method's output descriptor.

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor, ReflectMessage};
use switchyard_director::pb::MachineReply;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes the messages of one type and decodes those of another: one
/// method's requests and replies.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    encodes: MessageDescriptor,
    decodes: MessageDescriptor,
}

impl DynamicCodec {
    /// The client's codec of `method`: encodes requests, decodes replies.
    pub fn new(method: &MethodDescriptor) -> Self {
        Self {
            encodes: method.input(),
            decodes: method.output(),
        }
    }

    /// The server's codec of `method`: decodes requests, encodes replies.
    pub fn for_server(method: &MethodDescriptor) -> Self {
        Self {
            encodes: method.output(),
            decodes: method.input(),
        }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder(self.encodes.clone())
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.decodes.clone())
    }
}

/// Encodes messages of one type, refusing any other.
#[derive(Debug, Clone)]
pub struct DynamicEncoder(MessageDescriptor);

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // Messages of another type would encode fine and mean nonsense.
        if item.descriptor() != self.0 {
            return Err(Status::internal(format!(
                "cannot send a {} where the method takes {}",
                item.descriptor().full_name(),
                self.0.full_name()
            )));
        }
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode {}: {e}", self.0.full_name())))
    }
}

/// Decodes messages of one type.
#[derive(Debug, Clone)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        // `src` holds exactly one message, which `decode` consumes whole.
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode a {}: {e}", self.0.full_name())))
    }
}

/// The codec of an enveloped fan-out (`switchyard-reply: envelope`): the
/// method's requests go out as they are, and whatever the method, what
/// comes back is a stream of `switchyard.v1.MachineReply`, each holding one
/// machine's reply bytes (decoded later, with the method's output type).
#[derive(Debug, Clone)]
pub struct EnvelopeCodec {
    encodes: MessageDescriptor,
}

impl EnvelopeCodec {
    /// The client's codec of an enveloped call of `method`.
    pub fn new(method: &MethodDescriptor) -> Self {
        Self {
            encodes: method.input(),
        }
    }
}

impl Codec for EnvelopeCodec {
    type Encode = DynamicMessage;
    type Decode = MachineReply;
    type Encoder = DynamicEncoder;
    type Decoder = EnvelopeDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder(self.encodes.clone())
    }

    fn decoder(&mut self) -> Self::Decoder {
        EnvelopeDecoder
    }
}

/// Decodes `switchyard.v1.MachineReply` items.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeDecoder;

impl Decoder for EnvelopeDecoder {
    type Item = MachineReply;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        MachineReply::decode(src).map(Some).map_err(|e| {
            Status::internal(format!("cannot decode a switchyard.v1.MachineReply: {e}"))
        })
    }
}
