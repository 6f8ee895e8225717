//! Calling any method of any service, with nothing generated at build time.
//!
//! `tonic::client::Grpc` does the HTTP/2 and gRPC framing for all four
//! method kinds; [`DynamicCodec`] turns messages into bytes with the
//! descriptors. One entry point, [`call`], serves all kinds and always hands
//! back a stream of replies (one item for unary and client-streaming), so a
//! printer needs no per-kind code and streamed replies show as they arrive.
//!
//! Every call carries the caller's metadata (`-H`; through Switchyard it
//! names the machines) and, given a timeout, is bounded by it end to end:
//! the server learns it as `grpc-timeout`, and the client enforces it too,
//! on the call and on every streamed reply, since a server may ignore it.
//!
//! A fan-out ([`call_envelope`]) asks for the envelope (`switchyard-reply:
//! envelope`): whatever the method, the reply is then a stream of
//! `switchyard.v1.MachineReply` items, in the order the machines answer, so
//! any method fans out and a fast machine's replies are not held behind a
//! slow one's.
//!
//! Replies may be as large as the daemon passes (its `max_message_size`,
//! 32 MiB by default), not tonic's 4 MiB: an envelope item holds a
//! machine's whole reply, and a client stricter than its proxy would refuse
//! what the proxy was built to deliver.

use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{Stream, StreamExt};
use prost_reflect::{DynamicMessage, MethodDescriptor};
use switchyard_engine::config::DEFAULT_MAX_MESSAGE_SIZE;
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataKey, MetadataMap};
use tonic::transport::Channel;

use switchyard_director::pb::MachineReply;

use crate::client::codec::{DynamicCodec, EnvelopeCodec};

/// The request metadata that asks a fan-out for the envelope.
pub const REPLY: &str = "switchyard-reply";
/// The request metadata that bounds each machine of a fan-out.
pub const MACHINE_TIMEOUT: &str = "switchyard-machine-timeout";

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server (or the transport) ended the call with an error status.
    #[error("{}: {}", crate::client::output::code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    /// A reply was larger than the client accepts.
    #[error(
        "a reply is above the limit of {limit} bytes ({}); raise it with --max-message-size BYTES",
        .status.message()
    )]
    TooLarge {
        /// The decoder's status.
        status: tonic::Status,
        /// The limit in force.
        limit: usize,
    },
    /// The call outlived its timeout.
    #[error("DEADLINE_EXCEEDED: no complete answer within {0:?}")]
    Timeout(Duration),
    /// A method that takes one request was given none.
    #[error("{0} takes one request message, and none was given")]
    NoRequest(String),
    /// [`call_unary`] was asked to call a streaming method.
    #[error("{0} is a streaming method")]
    NotUnary(String),
}

impl CallError {
    /// The gRPC status code of the failure (`DEADLINE_EXCEEDED` for a
    /// client-side timeout, `INVALID_ARGUMENT` for a missing request).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Status(status) | Self::TooLarge { status, .. } => status.code(),
            Self::Timeout(_) => tonic::Code::DeadlineExceeded,
            Self::NoRequest(_) | Self::NotUnary(_) => tonic::Code::InvalidArgument,
        }
    }
}

/// Why a `-H` header is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No `=` or `:` separates name and value.
    #[error("header `{0}` is not `name=value` (or `name: value`)")]
    Malformed(String),
    /// The name is not a valid metadata key.
    #[error("header name `{0}` is not a valid gRPC metadata key")]
    InvalidName(String),
    /// The value is not valid for the key.
    #[error("header `{name}` has an invalid value{}", if .name.ends_with("-bin") { " (a -bin header takes base64)" } else { " (printable ASCII only)" })]
    InvalidValue {
        /// The header name.
        name: String,
    },
}

/// Adds a `-H` header, `name=value` or `name: value` (grpcurl's form), to
/// `metadata`. A repeated name adds a value, it does not replace one. Names
/// ending in `-bin` take base64 values, sent as binary metadata.
pub fn add_header(metadata: &mut MetadataMap, spec: &str) -> Result<(), HeaderError> {
    let split_at = spec
        .find(['=', ':'])
        .ok_or_else(|| HeaderError::Malformed(spec.to_owned()))?;
    let (name, value) = (spec[..split_at].trim(), spec[split_at + 1..].trim());
    if name.is_empty() {
        return Err(HeaderError::Malformed(spec.to_owned()));
    }
    let invalid_value = || HeaderError::InvalidValue {
        name: name.to_owned(),
    };
    if name.to_ascii_lowercase().ends_with("-bin") {
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| HeaderError::InvalidName(name.to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
            .map_err(|_| invalid_value())?;
        metadata.append_bin(key, BinaryMetadataValue::from_bytes(&bytes));
    } else {
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| HeaderError::InvalidName(name.to_owned()))?;
        // gRPC allows printable ASCII only, stricter than HTTP.
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid_value());
        }
        let value: AsciiMetadataValue = value.parse().map_err(|_| invalid_value())?;
        metadata.append(key, value);
    }
    Ok(())
}

