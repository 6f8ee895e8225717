//! What the engine needs from an upstream: a connection and the headers to
//! send, and, for fan-out, how to tag a reply with who sent it and how to
//! turn a failure into a reply entry.

use std::fmt;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tonic::Status;

use crate::BoxError;
use crate::channel::Channel;
use crate::upstream::Upstream;

/// How a fan-out call's replies reach the client; gRPC does not say on the
/// wire whether a method streams, so the director tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyShape {
    /// One reply message per backend, merged into one message for the client.
    Unary,
    /// Any number of reply messages per backend, forwarded as they arrive.
    Streamed,
    /// Any method, any reply type: each reply message is wrapped whole in an
    /// item naming its backend ([`Backend::tag_reply`]), forwarded as it
    /// arrives, and each backend's end is one more item
    /// ([`Backend::envelope_end`]).
    Envelope,
}

/// One upstream gRPC server the proxy can forward a call to.
///
/// The engine calls [`Backend::connect`] once per call and per backend; the
/// backend decides which connection to use and which request metadata is
/// forwarded or rewritten. `Display` names the backend in errors and logs.
pub trait Backend: fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// An HTTP/2 connection for this call, plus the request headers to send
    /// if the backend rewrites the caller's ([`Upstream::headers`]).
    ///
    /// `request` is the incoming request head (method path, authority,
    /// metadata). The returned error reaches the client (one-to-one) or
    /// becomes this backend's error entry (fan-out).
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>>;

    /// Tags one reply message in fan-out mode, e.g. with which backend
    /// answered. An error turns this backend's answer into its error entry.
    fn tag_reply(&self, shape: ReplyShape, message: Bytes) -> Result<Bytes, BoxError> {
        let _ = shape;
        Ok(message)
    }

    /// This backend's error entry in fan-out mode: a reply message that
    /// stands for its failure, so the other backends' answers still reach
    /// the client. `None` makes the failure fail the whole call.
    fn error_entry(&self, shape: ReplyShape, status: &Status) -> Option<Bytes> {
        let _ = (shape, status);
        None
    }

    /// This backend's last item in an enveloped fan-out: how it ended
    /// (`status`, OK included) and its `trailers`. `None` makes the
    /// backend's end fail the whole call.
    fn envelope_end(&self, status: &Status, trailers: &http::HeaderMap) -> Option<Bytes> {
        let _ = (status, trailers);
        None
    }
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
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            self.channel
                .upstream(None)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))
        })
    }
}
