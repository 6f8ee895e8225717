//! [`ResponseBody`]: the one body type of every proxied response, so the
//! service has a single concrete response type without boxing; the
//! responses the engine writes itself (gRPC errors, HTTP errors); and the
//! record of a call that reports its end to the [`Observer`](crate::observe::Observer).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::backend::Backend;
use crate::budget::Hold;
use crate::director::Mode;
use crate::fan_out::StreamedBody;
use crate::names::GRPC_STATUS;
use crate::observe::{CallEnd, CallStart, LegEnd, SharedObserver};
use crate::passthrough::PassthroughBody;
use crate::peer::Peer;
use crate::status::{self, GRPC_CONTENT_TYPE};

/// Body of every response of [`TransparentProxy`](crate::TransparentProxy).
///
/// Errors never surface as body errors: they end the body with gRPC
/// trailers, so `Error` is [`Infallible`].
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    /// Reports the call to the observer when it ends; `None` without one.
    record: Option<Box<Record>>,
}

#[derive(Debug)]
enum Kind {
    /// No body at all (Trailers-Only responses).
    Empty,
    /// Data chunks then optional trailers (merged unary fan-out, plain text errors).
    Chunks {
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        /// The memory budget the chunks hold until they are sent.
        _hold: Option<Box<Hold>>,
    },
    /// One-to-one passthrough.
    Passthrough(Box<PassthroughBody>),
    /// Streaming fan-out.
    Streamed(Box<StreamedBody>),
}

impl ResponseBody {
    fn new(kind: Kind) -> Self {
        Self { kind, record: None }
    }

    pub(crate) fn chunks(chunks: VecDeque<Bytes>, trailers: impl Into<Option<HeaderMap>>) -> Self {
        Self::held_chunks(chunks, trailers, None)
    }

    /// [`ResponseBody::chunks`] holding `hold` until the body is dropped.
    pub(crate) fn held_chunks(
        chunks: VecDeque<Bytes>,
        trailers: impl Into<Option<HeaderMap>>,
        hold: Option<Hold>,
    ) -> Self {
        Self::new(Kind::Chunks {
            chunks,
            trailers: trailers.into(),
            _hold: hold.map(Box::new),
        })
    }

    pub(crate) fn passthrough(body: PassthroughBody) -> Self {
        Self::new(Kind::Passthrough(Box::new(body)))
    }

    pub(crate) fn streamed(body: Box<StreamedBody>) -> Self {
        Self::new(Kind::Streamed(body))
    }

    /// `response`, whose end `record` reports.
    pub(crate) fn recorded(response: Response<Self>, mut record: Record) -> Response<Self> {
        // A Trailers-Only response carries its status in the headers.
        record.code = grpc_code(response.headers());
        response.map(|mut body| {
            body.record = Some(Box::new(record));
            body
        })
    }
}