/// What goes with every call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Request metadata.
    pub metadata: MetadataMap,
    /// Bound of the whole call, replies included.
    pub timeout: Option<Duration>,
    /// Largest reply message accepted, in bytes [default: the daemon's
    /// default `max_message_size`, [`DEFAULT_MAX_MESSAGE_SIZE`]].
    pub max_message_size: Option<usize>,
}

impl CallOptions {
    /// The reply size limit in force.
    pub fn reply_limit(&self) -> usize {
        self.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

/// `status`, or [`CallError::TooLarge`] when it is tonic refusing a reply
/// above `limit`.
fn call_error(status: tonic::Status, limit: usize) -> CallError {
    if status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large")
    {
        CallError::TooLarge { status, limit }
    } else {
        CallError::Status(status)
    }
}

/// Messages of a call, in the order they arrive; an error ends the stream.
pub type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, CallError>> + Send>>;

/// Replies, in the order they arrive; an error ends the stream.
pub type ReplyStream = Messages<DynamicMessage>;

/// The items of an enveloped fan-out, in the order they arrive; an error
/// (of the whole call) ends the stream.
pub type ItemStream = Messages<MachineReply>;

/// An answered call.
pub struct Reply {
    /// The response headers.
    pub headers: MetadataMap,
    /// The reply messages.
    pub messages: ReplyStream,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Calls `method` over `channel`, whatever its kind.
///
/// Unary and server-streaming methods send the first message of `requests`
/// (the others are not read: [`crate::client::request::requests_for`] gives exactly
/// one); client-streaming and bidi methods send them all, as they come, then
/// close their side. The reply stream yields the replies as they arrive.
pub async fn call<S>(
    channel: Channel,
    method: &MethodDescriptor,
    requests: S,
    options: &CallOptions,
) -> Result<Reply, CallError>
where
    S: Stream<Item = DynamicMessage> + Send + 'static,
{
    let deadline = options.timeout.map(|t| (Instant::now() + t, t));
    let (headers, messages) = within(deadline, start(channel, method, requests, options)).await?;
    Ok(Reply {
        headers,
        messages: bound(messages, deadline),
    })
}

/// Calls `method` over `channel` as a fan-out answered in the envelope:
/// `options.metadata` names the machines, and the call asks for
/// `switchyard-reply: envelope`. Requests go as in [`call`] (one for a method
/// that takes one); the items come as the machines answer, each machine's
/// last item carrying its status.
pub async fn call_envelope<S>(
    channel: Channel,
    method: &MethodDescriptor,
    requests: S,
    options: &CallOptions,
) -> Result<ItemStream, CallError>
where
    S: Stream<Item = DynamicMessage> + Send + 'static,
{
    let deadline = options.timeout.map(|t| (Instant::now() + t, t));
    let mut options = options.clone();
    options
        .metadata
        .insert(REPLY, AsciiMetadataValue::from_static("envelope"));
    let items = within(
        deadline,
        start_envelope(channel, method, requests, &options),
    )
    .await?;
    Ok(bound(items, deadline))
}

async fn start_envelope<S>(
    channel: Channel,
    method: &MethodDescriptor,
    requests: S,
    options: &CallOptions,
) -> Result<ItemStream, CallError>
where
    S: Stream<Item = DynamicMessage> + Send + 'static,
{
    let limit = options.reply_limit();
    let status = |status| call_error(status, limit);
    let mut grpc = ready(channel, limit).await?;
    let path = method_path(method).map_err(status)?;
    // Every kind goes as a bidi stream (the framing is the same); a method
    // that takes one request is sent exactly one.
    let requests: Pin<Box<dyn Stream<Item = DynamicMessage> + Send>> =
        if method.is_client_streaming() {
            Box::pin(requests)
        } else {
            let first = Box::pin(requests)
                .next()
                .await
                .ok_or_else(|| CallError::NoRequest(method.full_name().to_owned()))?;
            Box::pin(futures_util::stream::iter([first]))
        };
    let response = grpc
        .streaming(
            with_options(requests, options),
            path,
            EnvelopeCodec::new(method),
        )
        .await
        .map_err(status)?;
    Ok(streamed(response.into_inner(), limit))
}

/// A client of `channel` once it is ready, accepting replies up to `limit`.
async fn ready(channel: Channel, limit: usize) -> Result<tonic::client::Grpc<Channel>, CallError> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(limit);
    grpc.ready().await.map_err(|e| {
        call_error(
            tonic::Status::unavailable(format!("connection not ready: {e}")),
            limit,
        )
    })?;
    Ok(grpc)
}

/// `/pkg.Service/Method`.
fn method_path(method: &MethodDescriptor) -> Result<http::uri::PathAndQuery, tonic::Status> {
    http::uri::PathAndQuery::from_maybe_shared(format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .map_err(|e| tonic::Status::internal(format!("invalid method path: {e}")))
}

/// Calls a unary method with one request and returns its reply.
pub async fn call_unary(
    channel: Channel,
    method: &MethodDescriptor,
    request: DynamicMessage,
    options: &CallOptions,
) -> Result<DynamicMessage, CallError> {
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(CallError::NotUnary(method.full_name().to_owned()));
    }
    let mut reply = call(
        channel,
        method,
        futures_util::stream::iter([request]),
        options,
    )
    .await?;
    match reply.messages.next().await {
        Some(result) => result,
        None => Err(CallError::Status(tonic::Status::internal(
            "the call ended without a reply",
        ))),
    }
}

async fn start<S>(
    channel: Channel,
    method: &MethodDescriptor,
    requests: S,
    options: &CallOptions,
) -> Result<(MetadataMap, ReplyStream), CallError>
where
    S: Stream<Item = DynamicMessage> + Send + 'static,
{
    let limit = options.reply_limit();
    let status = |status| call_error(status, limit);
    let mut grpc = ready(channel, limit).await?;
    let path = method_path(method).map_err(status)?;
    let codec = DynamicCodec::new(method);
    let request = |message| with_options(message, options);
    let stream_request = |requests| with_options(requests, options);
    let mut requests = Box::pin(requests);
    let single = if method.is_client_streaming() {
        None
    } else {
        Some(
            requests
                .next()
                .await
                .ok_or_else(|| CallError::NoRequest(method.full_name().to_owned()))?,
        )
    };
    let one = |message: DynamicMessage| -> ReplyStream {
        Box::pin(futures_util::stream::once(async { Ok(message) }))
    };
    match (single, method.is_server_streaming()) {
        (Some(message), false) => {
            let response = grpc
                .unary(request(message), path, codec)
                .await
                .map_err(status)?;
            let (headers, message, _) = response.into_parts();
            Ok((headers, one(message)))
        }
        (Some(message), true) => {
            let response = grpc
                .server_streaming(request(message), path, codec)
                .await
                .map_err(status)?;
            let (headers, streaming, _) = response.into_parts();
            Ok((headers, streamed(streaming, limit)))
        }
        (None, false) => {
            let response = grpc
                .client_streaming(stream_request(requests), path, codec)
                .await
                .map_err(status)?;
            let (headers, message, _) = response.into_parts();
            Ok((headers, one(message)))
        }
        (None, true) => {
            let response = grpc
                .streaming(stream_request(requests), path, codec)
                .await
                .map_err(status)?;
            let (headers, streaming, _) = response.into_parts();
            Ok((headers, streamed(streaming, limit)))
        }
    }
}

fn with_options<T>(message: T, options: &CallOptions) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = options.metadata.clone();
    if let Some(timeout) = options.timeout {
        request.set_timeout(timeout);
    }
    request
}

fn streamed<T: Send + 'static>(streaming: tonic::Streaming<T>, limit: usize) -> Messages<T> {
    Box::pin(futures_util::stream::unfold(
        Some(streaming),
        move |state| async move {
            let mut streaming = state?;
            match streaming.message().await {
                Ok(Some(message)) => Some((Ok(message), Some(streaming))),
                Ok(None) => None,
                Err(status) => Some((Err(call_error(status, limit)), None)),
            }
        },
    ))
}

