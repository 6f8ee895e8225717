//! [`TestBackend`]: a [`Backend`] for proxy tests, following the fan-out
//! reply contract of `switchyard.test.v1` (`Metadata` in field 1 of every
//! reply entry).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use prost::Message;
use switchyard_engine::codec::reply;
use switchyard_engine::{
    Address, Backend, Backoff, BoxError, Channel, ChannelConfig, ReplyShape, Upstream,
};
use tonic::Status;

use crate::pb::google::rpc;
use crate::pb::{Metadata, MetadataOnly};

/// Channel settings suited to tests: short connect timeout, fast retries.
pub fn test_channel_config() -> ChannelConfig {
    ChannelConfig {
        connect_timeout: Duration::from_secs(2),
        backoff: Backoff::LOCAL,
        ..ChannelConfig::default()
    }
}

/// A backend named `name` reached through an engine [`Channel`].
///
/// - `connect` forwards the request headers (the engine drops `host`), with
///   scheme `http` and the target's authority; a connect failure becomes
///   `UNAVAILABLE` with message `"<name>: <error>"`.
/// - `tag_reply` tags each reply with `Metadata { machine_addr: name }`.
/// - `error_entry` turns a failure into
///   `MetadataOnly { metadata: { machine_addr: name, error, status } }`
///   (a single-entry `MetadataOnlyResponse` for unary methods), unless made
///   with [`TestBackend::without_error_entries`].
#[derive(Debug, Clone)]
pub struct TestBackend {
    name: String,
    channel: Channel,
    error_entries: bool,
}

impl TestBackend {
    /// A backend dialling `target` with `config`.
    pub fn new(name: impl Into<String>, target: Address, config: ChannelConfig) -> Self {
        Self::with_channel(name, Channel::new(target, config))
    }

    /// A backend on TCP `addr`, with [`test_channel_config`].
    pub fn tcp(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self::new(name, Address::Tcp(addr), test_channel_config())
    }

    /// A backend on the Unix socket `path`, with [`test_channel_config`].
    pub fn unix(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self::new(name, Address::Unix(path.into()), test_channel_config())
    }

    /// A backend using an existing channel (e.g. shared with another backend).
    pub fn with_channel(name: impl Into<String>, channel: Channel) -> Self {
        Self {
            name: name.into(),
            channel,
            error_entries: true,
        }
    }

    /// This backend's failures fail the whole fan-out call (`error_entry`
    /// returns `None`).
    #[must_use]
    pub fn without_error_entries(mut self) -> Self {
        self.error_entries = false;
        self
    }

    /// The display name (`machine_addr` of its replies).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The `Metadata` appended to this backend's replies.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            machine_addr: self.name.clone(),
            ..Metadata::default()
        }
    }

    /// The `Metadata` of this backend's error entry for `status`.
    pub fn error_metadata(&self, status: &Status) -> Metadata {
        Metadata {
            machine_addr: self.name.clone(),
            error: status.message().to_owned(),
            status: Some(rpc::Status {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: Vec::new(),
            }),
            ..Metadata::default()
        }
    }

    /// The encoded `MetadataOnly` appended to each reply (field 1 of it).
    pub fn info_field(&self) -> Bytes {
        encode_metadata(self.metadata())
    }
}

fn encode_metadata(metadata: Metadata) -> Bytes {
    MetadataOnly {
        metadata: Some(metadata),
    }
    .encode_to_vec()
    .into()
}

impl fmt::Display for TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Backend for TestBackend {
    fn connect<'a>(
        &'a self,
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            self.channel
                .upstream(None)
                .await
                .map_err(|err| Status::unavailable(format!("{}: {err}", self.name)))
        })
    }

    fn tag_reply(&self, shape: ReplyShape, message: Bytes) -> Result<Bytes, BoxError> {
        let field = self.info_field();
        match shape {
            ReplyShape::Streamed => Ok(reply::append_to_streamed(&message, &field)?),
            ReplyShape::Unary => Ok(reply::append_to_entries(&message, &field)?),
            ReplyShape::Envelope => Ok(message),
        }
    }

    fn error_entry(&self, shape: ReplyShape, status: &Status) -> Option<Bytes> {
        if !self.error_entries {
            return None;
        }
        let entry = encode_metadata(self.error_metadata(status));
        Some(match shape {
            ReplyShape::Streamed | ReplyShape::Envelope => entry,
            ReplyShape::Unary => reply::single_entry(&entry),
        })
    }
}
