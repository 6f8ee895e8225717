//! Generated protobuf messages, tonic clients and servers.
//!
//! Modules mirror the proto packages (`switchyard::test::v1`,
//! `google::rpc`); the `switchyard.test.v1` items are re-exported here.

#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]

include!(concat!(env!("OUT_DIR"), "/protos.rs"));

pub use self::switchyard::test::v1::*;

/// The encoded `FileDescriptorSet` of the test protos (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