/// `work`, failing with [`CallError::Timeout`] once `deadline` passes.
async fn within<T>(
    deadline: Option<(Instant, Duration)>,
    work: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match deadline {
        Some((at, timeout)) => tokio::time::timeout_at(at, work)
            .await
            .map_err(|_| CallError::Timeout(timeout))?,
        None => work.await,
    }
}

/// Ends `messages` with a timeout error once the deadline passes.
fn bound<T: Send + 'static>(
    messages: Messages<T>,
    deadline: Option<(Instant, Duration)>,
) -> Messages<T> {
    let Some((at, timeout)) = deadline else {
        return messages;
    };
    Box::pin(futures_util::stream::unfold(
        Some(messages),
        move |state| async move {
            let mut messages = state?;
            match tokio::time::timeout_at(at, messages.next()).await {
                Ok(Some(Ok(message))) => Some((Ok(message), Some(messages))),
                Ok(Some(Err(err))) => Some((Err(err), None)),
                Ok(None) => None,
                Err(_) => Some((Err(CallError::Timeout(timeout)), None)),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        let mut metadata = MetadataMap::new();
        add_header(&mut metadata, "machine=alpha").unwrap();
        add_header(&mut metadata, "machine: beta").unwrap();
        add_header(&mut metadata, "X-Token=a=b:c").unwrap();
        add_header(&mut metadata, "trace-bin=AAEC").unwrap();
        let machines: Vec<_> = metadata
            .get_all("machine")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(machines, ["alpha", "beta"]);
        assert_eq!(metadata.get("x-token").unwrap(), "a=b:c");
        assert_eq!(
            metadata
                .get_bin("trace-bin")
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            [0, 1, 2]
        );
        assert!(matches!(
            add_header(&mut metadata, "novalue"),
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            add_header(&mut metadata, "=x"),
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            add_header(&mut metadata, "bad name=x"),
            Err(HeaderError::InvalidName(_))
        ));
        assert!(matches!(
            add_header(&mut metadata, "k=caf\u{e9}"),
            Err(HeaderError::InvalidValue { .. })
        ));
        assert!(matches!(
            add_header(&mut metadata, "k-bin=!!"),
            Err(HeaderError::InvalidValue { .. })
        ));
    }
}
