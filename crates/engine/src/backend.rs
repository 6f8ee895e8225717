//! What the engine needs from an upstream: a connection, the headers to send,
//! and (for fan-out) how to tag replies and turn failures into replies.

use std::fmt;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use http::uri::{Authority, Scheme};
use tonic::Status;

use crate::BoxError;
use crate::client::{Channel, SendRequest};

/// One upstream gRPC server the proxy can forward a call to.
///
/// The engine calls [`Backend::connect`] once per call and per backend; the
/// backend decides which connection to use and which request metadata is
/// forwarded or rewritten. `Display` names the backend in errors and logs.
pub trait Backend: fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// An HTTP/2 connection for this call plus the request headers to send.
    ///
    /// `request` is the incoming request head (method path, authority,
    /// metadata). The returned error reaches the client (one-to-one) or
    /// becomes this backend's error entry (fan-out).
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>>;

    /// Rewrites one reply message in fan-out mode, e.g. to say which backend
    /// answered. `streaming` tells whether the method is streamed. An error
    /// turns this backend's answer into its error entry.
    fn append_info(&self, streaming: bool, message: Bytes) -> Result<Bytes, BoxError> {
        let _ = streaming;
        Ok(message)
    }

    /// Turns this backend's failure into a reply message in fan-out mode, so
    /// the other backends' answers still reach the client. `None` makes the
    /// failure fail the whole call.
    fn build_error(&self, streaming: bool, status: &Status) -> Option<Bytes> {
        let _ = (streaming, status);
        None
    }
}

/// Where and how to send one call upstream.
#[derive(Debug)]
pub struct Upstream {
    /// The HTTP/2 connection (shared by every call to the same backend).
    pub connection: SendRequest,
    /// `:scheme` of the upstream request.
    pub scheme: Scheme,
    /// `:authority` of the upstream request.
    pub authority: Authority,
    /// Request headers (gRPC metadata) to send. The engine adds `te`,
    /// `grpc-timeout` (the remaining deadline) and, in fan-out mode,
    /// `grpc-accept-encoding`, and drops connection-specific headers.
    pub headers: HeaderMap,
}

/// A backend that forwards every call over one [`Channel`], request
/// metadata as is. Fan-out replies are left untagged and failures fail the
/// call (the [`Backend`] defaults); wrap it to change that.
#[derive(Debug, Clone)]
pub struct ChannelBackend {
    channel: Channel,
}

impl ChannelBackend {
    /// A backend on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

impl fmt::Display for ChannelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.channel.target().fmt(f)
    }
}

impl Backend for ChannelBackend {
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            // Hop-by-hop headers such as `host` are dropped when the upstream
            // request is built.
            self.channel
                .upstream(request.headers.clone())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))
        })
    }
}