/// The `grpc-status` of `headers`, if any.
fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// One call as its observer will hear of it.
pub(crate) struct Record {
    observer: SharedObserver,
    method: Option<PathAndQuery>,
    mode: Option<Mode>,
    backends: Vec<Arc<dyn Backend>>,
    started: Instant,
    bytes_in: Option<Arc<AtomicU64>>,
    bytes_out: u64,
    peer: Option<Arc<Peer>>,
    code: Option<Code>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("method", &self.method)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Record {
    /// A call of `request`, started at `started`.
    pub(crate) fn new(observer: SharedObserver, request: &Parts, started: Instant) -> Self {
        Self {
            observer,
            method: request.uri.path_and_query().cloned(),
            mode: None,
            backends: Vec::new(),
            started,
            bytes_in: None,
            bytes_out: 0,
            peer: request.extensions.get::<Arc<Peer>>().cloned(),
            code: None,
        }
    }

    fn method(&self) -> &str {
        self.method.as_ref().map_or("", PathAndQuery::path)
    }

    /// The call was routed: it starts, and its request bytes are counted
    /// on the returned counter; a fan-out's legs report through the
    /// returned [`Legs`].
    pub(crate) fn routed(
        &mut self,
        mode: Mode,
        backends: &[Arc<dyn Backend>],
    ) -> (Option<Arc<AtomicU64>>, Option<Legs>) {
        self.mode = Some(mode);
        self.backends = backends.to_vec();
        self.observer.call_started(&CallStart {
            method: self.method(),
            mode,
        });
        let bytes_in = Arc::new(AtomicU64::new(0));
        self.bytes_in = Some(bytes_in.clone());
        let legs = matches!(mode, Mode::OneToMany(_)).then(|| Legs {
            observer: self.observer.clone(),
            method: self.method.clone(),
            started: self.started,
        });
        (Some(bytes_in), legs)
    }

    fn finish(&mut self, code: Code) {
        self.observer.call_ended(&CallEnd {
            method: self.method(),
            mode: self.mode,
            backends: &self.backends,
            code,
            duration: self.started.elapsed(),
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out: self.bytes_out,
            peer: self.peer.as_deref(),
        });
    }
}

/// Reports the legs of one fan-out call.
#[derive(Clone)]
pub(crate) struct Legs {
    observer: SharedObserver,
    method: Option<PathAndQuery>,
    started: Instant,
}

impl std::fmt::Debug for Legs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Legs")
    }
}

impl Legs {
    /// `backend` is done with `code`; its part is an error entry or not.
    pub(crate) fn ended(&self, backend: &dyn Backend, code: Code, error_entry: bool) {
        self.observer.leg_ended(&LegEnd {
            method: self.method.as_ref().map_or("", PathAndQuery::path),
            backend,
            code,
            duration: self.started.elapsed(),
            error_entry,
        });
    }
}

/// A Trailers-Only response (headers with `grpc-status`, no body).
pub fn error_response(status: &Status) -> Response<ResponseBody> {
    error_with_headers(status, HeaderMap::new())
}

/// A Trailers-Only response that also carries `headers` (e.g. response
/// metadata a backend sent before failing).
pub(crate) fn error_with_headers(
    status: &Status,
    mut headers: HeaderMap,
) -> Response<ResponseBody> {
    headers.extend(status::trailers(status));
    headers.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    let mut res = Response::new(ResponseBody::new(Kind::Empty));
    *res.headers_mut() = headers;
    res
}

/// An HTTP-level error for requests that are not gRPC at all.
pub(crate) fn http_error(code: StatusCode, message: &'static str) -> Response<ResponseBody> {
    let body = VecDeque::from([Bytes::from_static(message.as_bytes())]);
    let mut res = Response::new(ResponseBody::chunks(body, None));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = ready!(this.poll_kind(cx));
        if let Some(record) = this.record.as_mut() {
            let ended = match &frame {
                Some(frame) => {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        record.code = Some(grpc_code(trailers).unwrap_or(Code::Unknown));
                    }
                    frame.is_trailers()
                }
                None => true,
            };
            if ended && let Some(mut record) = this.record.take() {
                let code = record.code.unwrap_or(Code::Unknown);
                record.finish(code);
            }
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Chunks {
                chunks, trailers, ..
            } => chunks.is_empty() && trailers.is_none(),
            Kind::Passthrough(body) => body.is_end_stream(),
            Kind::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Chunks {
                chunks, trailers, ..
            } => Poll::Ready(
                chunks
                    .pop_front()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers)),
            ),
            Kind::Passthrough(body) => body.poll_frame(cx),
            Kind::Streamed(body) => body.poll_frame(cx),
        }
    }
}

impl Drop for ResponseBody {
    /// A call whose body is dropped before its end: the client went away
    /// (or, Trailers-Only, there was nothing to send).
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            let code = record.code.unwrap_or(Code::Cancelled);
            record.finish(code);
        }
    }
}
