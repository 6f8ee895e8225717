//! One backend's part of a fan-out call: connect, send the request, read,
//! decompress and tag the replies, as a state machine polled by the call
//! ([`super::legs::LegSet`]). It holds at most one reply message at a time,
//! and is only polled again once the call has taken the last one, so a slow
//! client holds each backend back instead of the proxy buffering for it.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Response};
use http_body::Body;
use hyper::body::Incoming;
use tonic::{Code, Status};

use crate::backend::{Backend, ReplyShape};
use crate::codec::frame::FrameDecoder;
use crate::names::GRPC_ENCODING;
use crate::status;
use crate::upstream::SendRequest;

/// What a leg reports.
#[derive(Debug)]
pub(super) enum LegEvent {
    /// The backend's response headers (gRPC metadata).
    Headers(HeaderMap),
    /// One tagged reply message.
    Message(Bytes),
    /// The backend is done: its trailers, or why it failed.
    Done(Result<HeaderMap, Status>),
}

/// Connecting and sending the request, up to the response head.
pub(super) type Start = BoxFuture<'static, Result<(SendRequest, Response<Incoming>), Status>>;

/// One backend's part of a fan-out call.
pub(super) struct Leg {
    pub(super) backend: Arc<dyn Backend>,
    shape: ReplyShape,
    max_message_size: usize,
    state: State,
    /// A second event of one poll (Trailers-Only: headers, then done).
    pending: Option<LegEvent>,
}

enum State {
    Starting(Start),
    Receiving(Box<Receiving>),
    Done,
}

struct Receiving {
    body: Incoming,
    decoder: FrameDecoder,
    encoding: Option<HeaderValue>,
    /// Keeps the connection alive while the leg runs.
    _connection: SendRequest,
}

impl Leg {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        shape: ReplyShape,
        max_message_size: usize,
        start: Start,
    ) -> Self {
        Self {
            backend,
            shape,
            max_message_size,
            state: State::Starting(start),
            pending: None,
        }
    }

    /// The next event; `Ready(None)` after `Done`.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<LegEvent>> {
        if let Some(event) = self.pending.take() {
            return Poll::Ready(Some(event));
        }
        let event = match &mut self.state {
            State::Starting(start) => match ready!(start.as_mut().poll(cx)) {
                Ok((connection, response)) => self.started(connection, response),
                Err(status) => LegEvent::Done(Err(status)),
            },
            State::Receiving(_) => match ready!(self.receive(cx)) {
                Ok(event) => event,
                Err(status) => LegEvent::Done(Err(status)),
            },
            State::Done => return Poll::Ready(None),
        };
        if matches!(event, LegEvent::Done(_)) {
            self.state = State::Done;
        }
        Poll::Ready(Some(event))
    }

    fn started(&mut self, connection: SendRequest, response: Response<Incoming>) -> LegEvent {
        let (head, body) = response.into_parts();
        let headers = head.headers;
        if let Some(status) = Status::from_header_map(&headers) {
            // Trailers-Only: the status sits in the headers (which the
            // merge of headers leaves out).
            self.state = State::Done;
            self.pending = Some(LegEvent::Done(ok_or_status(status, HeaderMap::new())));
            return LegEvent::Headers(headers);
        }
        self.state = State::Receiving(Box::new(Receiving {
            body,
            decoder: FrameDecoder::new(self.max_message_size),
            encoding: headers.get(GRPC_ENCODING).cloned(),
            _connection: connection,
        }));
        LegEvent::Headers(headers)
    }

    /// The next message or the end of the backend's reply.
    fn receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<LegEvent, Status>> {
        let State::Receiving(r) = &mut self.state else {
            unreachable!("receiving");
        };
        loop {
            let reply_error = |e| status::reply_frame(&e, &self.backend);
            if let Some(message) = r.decoder.next_message().map_err(reply_error)? {
                let payload = if message.compressed {
                    decompress(
                        &*self.backend,
                        r.encoding.as_ref(),
                        &message.payload,
                        self.max_message_size,
                    )?
                } else {
                    message.payload
                };
                let tagged = self.backend.tag_reply(self.shape, payload).map_err(|e| {
                    Status::internal(format!(
                        "reply from backend {} does not fit the fan-out shape: {e}",
                        self.backend
                    ))
                })?;
                return Poll::Ready(Ok(LegEvent::Message(tagged)));
            }
            match ready!(Pin::new(&mut r.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => r.decoder.push(data),
                    Err(frame) => {
                        r.decoder.finish().map_err(reply_error)?;
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status =
                            Status::from_header_map(&trailers).ok_or_else(|| self.no_status())?;
                        return Poll::Ready(Ok(LegEvent::Done(ok_or_status(status, trailers))));
                    }
                },
                Some(Err(err)) => {
                    return Poll::Ready(Err(status::from_upstream_error(&err, &self.backend)));
                }
                None => {
                    r.decoder.finish().map_err(reply_error)?;
                    return Poll::Ready(Err(self.no_status()));
                }
            }
        }
    }

    fn no_status(&self) -> Status {
        Status::internal(format!(
            "backend {} ended the stream without a grpc-status",
            self.backend
        ))
    }
}

fn ok_or_status(status: Status, trailers: HeaderMap) -> Result<HeaderMap, Status> {
    if status.code() == Code::Ok {
        Ok(trailers)
    } else {
        Err(status)
    }
}

/// Decompresses a gzip reply (fan-out must edit replies), bounded by the
/// message size limit.
fn decompress(
    backend: &dyn Backend,
    encoding: Option<&HeaderValue>,
    payload: &[u8],
    max_message_size: usize,
) -> Result<Bytes, Status> {
    if encoding.map(HeaderValue::as_bytes) != Some(b"gzip") {
        return Err(Status::internal(format!(
            "backend {backend} sent a message compressed with {:?}, which fan-out cannot read",
            encoding
                .map(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                .unwrap_or_default()
        )));
    }
    let mut out = Vec::new();
    let limit = max_message_size as u64;
    flate2::read::GzDecoder::new(payload)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Status::internal(format!(
                "backend {backend} sent a corrupt gzip message: {e}"
            ))
        })?;
    if out.len() as u64 > limit {
        return Err(Status::resource_exhausted(format!(
            "reply from backend {backend}: decompressed message exceeds the limit of {limit} bytes"
        )));
    }
    Ok(out.into())
}
