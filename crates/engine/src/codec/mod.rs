//! Pure wire codecs: no I/O, no async, deterministic.
//!
//! The proxy moves bytes; the only parsing it does is of the gRPC length prefix
//! (to enforce size limits and to find message boundaries for fan-out) and of
//! protobuf varints (for the reply rewriting done by fan-out backends). Keeping
//! these as pure functions lets them be unit-, property- and fuzz-tested
//! without sockets.

pub mod frame;
pub mod reply;
pub mod timeout;
pub mod varint;
